"""The look benchmark's measures and mechanisms: steadiness, ghosting after a cut, strength."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from realtime.app import look_metrics as lm
from realtime.app.look_bench import STRIP_FRAMES, dream_clip, preset_config, strip, strip_starts
from realtime.app.look_footage import synthetic_clip
from tests.test_installation import cli

SIZE = (128, 72)


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(SIZE, frames=40, shot=20)


def test_the_synthetic_clip_moves_non_rigidly_and_cuts(clip):
    assert clip.cuts == [20] and len(clip.frames) == 40
    assert lm.find_cuts(clip.frames) == [20]

    def spread(frames) -> float:
        """How much the flow differs from place to place within a frame, on average."""
        flows = [back for _, back, _ in lm.motion(frames).pairs]
        return float(
            np.mean([np.linalg.norm(f - f.reshape(-1, 2).mean(0), axis=-1).std() for f in flows])
        )

    rigid = [np.roll(clip.frames[0], k, axis=1) for k in range(10)]  # a pan: one flow everywhere
    assert spread(clip.frames[:20]) > 3 * spread(rigid), (spread(clip.frames[:20]), spread(rigid))


def test_a_static_dream_on_a_static_scene_scores_zero_and_a_redrawn_one_scores_high(clip):
    scene = [clip.frames[0]] * 12  # a still scene
    rng = np.random.default_rng(0)
    pattern = rng.integers(-14, 15, scene[0].shape)
    static = [np.clip(f.astype(int) + pattern, 0, 255).astype(np.uint8) for f in scene]
    redrawn = [
        np.clip(f.astype(int) + rng.integers(-14, 15, f.shape), 0, 255).astype(np.uint8)
        for f in scene
    ]
    assert abs(lm.strength(scene, static) - lm.strength(scene, redrawn)) < 1  # as much dream
    steady, flicker = lm.steadiness(scene, static), lm.steadiness(scene, redrawn)
    assert abs(steady.above_floor) < 0.5 and steady.floor < 0.5
    assert flicker.above_floor > 100
    assert lm.steadiness(clip.frames[:20], clip.frames[:20]).above_floor == 0.0  # moving: floor


def test_ghost_frames_count_the_old_scene_lingering(clip):
    cut = clip.cuts[0]
    frames = clip.frames
    assert lm.ghost_frames(frames, frames, cut) == 0
    ghosty = list(frames)
    for k in range(4):  # the old scene fading out over 4 frames
        a = 0.8 - 0.15 * k
        ghosty[cut + k] = (a * frames[cut - 1] + (1 - a) * frames[cut + k]).astype(np.uint8)
    assert lm.ghost_frames(frames, ghosty, cut) == 4


def test_a_cut_clears_the_ghost_within_two_frames(lite0, clip):
    """Through the live per-frame code: carried detail with cut detection leaves at most 2 frames
    of the old scene; the whole-frame cross-fade without it leaves many."""
    device = torch.device("cpu")
    short = synthetic_clip(SIZE, frames=30, shot=20)
    assert short.cuts == [20]
    good = preset_config("cpu", ("feedback.amount=0.9",), "128x72", lite0)
    outputs, _ = dream_clip(lite0, good, short, device)
    assert lm.ghost_frames(short.frames, outputs, 20) <= 2
    bad = preset_config(
        "cpu",
        (
            "feedback.amount=0.9",
            'feedback.carry="frame"',
            "feedback.cut_threshold=0",
            "feedback.flow_check=false",
        ),
        "128x72",
        lite0,
    )
    outputs, _ = dream_clip(lite0, bad, short, device)
    assert lm.ghost_frames(short.frames, outputs, 20) > 2


def test_the_look_bench_prints_its_table(tmp_path):
    run = cli(
        "bench", "--look", "--footage", "synthetic", "--presets", "cpu", "--frames", "24",
        "--size", "96x64", "--device", "cpu", "--json", str(tmp_path / "look.json"),
        "--strips", str(tmp_path / "strips"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("| cpu |")]
    assert [line.split(" | ")[3] for line in lines] == [
        "no feedback",
        "plain blend",
        "flow feedback",
    ]
    assert "x warp" in lines[2] and ("met" in lines[2] or "MISSED" in lines[2])
    for line in lines:  # each row was also logged when measured: a run cut short keeps it
        condition, strength = line.split(" | ")[3:5]
        assert f"look: cpu, {condition}: strength {strength}, warp above floor" in run.stderr
    picture = cv2.imread(str(tmp_path / "strips" / "cpu-synthetic.jpg"))
    assert picture.shape[1] == STRIP_FRAMES * 96  # a strip of consecutive frames, camera over dream
    assert (tmp_path / "look.json").is_file()
    missing = cli("bench", "--look", "--footage", str(tmp_path / "none.mp4"), "--presets", "cpu")
    assert missing.returncode == 2 and "make footage" in missing.stderr


def test_strips_show_the_middle_of_every_scene_and_the_first_cut(clip, tmp_path):
    assert strip_starts(clip) == [10 - STRIP_FRAMES // 2, 30 - STRIP_FRAMES // 2, 18]
    outputs = [255 - f for f in clip.frames]  # any dream: here the negative
    path = strip(clip, outputs, tmp_path / "s.jpg")
    picture = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(int)
    h, w = clip.frames[0].shape[:2]
    assert picture.shape == (3 * 2 * h + 2 * 8, STRIP_FRAMES * w, 3)  # 3 rows, 8 px gaps
    cut_row = picture[2 * (2 * h + 8) :]
    # Across the cut, camera above dream, frame by frame: 2 frames of the old scene, then the new
    for k, i in enumerate(range(18, 18 + STRIP_FRAMES)):
        camera, dream = cut_row[:h, k * w : (k + 1) * w], cut_row[h:, k * w : (k + 1) * w]
        assert np.abs(camera - clip.frames[i]).mean() < 8  # JPEG
        assert np.abs(dream - outputs[i]).mean() < 8
