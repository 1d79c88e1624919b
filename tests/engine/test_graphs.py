"""The CUDA-graph strategy, checked on a machine without a GPU.

Three kinds of check stand in for the GPU: the graph bookkeeping runs on the CPU with capture
faked (a replay re-runs the captured step); injected failures show a capture that fails puts
back the stream and the image and is retried after a back-off; and the captured step itself is
traced with FakeTensors on a fake CUDA device under CUDA's autocast rules, inside a dispatch
mode that fails on anything that would synchronise with the host.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

from realtime.engine import graphs, objectives
from realtime.engine.conditioning import color_matrix
from realtime.engine.graphs import (
    WARMUP_ITERS,
    GraphDreamer,
    GraphError,
    capture_plan,
    graph_key,
    root_cause,
)
from realtime.engine.step import CUDA, Dreamer, ascent_step, octave_sizes
from realtime.engine.strategy import dream_copy
from realtime.knobs import DreamConfig

SMALL = (1, 3, 40, 56)  # tiny, so capturing every layer ahead stays cheap on the CPU


class FakeGraph:
    """Stands in for a CUDA graph: a replay re-runs the captured step, which is what a real
    replay computes as long as the step reads and writes only the static tensors."""

    def __init__(self, body):
        self.body = body
        self.alive = True

    def replay(self):
        if not self.alive:
            raise RuntimeError("replayed a reset graph")
        self.body()

    def reset(self):
        self.alive = False


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class CpuGraphDreamer(GraphDreamer):
    """GraphDreamer on the CPU with capture faked (this machine has no GPU)."""

    def __init__(self, model, fail=None, capture_ahead=True, max_graphs=64, budget_s=0.0):
        Dreamer.__init__(self, model, "cpu")
        self.clock = Clock()
        self._setup_graphs(capture_ahead, max_graphs, budget_s, self.clock)
        self.fail = fail  # an exception to raise at capture, after the warm-up
        self.graphs: list[FakeGraph] = []
        self.released = 0  # times the generator was taken out of capture mode

    def _release_generator(self):
        self.released += 1

    def _record(self, body):
        for _ in range(WARMUP_ITERS):  # the warm-up steps the static image, as on CUDA
            body()
        if self.fail is not None:
            raise self.fail
        self.graphs.append(FakeGraph(body))
        return self.graphs[-1]


# ---- keys and plans ---------------------------------------------------------------------------


def test_the_graph_dreamer_refuses_a_device_that_is_not_cuda(lite0):
    with pytest.raises(GraphError, match="needs a CUDA device, got 'cpu'.*make_dreamer"):
        GraphDreamer(lite0, "cpu")


def test_objective_keys_are_exact_and_graph_keys_are_structure():
    a = objectives.layer("block3") + 0.1234561 * objectives.class_logit(5)
    b = objectives.layer("block3") + 0.1234564 * objectives.class_logit(5)
    assert a.key != b.key  # weights agreeing to six digits are still different objectives
    cfg = DreamConfig()
    assert graph_key((90, 160), a, cfg) == graph_key((90, 160), b, cfg)  # one graph serves both
    c = objectives.layer("block3") + 0.1234561 * objectives.class_logit(907)
    assert graph_key((90, 160), a, cfg) == graph_key((90, 160), c, cfg)  # and every class
    fade = objectives.classes({5: 0.3, 907: 0.7})  # a target cross-fade: the same graph too
    assert graph_key((90, 160), fade, cfg) == graph_key((90, 160), objectives.class_logit(1), cfg)
    for other in (objectives.layer("block4"), objectives.channel("block3", 1)):
        assert graph_key((90, 160), other, cfg) != graph_key(
            (90, 160), objectives.layer("block3"), cfg
        )
    assert objectives.channel("block3", 1).key != objectives.channel("block3", 2).key


def test_graph_keys_ignore_step_size_and_jitter_but_not_shape_or_conditioning():
    obj = objectives.layer("block5")
    cfg = DreamConfig()
    key = graph_key((90, 160), obj, cfg)
    assert key == graph_key((90, 160), obj, dataclasses.replace(cfg, step_size=0.1, jitter=40))
    assert key == graph_key((90, 160), obj, dataclasses.replace(cfg, steps=7))
    assert key != graph_key((90, 161), obj, cfg)
    assert key != graph_key((90, 160), obj, dataclasses.replace(cfg, grad_norm="smooth"))
    assert key != graph_key((90, 160), obj, dataclasses.replace(cfg, views=2))
    assert key != graph_key((90, 160), obj, dataclasses.replace(cfg, color=True))


def test_the_capture_plan_covers_every_layer_and_a_class_at_every_octave(lite0):
    cfg = DreamConfig(octaves=3, octave_scale=1.4)
    plan = capture_plan(lite0.layers, 180, 320, cfg)
    sizes = octave_sizes(180, 320, cfg)
    assert len(plan) == len(sizes) * (len(lite0.layers) + 1)
    assert len({key for key, _, _ in plan}) == len(plan)
    assert {(k.height, k.width) for k, _, _ in plan} == set(sizes)
    areas = [k.height * k.width for k, _, _ in plan]
    assert areas == sorted(areas, reverse=True)  # largest first: later captures reuse the pool
    assert plan[0][0].terms[0].kind == "classes"  # the deepest objective leads
    live = graph_key((180, 320), objectives.build(lite0, layer="block10"), cfg)
    assert live in {key for key, _, _ in plan}  # what the loop builds is what was captured
    live_class = graph_key(sizes[0], objectives.build(lite0, target=409), cfg)
    assert live_class in {key for key, _, _ in plan}


def test_class_targets_are_planned_without_the_octaves_their_recipe_skips(lite0):
    """The cpu preset's four octaves at 320x180 go down to 96x56; a class target skips that one
    (target.min_size), so no graph is captured for it there, while the layers keep it."""
    from realtime.knobs import TargetConfig

    cfg = DreamConfig(octaves=4, octave_scale=1.5, octave_cycle=True)
    plan = capture_plan(lite0.layers, 180, 320, cfg, TargetConfig(min_size=64))
    by_kind = {}
    for key, obj, _ in plan:
        kind = "class" if obj.structure == objectives.class_logit(0).structure else "layer"
        by_kind.setdefault(kind, set()).add((key.height, key.width))
    assert by_kind["layer"] == {(56, 96), (80, 144), (120, 216), (180, 320)}
    assert by_kind["class"] == {(80, 144), (120, 216), (180, 320)}


def test_class_targets_are_planned_with_their_recipe(lite0):
    """What a snapshot with a target dreams (the [target] recipe) is what was captured ahead."""
    from realtime.control.params import LiveParams
    from realtime.knobs import TargetConfig

    recipe = TargetConfig(views=3)
    params = LiveParams(
        lite0.layers, ["efficientnet_lite0"], "efficientnet_lite0", base={"target": recipe}
    )
    params.set("target", "volcano", glide=False)
    snap = params.snapshot()
    assert snap.dream.views == 3 and snap.dream.fourier_decay == recipe.fourier_decay
    plan = capture_plan(lite0.layers, 180, 320, snap.dream, recipe)
    wanted = graph_key((180, 320), objectives.build(lite0, target=snap.target), snap.dream)
    assert wanted in {key for key, _, _ in plan}
    plain = capture_plan(lite0.layers, 180, 320, DreamConfig())  # the layers' own settings
    assert wanted not in {key for key, _, _ in plain}  # without the recipe it would capture late


# ---- bookkeeping, with capture faked ----------------------------------------------------------


def test_graph_dream_is_the_eager_dream(lite0):
    torch.manual_seed(6)
    img = torch.rand(1, 3, 64, 96)
    cfg = DreamConfig(steps=2, octaves=2, jitter=0, step_size=0.04)
    fast = CpuGraphDreamer(lite0, capture_ahead=False)
    objective = objectives.layer("block7")
    fast.dream(img, objective, cfg)  # eager: first sight of this shape
    got = fast.dream(img, objective, cfg)  # captured on its second frame, then replayed
    assert fast.captures == 2 and fast.replays == 4
    want = Dreamer(lite0).dream(img, objective, cfg)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


def test_a_replay_reads_the_objectives_own_weights(lite0):
    """Before exact keys, two objectives whose weights agreed to six digits shared a graph and
    the second replayed the first's weight. Here they share the graph and each gets its own."""
    torch.manual_seed(9)
    img = torch.rand(*SMALL)
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, step_size=0.05, min_size=16)
    fast = CpuGraphDreamer(lite0, capture_ahead=False)
    a = objectives.layer("block3") + 0.5 * objectives.class_logit(5)
    b = objectives.layer("block3") + 50.0 * objectives.class_logit(900)
    fast.dream(img, a, cfg)
    fast.dream(img, a, cfg)  # captured with a's numbers
    got = fast.dream(img, b, cfg)
    assert fast.captures == 1
    torch.testing.assert_close(got, Dreamer(lite0).dream(img, b, cfg), rtol=0, atol=2e-5)


def test_start_up_captures_every_layer_and_switches_capture_nothing(lite0):
    torch.manual_seed(7)
    img = torch.rand(*SMALL)
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, step_size=0.05, min_size=16)
    fast = CpuGraphDreamer(lite0)
    fast.dream(img, objectives.layer("block10"), cfg)
    assert fast.captures == 2  # what the frame needed, then one more within the budget (0 s)
    planned = len(capture_plan(lite0.layers, *SMALL[-2:], cfg))
    assert fast.prepare(*SMALL[-2:], cfg) == planned - 2  # the rest, at once
    assert fast.captures == planned == len(lite0.layers) + 1
    for objective in [
        objectives.layer("stem"),
        objectives.build(lite0, target=1),
        objectives.classes({1: 0.4, 945: 0.6}),
        objectives.layer("head"),
    ]:
        fast.dream(img, objective, dataclasses.replace(cfg, step_size=0.02, steps=2))
    target = objectives.build(lite0, target=945)
    got = fast.dream(img, target, cfg)
    assert fast.captures == planned  # layer, target, cross-fade, step size and steps: no capture
    torch.testing.assert_close(got, Dreamer(lite0).dream(img, target, cfg), rtol=0, atol=2e-5)


def test_a_graph_dream_returns_its_own_tensor(lite0):
    cfg = DreamConfig(steps=1, octaves=1, jitter=4, min_size=16)
    fast = CpuGraphDreamer(lite0, capture_ahead=False)
    objective = objectives.layer("block4")
    first = fast.dream(torch.rand(*SMALL), objective, cfg)
    first = fast.dream(torch.rand(*SMALL), objective, cfg)  # a replay
    kept = first.clone()
    fast.dream(torch.rand(*SMALL), objective, cfg)
    assert torch.equal(first, kept)  # the next frame did not write into it


def test_least_recently_used_graphs_are_dropped_past_the_limit(lite0):
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0, capture_ahead=False, max_graphs=2)
    img = torch.rand(*SMALL)
    for name in ("block2", "block3", "block2", "block4"):
        for _ in range(2):
            fast.dream(img, objectives.layer(name), cfg)
    assert fast.captures == 3
    assert [g.alive for g in fast.graphs] == [True, False, True]  # block3 was least recent
    fast.dream(img, objectives.layer("block3"), cfg)  # dropped: eager again, not a dead replay


def test_the_plan_fills_in_a_graph_a_frame_and_a_planned_switch_never_runs_eagerly(lite0):
    img = torch.rand(*SMALL)
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0, budget_s=0.0)
    planned = len(capture_plan(lite0.layers, *SMALL[-2:], cfg))
    counts = []
    for _ in range(planned + 2):
        fast.dream(img, objectives.layer("block10"), cfg)
        counts.append(fast.captures)
    assert counts[: planned - 1] == list(range(2, planned + 1))  # one more each frame
    assert counts[-1] == planned
    assert not fast.capturing_ahead  # the plan is done: the loop's watchdog is strict again
    fast = CpuGraphDreamer(lite0, budget_s=0.0)
    assert not fast.capturing_ahead  # nothing planned before the first frame
    fast.dream(img, objectives.layer("block10"), cfg)
    assert fast.capturing_ahead
    before = fast.replays
    fast.dream(img, objectives.layer("stem"), cfg)  # planned, not captured yet: captured now
    assert fast.replays == before + 1


def test_a_new_frame_size_drops_the_old_graphs_and_plans_again(lite0):
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0)
    fast.prepare(*SMALL[-2:], cfg)
    old = list(fast.graphs)
    fast.dream(torch.rand(1, 3, 48, 64), objectives.layer("block10"), cfg)
    assert not any(g.alive for g in old)
    assert fast.prepare(48, 64, cfg) + 2 == len(capture_plan(lite0.layers, 48, 64, cfg))


def test_a_long_capture_keeps_the_heartbeat_going(lite0):
    """The first frame captures what it needs; the watchdog must see progress meanwhile."""
    beats = []
    fast = CpuGraphDreamer(lite0)
    fast.on_progress = lambda: beats.append(1)
    cfg = DreamConfig(steps=1, octaves=2, jitter=0, min_size=16)
    fast.dream(torch.rand(1, 3, 64, 96), objectives.layer("block6"), cfg)
    assert fast.captures >= 2 and len(beats) >= fast.captures * (WARMUP_ITERS + 1)


# ---- failures ---------------------------------------------------------------------------------


def _capture_error() -> RuntimeError:
    """A capture error as CUDA gives it: the message a later call raised, the real cause chained."""
    try:
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        except RuntimeError as cause:
            raise RuntimeError("CUDA error: operation failed due to a previous error") from cause
    except RuntimeError as err:
        return err


def test_a_failed_capture_logs_its_cause_restores_the_image_and_is_retried_later(lite0, caplog):
    torch.manual_seed(8)
    img = torch.rand(*SMALL)
    cfg = DreamConfig(steps=2, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0, fail=_capture_error(), capture_ahead=False)
    objective = objectives.layer("block6")
    want = Dreamer(lite0).dream(img, objective, cfg)
    with caplog.at_level("WARNING", logger="realtime.engine.graphs"):
        outs = [fast.dream(img, objective, cfg) for _ in range(4)]
    warned = [r.getMessage() for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warned) == 1, warned  # one failure, then resting: no capture attempts, no spam
    assert "operation failed due to a previous error; from RuntimeError: CUDA error: " in warned[0]
    assert "operation not permitted when stream is capturing" in warned[0]  # the real cause
    assert "trying again" in warned[0]
    assert not fast.graphs_enabled and fast.captures == 0 and fast.failures == 1
    assert fast.released == 1  # the generator the capture left marked is put back
    for out in outs:  # the warm-up stepped the static image; the dream never saw it
        torch.testing.assert_close(out, want, rtol=0, atol=2e-5)
    fast.fail = None
    fast.clock.t += graphs.RETRY_FIRST_S + 0.1  # after the back-off, graphs come back
    fast.dream(img, objective, cfg)
    fast.dream(img, objective, cfg)
    assert fast.graphs_enabled and fast.captures == 1


def test_failures_back_off_longer_each_time(lite0):
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0, fail=_capture_error(), capture_ahead=False)
    img, objective = torch.rand(*SMALL), objectives.layer("block2")
    waits = []
    for _ in range(3):
        fast.dream(img, objective, cfg)
        fast.dream(img, objective, cfg)  # the second sight of the shape captures, and fails
        waits.append(fast._retry_at - fast.clock.t)
        fast.clock.t = fast._retry_at
    assert waits == [2.0, 4.0, 8.0] and fast.failures == 3


def test_no_capture_starts_while_another_is_under_way(lite0):
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0, capture_ahead=False)
    img, objective = torch.rand(*SMALL), objectives.layer("block2")
    held, release = threading.Event(), threading.Event()

    def other_capture() -> None:  # another dreamer, mid-capture on another thread
        with graphs._CAPTURE_LOCK:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_capture)
    thread.start()
    held.wait(10)
    try:
        fast.dream(img, objective, cfg)
        out = fast.dream(img, objective, cfg)  # would capture: dreams eagerly instead of waiting
        assert fast.captures == 0 and out.shape == img.shape
    finally:
        release.set()
        thread.join()
    fast.dream(img, objective, cfg)
    assert fast.captures == 1


class FakeCudaApi:
    """torch.cuda's stream and graph API as _record uses it, failing inside the capture."""

    DEFAULT = mock.Mock(name="default-stream")
    CAPTURE = mock.Mock(name="capture-stream")

    def __init__(self) -> None:
        self.current = self.DEFAULT
        self.set_calls: list = []

    def current_stream(self, device=None):
        return self.current

    def set_stream(self, stream):
        self.set_calls.append(stream)
        self.current = stream

    def Stream(self, device=None):  # noqa: N802 - torch.cuda.Stream
        return mock.Mock(name="side-stream")

    @contextmanager
    def stream(self, s):
        before, self.current = self.current, s
        try:
            yield
        finally:
            self.current = before

    def CUDAGraph(self):  # noqa: N802 - torch.cuda.CUDAGraph
        return mock.Mock(name="graph")

    def graph_pool_handle(self):
        return "pool"

    @contextmanager
    def graph(self, graph, pool=None, capture_error_mode=None):
        self.current = self.CAPTURE  # what torch.cuda.graph does on entry
        yield
        raise AssertionError("not reached: the body fails")


def test_a_capture_that_fails_inside_the_graph_puts_the_stream_back(lite0, monkeypatch):
    api = FakeCudaApi()
    for name in ("current_stream", "set_stream", "Stream", "stream", "CUDAGraph", "graph",
                 "graph_pool_handle"):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, getattr(api, name))
    dreamer = CpuGraphDreamer(lite0)
    calls = []

    def body() -> None:
        calls.append(api.current)
        if api.current is api.CAPTURE:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    with pytest.raises(RuntimeError, match="not permitted"):
        GraphDreamer._record(dreamer, body)  # the real _record, with torch.cuda faked
    assert calls[-1] is api.CAPTURE and len(calls) == WARMUP_ITERS + 1
    assert api.current is api.DEFAULT and api.set_calls == [api.DEFAULT]


def test_root_cause_names_the_whole_chain():
    assert root_cause(_capture_error()) == (
        "RuntimeError: CUDA error: operation failed due to a previous error; from "
        "RuntimeError: CUDA error: operation not permitted when stream is capturing"
    )


# ---- the captured step under CUDA's rules, with no GPU ----------------------------------------

# Ops that make the host wait for the device (or copy between them): none may run in a step.
SYNC_OPS = {
    "aten::_local_scalar_dense",  # .item(), float(t), bool(t), if t: ...
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::is_nonzero",
    "aten::equal",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
}


class HostSyncError(AssertionError):
    pass


class RejectHostSync(TorchDispatchMode):
    """Fails on any op that synchronises the host with the device or copies between them."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.ops.append(name)
        if name in SYNC_OPS:
            raise HostSyncError(f"{name} synchronises with the host")
        if name in ("aten::_to_copy", "aten::copy_"):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            devices = {t.device.type for t in tensors} | {
                torch.device(kwargs["device"]).type for _ in [0] if kwargs.get("device") is not None
            }
            if len(devices) > 1:
                raise HostSyncError(f"{name} copies between {sorted(devices)}")
        return func(*args, **kwargs)


@contextmanager
def fake_cuda(model):
    """A FakeTensorMode in which `model` runs on a fake CUDA device under CUDA's autocast rules:
    yields (mode, proxy model). torch.autograd.grad is replaced by a checker (a real backward on
    a fake CUDA device needs a CUDA context): it checks each grad output matches its output's
    dtype and device, and returns zeros shaped and typed like the inputs, as the engine would."""
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    grads_checked = []

    def checked_grad(outputs, inputs, grad_outputs=None, allow_unused=False, **kw):
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        if grad_outputs is not None:
            for out, g in zip(outputs, grad_outputs, strict=True):
                assert (g.dtype, g.device) == (out.dtype, out.device), (g.dtype, out.dtype)
        grads_checked.append([(i.dtype, i.device.type) for i in inputs])
        return tuple(torch.zeros_like(i) for i in inputs)

    with mode:
        state = {}
        for name, t in [*model.named_parameters(), *model.named_buffers()]:  # tied ones once
            state[name] = torch.empty(t.shape, dtype=t.dtype, device="cuda:0")

    class Proxy(torch.nn.Module):
        layers, default_layer, name = model.layers, model.default_layer, model.name

        def forward(self, x, needed, full=False):
            return functional_call(model, state, (x, needed), {"full": full}, strict=False)

    with (
        mock.patch("torch.cuda.amp.common.amp_definitely_not_available", return_value=False),
        mock.patch("torch.autograd.grad", checked_grad),
        mode,
    ):
        yield Proxy(), grads_checked


SHAPINGS = {
    "roll, mean": {"grad_norm": "mean"},
    "roll, laplacian": {"grad_norm": "laplacian"},
    "views, fourier, colour": {
        "grad_norm": "fourier",
        "fourier_decay": 1.0,
        "color": True,
        "views": 3,
        "view_zoom": 0.3,
        "view_turn": 10.0,
    },
}


@pytest.mark.parametrize("shaping", SHAPINGS, ids=list(SHAPINGS))
@pytest.mark.parametrize("target", [None, 945])
def test_the_captured_step_on_fake_cuda_runs_fp16_with_no_host_sync(lite0, shaping, target):
    """The graph body (ascent_step drawing its randomness on the device) traced on a fake CUDA
    device: the network runs fp16 under autocast from weights kept in fp16 (no per-replay weight
    cast), the image and its gradient stay float32, and no op synchronises with the host."""
    half = dream_copy(lite0, half=True)
    objective = objectives.build(lite0, layer="block6", target=target, layer_weight=0.5)
    cfg = DreamConfig(jitter=8, **SHAPINGS[shaping])
    with fake_cuda(half) as (model, grads):
        device = torch.device("cuda:0")
        x = torch.rand(1, 3, 64, 96, device=device)
        rows, cols = torch.arange(64, device=device), torch.arange(96, device=device)
        jitter, step_size = torch.tensor(8.0, device=device), torch.tensor(0.02, device=device)
        weights = objective.weight_tensors(device)
        color = color_matrix(device)
        seen = {}

        def record(module, args, out):
            seen[type(module).__name__] = (args[0].dtype, out.dtype, args[0].shape[0])

        convs = [m for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
        hooks = [m.register_forward_hook(record) for m in convs]
        try:
            with RejectHostSync() as guard:
                step = (jitter, (rows, cols), step_size, CUDA, color)
                out = ascent_step(model, x, objective, weights, cfg, *step)
        finally:
            for h in hooks:
                h.remove()
    assert out is x and out.dtype == torch.float32 and out.device.type == "cuda"
    assert seen and all(v[:2] == (torch.float16, torch.float16) for v in seen.values()), seen
    assert all(v[2] == cfg.views for v in seen.values())  # the views go through as one batch
    assert grads[-1] == [(torch.float32, "cuda")]  # the image gradient is float32
    casts = [op for op in guard.ops if op == "aten::_to_copy"]
    assert len(casts) < 10, casts  # the input, activations and grads: never the ~260 weights
    if cfg.grad_norm == "fourier":
        assert "aten::_fft_r2c" in guard.ops and "aten::_fft_c2r" in guard.ops


def test_the_host_sync_guard_catches_what_it_should(lite0):
    with fake_cuda(lite0) as _:
        t = torch.rand(4, device="cuda:0")
        with pytest.raises(HostSyncError, match="_local_scalar_dense"), RejectHostSync():
            t.sum().item()
        with pytest.raises(HostSyncError, match="nonzero"), RejectHostSync():
            t.nonzero()
        with pytest.raises(HostSyncError, match="copies between"), RejectHostSync():
            t.cpu()


def test_the_fake_trace_sees_cuda_autocast_rules(lite0, caplog):
    """The trace is only worth something if autocast really is on: a conv gives fp16 and a
    softmax fp32, as the CUDA autocast lists say."""
    with fake_cuda(lite0), torch.autocast("cuda", dtype=torch.float16):
        x = torch.rand(1, 3, 8, 8, device="cuda:0")
        w = torch.rand(4, 3, 3, 3, device="cuda:0")
        y = torch.nn.functional.conv2d(x, w)
        assert y.dtype == torch.float16
        assert torch.softmax(y, dim=1).dtype == torch.float32
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_plan_says_the_first_frames_will_be_slow(lite0, caplog):
    """On an H100 the plan took 34 s to capture: the log says so when it starts, not only after."""
    fast = CpuGraphDreamer(lite0, budget_s=0.0)
    cfg = DreamConfig(steps=1, octaves=1, jitter=0, min_size=16)
    with caplog.at_level("INFO", logger="realtime.engine.graphs"):
        fast.dream(torch.rand(*SMALL), objectives.layer("block6"), cfg)
    planned = len(capture_plan(lite0.layers, *SMALL[-2:], cfg))
    said = [r.getMessage() for r in caplog.records if "first frames are slow" in r.getMessage()]
    assert said == [
        f"capturing {planned} CUDA graphs for 56x40: the first frames are slow until "
        "they are captured (34 s for 57 on an H100), then each frame replays them"
    ]
