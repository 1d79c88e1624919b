"""CUDA only: the graph strategy dreams like the reference, keeps its graphs, never syncs."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from realtime.control.params import LiveParams
from realtime.engine import objectives
from realtime.engine.graphs import GraphDreamer, capture_plan
from realtime.engine.models import MODEL_NAMES, load_model, random_model
from realtime.engine.objectives import Term
from realtime.engine.step import activation
from realtime.engine.strategy import dream_copy, make_dreamer, reference_dreamer
from realtime.knobs import DreamConfig
from realtime.live.loop import DreamLoop
from realtime.live.slot import Frame, LatestSlot
from realtime.live.sources import DemoSource
from realtime.live.transfer import Downloader, Uploader

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def lite0_cuda():
    model, _ = load_model("efficientnet_lite0", device=CUDA)
    return model


@pytest.fixture
def image(chelsea_224) -> torch.Tensor:
    return torch.nn.functional.interpolate(chelsea_224, size=(160, 224), mode="bilinear").cuda()


def test_make_dreamer_picks_the_fast_path_on_cuda(lite0_cuda):
    assert isinstance(make_dreamer(lite0_cuda, CUDA), GraphDreamer)


def test_the_fast_dream_is_the_reference_dream_within_fp16_tolerance(lite0_cuda, image):
    """Jitter 0 makes both deterministic. One step of the fp16 graph path paints what one step
    of the eager fp32 full-network reference paints; over several steps the two drift apart
    (gradient ascent amplifies fp16 rounding: on an H100, 6 steps ended as far apart as either
    moved, as CPU autocast also shows), so there the test is that both raise the layer alike."""
    layer = "block8"
    objective = objectives.layer(layer)
    one = DreamConfig(steps=1, octaves=1, jitter=0, step_size=0.02)
    reference = reference_dreamer(lite0_cuda, CUDA).dream(image, objective, one)
    fast = make_dreamer(lite0_cuda, CUDA)
    got = fast.dream(image, objective, one)
    assert got.shape == image.shape and got.dtype == torch.float32
    change = (reference - image).abs().mean().item()  # ~0.02
    apart = (got - reference).abs().mean().item()  # fp16 vs fp32: ~0.13 of it on the CPU
    assert change > 0.01 and apart < 0.3 * change, (apart, change)

    cfg = DreamConfig(steps=3, octaves=2, jitter=0, step_size=0.02)
    reference = reference_dreamer(lite0_cuda, CUDA).dream(image, objective, cfg)
    got = fast.dream(image, objective, cfg)
    assert fast.captures > 0 and fast.replays >= 1 + cfg.steps  # the full size: graphs
    before = activation(lite0_cuda, layer, image)
    gain_fast = activation(lite0_cuda, layer, got) / before
    gain_ref = activation(lite0_cuda, layer, reference) / before
    assert gain_fast > 1.3 and abs(gain_fast - gain_ref) < 0.1 * gain_ref


def test_graphs_survive_layer_and_target_switches(lite0_cuda, image):
    cfg = DreamConfig(steps=2, octaves=2, jitter=8)
    fast = make_dreamer(lite0_cuda, CUDA)
    fast.dream(image, objectives.layer("block10"), cfg)  # start-up: begins capturing ahead
    fast.prepare(160, 224, cfg)  # and the rest of the plan, at once
    planned = len(capture_plan(lite0_cuda.layers, 160, 224, cfg))
    assert fast.captures == planned
    switches = [
        objectives.layer("block3"),
        objectives.build(lite0_cuda, target=1),
        objectives.build(lite0_cuda, target=945),
        objectives.layer("head"),
        objectives.layer("block10"),
        objectives.build(lite0_cuda, target=1),
    ]
    for objective in switches:
        fast.dream(image, objective, replace(cfg, step_size=0.03, jitter=4))  # faders too
    assert fast.captures == planned  # no switch captured anything
    assert fast.replays == (1 + len(switches)) * cfg.steps * 2


def test_a_class_graph_dreams_towards_another_class(lite0_cuda, image):
    """The graph captured for class 0 serves class 945 through its class-weight tensor: one step
    paints what the reference's step towards 945 paints, and four raise the 945 logit."""
    one = DreamConfig(steps=1, octaves=1, jitter=0, step_size=0.02)
    fast = make_dreamer(lite0_cuda, CUDA)
    target = objectives.build(lite0_cuda, target=945)  # bell pepper
    fast.dream(image, objectives.build(lite0_cuda, target=0), one)  # aims the graph at class 0
    fast.prepare(160, 224, one)
    captures = fast.captures
    got = fast.dream(image, target, one)
    assert fast.captures == captures
    reference = reference_dreamer(lite0_cuda, CUDA).dream(image, target, one)
    change = (reference - image).abs().mean().item()
    apart = (got - reference).abs().mean().item()
    assert apart < 0.3 * change, (apart, change)

    def logit(x: torch.Tensor) -> float:
        with torch.no_grad():
            return lite0_cuda(x, {"logits"})["logits"][0, 945].float().item()

    four = fast.dream(image, target, replace(one, steps=4))
    assert fast.captures == captures  # steps are replays, not a new graph
    assert logit(four) > logit(image) + 1.0


def test_no_host_sync_inside_the_dream(lite0_cuda, image):
    fast = make_dreamer(lite0_cuda, CUDA)
    cfg = DreamConfig(steps=2, octaves=2, jitter=16)
    objective = objectives.layer("block10")
    fast.dream(image, objective, cfg)
    fast.prepare(160, 224, cfg)  # capture everything (syncs are allowed there)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for target in (None, 3, 400):
            obj = objective if target is None else objectives.build(lite0_cuda, target=target)
            out = fast.dream(image, obj, replace(cfg, step_size=0.01 + 0.0001 * (target or 0)))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()


def test_jitter_differs_between_replays_and_follows_the_cuda_seed(lite0_cuda, image):
    fast = make_dreamer(lite0_cuda, CUDA)
    cfg = DreamConfig(steps=1, octaves=1, jitter=16)
    objective = objectives.layer("block6")
    fast.dream(image, objective, cfg)
    fast.prepare(160, 224, cfg)  # no capture (and its warm-up's RNG draws) from here on
    torch.cuda.manual_seed(5)
    a = fast.dream(image, objective, cfg)
    b = fast.dream(image, objective, cfg)
    torch.cuda.manual_seed(5)
    again = fast.dream(image, objective, cfg)
    assert (a - b).abs().max() > 0.01  # a fresh roll each replay
    assert (a - again).abs().max() < 1e-3  # drawn from the seeded CUDA generator


def test_googlenet_captures_and_dreams(image):
    """GoogLeNet (random weights: the graph structure is what is tested) captures every layer."""
    model = random_model("googlenet", CUDA)
    fast = make_dreamer(model, CUDA)
    cfg = DreamConfig(steps=2, octaves=2, jitter=16)
    out = fast.dream(image, objectives.layer("inception4c"), cfg)
    fast.prepare(160, 224, cfg)
    assert fast.captures == len(capture_plan(model.layers, 160, 224, cfg))
    assert torch.isfinite(out).all() and (out - image).abs().mean() > 0.001


def test_transfers_use_pinned_buffers_and_round_trip_exactly():
    up, down = Uploader(CUDA), Downloader(CUDA)
    rng = np.random.default_rng(0)
    ptrs = set()
    for _ in range(3):
        frame = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
        t = up(frame)
        ptrs.add(t.data_ptr())
        assert t.is_cuda and t.shape == (1, 3, 72, 128)
        np.testing.assert_array_equal(down(t), frame)
    assert len(ptrs) == 1 and up.allocations == 1 and down.allocations == 1
    assert up._host.is_pinned() and all(slot.host.is_pinned() for slot in down._slots)


def test_the_loop_runs_on_the_fast_path(lite0_cuda):
    params = LiveParams(lite0_cuda.layers, MODEL_NAMES, lite0_cuda.name, {"steps": 2})
    loop = DreamLoop(LatestSlot(), params, lite0_cuda, CUDA)
    demo = DemoSource((224, 128))
    demo.open()
    outs = [
        loop.process(Frame(demo.frame_at(i), time.monotonic(), i), params.snapshot())
        for i in range(4)
    ]
    assert all(o.dream.shape == (128, 224, 3) and o.dream.dtype == np.uint8 for o in outs)
    assert loop.errors == 0


def test_a_failed_capture_warns_once_and_dreams_eagerly(lite0_cuda, image, caplog, monkeypatch):
    """Last in the file: a failed capture is the one test that could leave CUDA unwell."""
    real = Term.value

    def syncing(self, acts, class_weights):  # .item() cannot be captured
        value = real(self, acts, class_weights)
        return value * (1.0 + 0.0 * value.item())

    monkeypatch.setattr(Term, "value", syncing)
    objective = objectives.layer("block5")
    fast = GraphDreamer(dream_copy(lite0_cuda, half=True), CUDA, capture_ahead=False)
    cfg = DreamConfig(steps=1, octaves=1, jitter=4)
    with caplog.at_level(logging.WARNING, logger="realtime.engine.graphs"):
        outs = [fast.dream(image, objective, cfg) for _ in range(4)]  # captures on the 2nd
    warnings = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warnings) == 1 and not fast.graphs_enabled
    assert all(torch.isfinite(o).all() and (o - image).abs().mean() > 0.001 for o in outs)
    monkeypatch.setattr(Term, "value", real)
    ok = fast.dream(image, objectives.layer("block5"), cfg)  # eager while resting, still dreams
    assert (ok - image).abs().mean() > 0.001
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # the stream came back
