"""render --live: the live loop's per-frame code over a file, frame by frame, deterministic."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from realtime.app.render import RenderError, render
from realtime.control.config import load_config
from realtime.control.params import LiveParams
from realtime.engine.models import MODEL_NAMES
from realtime.live.capture import fit_frame
from realtime.live.loop import DreamLoop
from realtime.live.slot import Frame, LatestSlot
from realtime.live.sources import DemoSource
from tests.test_installation import cli

SIZE = (96, 64)  # (w, h) the config asks for
FRAMES = 6


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 6-frame 4:3 video at 120x90, so fitting to 96x64 both crops and scales."""
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (120, 90))
    demo = DemoSource((120, 90))
    demo.open()
    for i in range(FRAMES):
        writer.write(cv2.cvtColor(demo.frame_at(i * 3), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def snapshot(lite0, **overrides):
    cfg = load_config("cpu", [f"{k}={v}" for k, v in overrides.items()])
    params = LiveParams.from_config(cfg, lite0.layers, MODEL_NAMES, lite0.name)
    params.set("layer", lite0.default_layer)
    return params, params.snapshot()


def pngs(folder):
    return [
        cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob("*.png"))
    ]


def test_live_render_writes_one_lossless_png_per_frame_deterministically(lite0, clip, tmp_path):
    _, snap = snapshot(lite0)
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        assert render(clip, folder, lite0, snap, torch.device("cpu"), size=SIZE) == FRAMES
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == [f"{i:06d}.png" for i in range(FRAMES)]
    first, second = pngs(a), pngs(b)
    assert all(f.shape == (SIZE[1], SIZE[0], 3) for f in first)
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))  # same seed


def test_live_render_is_what_the_live_loop_makes(lite0, clip, tmp_path):
    """The same frames through the dream loop (with the render's seed) give the same pictures:
    render --live runs the loop's own per-frame code."""
    params, snap = snapshot(lite0)
    render(clip, tmp_path, lite0, snap, torch.device("cpu"), size=SIZE)
    rendered = pngs(tmp_path)
    loop = DreamLoop(LatestSlot(), params, lite0, torch.device("cpu"))
    torch.manual_seed(0)
    loop.pipeline.generator = torch.Generator().manual_seed(0)
    cap = cv2.VideoCapture(str(clip))
    live = []
    for i in range(FRAMES):
        ok, bgr = cap.read()
        assert ok
        image = fit_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), SIZE)
        live.append(loop.process(Frame(image, time.monotonic(), i), snap).dream)
    cap.release()
    for i, (x, y) in enumerate(zip(rendered, live, strict=True)):
        assert np.array_equal(x, y), i


def test_feedback_settings_keep_their_names_and_change_the_result(lite0, clip, tmp_path):
    """feedback.amount 0 (no feedback) and flow false (plain blend) are the look benchmark's
    conditions; each gives different frames from the preset's flow feedback."""
    results = {}
    for name, overrides in {
        "flow": {},
        "none": {"feedback.amount": 0.0},
        "blend": {"feedback.flow": "false"},
    }.items():
        _, snap = snapshot(lite0, **overrides)
        folder = tmp_path / name
        render(clip, folder, lite0, snap, torch.device("cpu"), size=SIZE)
        results[name] = pngs(folder)
    assert not np.array_equal(results["flow"][-1], results["none"][-1])
    assert not np.array_equal(results["flow"][-1], results["blend"][-1])


def test_a_bad_output_is_refused_before_any_work(lite0, clip, tmp_path):
    _, snap = snapshot(lite0)
    with pytest.raises(RenderError, match="a video input needs a video output"):
        render(clip, tmp_path / "out.gif", lite0, snap, torch.device("cpu"), size=SIZE)


def test_the_command_renders_the_live_look_into_a_folder(clip, tmp_path):
    out = tmp_path / "frames"
    run = cli(
        "render", str(clip), str(out), "--live", "--config", "cpu", "--device", "cpu",
        "--set", "capture.size=96x64", "--set", "dream.steps=1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(list(out.glob("*.png"))) == FRAMES
    assert f"wrote {FRAMES} frames to" in run.stderr
    bad = cli("render", str(clip), str(out), "--live", "--set", "dream.steps=99")
    assert bad.returncode == 2 and "dream.steps = 99 is out of range; valid: 0..20" in bad.stderr
