"""The fast path's CPU-side logic: dreamer choice, graph keys, capture plans, the graph step's math."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from realtime.engine import objectives
from realtime.engine.dream import DreamConfig, Dreamer, octave_sizes
from realtime.engine.fastpath import (
    THREADS_ENV,
    WARMUP_ITERS,
    FastDreamer,
    FastPathError,
    capture_plan,
    draw_roll,
    fold_batchnorm,
    gather_roll,
    graph_key,
    graph_step,
    make_dreamer,
    objective_key,
    retarget,
    swap_permutation,
    tune_cpu,
    usable_cores,
)
from realtime.engine.models import LOGITS, NUM_CLASSES, DreamModel


def test_make_dreamer_picks_the_eager_dreamer_on_the_cpu_with_every_core(lite0):
    torch.set_num_threads(1)
    dreamer = make_dreamer(lite0, "cpu")
    assert type(dreamer) is Dreamer
    assert torch.get_num_threads() == usable_cores()
    conv = next(m for m in dreamer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dreamer.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())  # left alone


def test_cpu_threads_follow_the_environment(monkeypatch, caplog):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert tune_cpu() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "lots")
    with caplog.at_level("WARNING", logger="realtime.engine.fastpath"):
        assert tune_cpu() == usable_cores()
    assert "not a positive integer" in caplog.text
    assert tune_cpu(1) == 1  # an explicit count wins


def test_folded_batchnorms_compute_the_same_layers_and_gradients(lite0):
    folded = fold_batchnorm(lite0)
    assert folded is not lite0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.manual_seed(9)
    img = torch.rand(1, 3, 96, 128)
    names = [*lite0.layers, LOGITS]
    with torch.no_grad():
        want, got = lite0(img, names), folded(img, names)
    for name in names:
        scale = want[name].abs().max()
        assert (got[name] - want[name]).abs().max() < 1e-4 * scale, name
    objective = objectives.layer("block9")
    g_want = Dreamer(lite0).gradient(img, objective, (2, 5))
    g_got = Dreamer(folded).gradient(img, objective, (2, 5))
    assert torch.nn.functional.cosine_similarity(g_got.flatten(), g_want.flatten(), dim=0) > 0.99999


def test_googlenet_batchnorms_fold_into_conv_biases():
    from realtime.app.bench import random_model

    model = random_model("googlenet", torch.device("cpu"))
    generator = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # trained-looking statistics, not the identity
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.1)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    folded = fold_batchnorm(model)
    assert folded is not model
    assert all(m.conv.bias is not None for m in folded.modules() if hasattr(m, "conv"))
    img = torch.rand(1, 3, 96, 96, generator=generator)
    with torch.no_grad():
        want, got = model(img, ["inception4c"]), folded(img, ["inception4c"])
    scale = want["inception4c"].abs().max()
    assert (got["inception4c"] - want["inception4c"]).abs().max() < 1e-4 * scale


def test_a_batchnorm_not_fed_by_its_neighbour_conv_is_left_unfolded(caplog):
    class NormFirst(torch.nn.Module):  # registers conv, bn but applies bn first
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x))

    net = NormFirst().eval().requires_grad_(False)
    net.bn.running_mean.copy_(torch.tensor([0.3, -0.2, 0.5]))
    net.bn.running_var.copy_(torch.tensor([0.2, 2.0, 0.7]))
    model = DreamModel(
        "efficientnet_lite0", net, [("a", net)], lambda x: x.mean((2, 3)), ("a",), "a"
    )
    with caplog.at_level("WARNING", logger="realtime.engine.fastpath"):
        assert fold_batchnorm(model) is model
    assert "using it unfolded" in caplog.text


def test_a_model_without_batchnorm_is_not_copied():
    from realtime.app.bench import random_model

    vgg = random_model("vgg16", torch.device("cpu"))
    assert fold_batchnorm(vgg) is vgg


def test_fast_dreamer_refuses_a_device_that_is_not_cuda(lite0):
    with pytest.raises(FastPathError, match="needs a CUDA device, got 'cpu'.*make_dreamer"):
        FastDreamer(lite0, "cpu")


def test_a_class_target_keys_apart_from_its_index():
    key_a, class_a = objective_key(objectives.class_logit(5))
    key_b, class_b = objective_key(objectives.class_logit(907))
    assert key_a == key_b == "class_logit(*)"
    assert (class_a, class_b) == (5, 907)


def test_a_mixed_class_objective_shares_its_key_across_targets(lite0):
    a = objectives.build(lite0, layer="block6", target=3, layer_weight=0.5)
    b = objectives.build(lite0, layer="block6", target=980, layer_weight=0.5)
    c = objectives.build(lite0, layer="block7", target=3, layer_weight=0.5)
    assert objective_key(a)[0] == objective_key(b)[0] != objective_key(c)[0]
    assert objective_key(b)[1] == 980


def test_layers_channels_and_two_class_terms_key_by_their_whole_structure(lite0):
    assert objective_key(objectives.layer("block3")) == ("layer('block3')", None)
    assert (
        objective_key(objectives.layer("block3"))[0] != objective_key(objectives.layer("block4"))[0]
    )
    assert objective_key(objectives.channel("block3", 1)) != objective_key(
        objectives.channel("block3", 2)
    )
    two = objectives.class_logit(1) + objectives.class_logit(2)
    assert objective_key(two) == (repr(two), None)  # one permutation cannot aim at two classes


def test_graph_keys_ignore_step_size_and_jitter_but_not_shape_or_conditioning():
    obj = objectives.layer("block5")
    cfg = DreamConfig()
    key = graph_key((90, 160), obj, cfg)
    assert key == graph_key((90, 160), obj, dataclasses.replace(cfg, step_size=0.1, jitter=40))
    assert key == graph_key((90, 160), obj, dataclasses.replace(cfg, steps=7))
    assert key != graph_key((90, 161), obj, cfg)
    assert key != graph_key((90, 160), obj, dataclasses.replace(cfg, grad_norm="smooth"))
    assert key != graph_key((90, 160), objectives.layer("block6"), cfg)


def test_the_capture_plan_covers_every_layer_and_a_class_at_every_octave(lite0):
    cfg = DreamConfig(octaves=3, octave_scale=1.4)
    plan = capture_plan(lite0.layers, 180, 320, cfg)
    sizes = octave_sizes(180, 320, cfg)
    assert len(plan) == len(sizes) * (len(lite0.layers) + 1)
    assert len({key for key, _ in plan}) == len(plan)
    assert {(k.height, k.width) for k, _ in plan} == set(sizes)
    areas = [k.height * k.width for k, _ in plan]
    assert areas == sorted(areas, reverse=True)  # largest first: later captures reuse the pool
    assert plan[0][0].objective == "class_logit(*)"  # the deepest objective leads
    live = graph_key((180, 320), objectives.build(lite0, layer="block10"), cfg)
    assert live in {key for key, _ in plan}  # what the loop builds is what was captured
    live_class = graph_key(sizes[0], objectives.build(lite0, target=409), cfg)
    assert live_class in {key for key, _ in plan}


def test_a_swapped_permutation_aims_the_captured_class_at_the_target():
    perm = torch.empty(NUM_CLASSES, dtype=torch.int64)
    swap_permutation(perm, 3, 500)
    assert perm[3] == 500 and perm[500] == 3
    assert sorted(perm.tolist()) == list(range(NUM_CLASSES))
    assert (perm == torch.arange(NUM_CLASSES)).sum() == NUM_CLASSES - 2
    swap_permutation(perm, 3, 3)
    assert torch.equal(perm, torch.arange(NUM_CLASSES))


def test_retargeted_logits_give_the_target_objective_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(1, NUM_CLASSES, requires_grad=True)
    captured, target = objectives.class_logit(7), objectives.class_logit(321)
    perm = swap_permutation(torch.empty(NUM_CLASSES, dtype=torch.int64), 7, 321)
    got = captured(retarget({LOGITS: logits}, perm))
    (g_got,) = torch.autograd.grad(got, [logits])
    want = target({LOGITS: logits})
    (g_want,) = torch.autograd.grad(want, [logits])
    assert got.item() == want.item()
    assert torch.equal(g_got, g_want)


def test_the_device_roll_is_torch_roll_and_undoes_itself():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    rows, cols = torch.arange(5), torch.arange(7)
    for dy, dx in [(0, 0), (1, 2), (-2, 3), (4, -6), (12, -15)]:
        shift = torch.tensor([dy, dx])
        rolled = gather_roll(x, rows, cols, shift)
        assert torch.equal(rolled, torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
        assert torch.equal(gather_roll(rolled, rows, cols, -shift), x)


def test_rolls_are_drawn_evenly_from_minus_to_plus_jitter():
    torch.manual_seed(1)
    draws = torch.stack([draw_roll(torch.tensor(3.0)) for _ in range(2000)])  # (2000, 2)
    assert draws.dtype == torch.int64
    assert draws.min() == -3 and draws.max() == 3
    counts = torch.bincount((draws + 3).flatten(), minlength=7).float()
    assert counts.min() > 0.7 * counts.mean()  # 7 values, ~571 each
    assert torch.equal(draw_roll(torch.tensor(0.0)), torch.zeros(2, dtype=torch.int64))


def _graph_step_on(model, img, objective, cfg, jitter, perm=None):
    x = img.clone()
    h, w = x.shape[-2:]
    step = torch.tensor(cfg.step_size)
    graph_step(model, x, torch.arange(h), torch.arange(w), objective, cfg, step, jitter, perm)
    return x


@pytest.mark.parametrize("grad_norm", ["mean", "laplacian"])
def test_the_graph_step_is_the_eager_step(lite0, grad_norm):
    """The captured computation (device roll, two-stage backward, step) equals Dreamer's, given
    the same roll: drawn from the same seed."""
    torch.manual_seed(2)
    img = torch.rand(1, 3, 64, 96)
    objective = objectives.layer("block5")
    cfg = DreamConfig(grad_norm=grad_norm, step_size=0.05, jitter=6)
    torch.manual_seed(11)
    shift = tuple(draw_roll(torch.tensor(6.0)).tolist())
    torch.manual_seed(11)
    got = _graph_step_on(lite0, img, objective, cfg, torch.tensor(6.0))
    want = Dreamer(lite0).step_shifted(img, objective, cfg, shift)
    assert shift != (0, 0)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    assert (got - img).abs().mean() > 0.01  # it did step


def test_a_class_graph_step_retargeted_is_the_target_step(lite0):
    torch.manual_seed(4)
    img = torch.rand(1, 3, 64, 64)
    cfg = DreamConfig(step_size=0.05, jitter=0)
    perm = swap_permutation(torch.empty(NUM_CLASSES, dtype=torch.int64), 0, 88)
    got = _graph_step_on(lite0, img, objectives.class_logit(0), cfg, torch.tensor(0.0), perm=perm)
    want = Dreamer(lite0).step_shifted(img, objectives.class_logit(88), cfg, (0, 0))
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


# ---- FastDreamer's bookkeeping, with the GPU faked ---------------------------------------------


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


class CpuGraphDreamer(FastDreamer):
    """FastDreamer on the CPU with capture faked (this machine has no GPU)."""

    def __init__(self, model, fail=False, capture_ahead=True, max_graphs=64, budget_s=0.0):
        Dreamer.__init__(self, model, "cpu")
        self._init_graphs(capture_ahead, max_graphs, budget_s)
        self.fail = fail
        self.graphs: list[FakeGraph] = []

    def _record(self, body):
        for _ in range(WARMUP_ITERS):  # the warm-up steps the static image, as on CUDA
            body()
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.graphs.append(FakeGraph(body))
        return self.graphs[-1]


SMALL = (1, 3, 40, 56)  # tiny, so capturing every layer ahead stays cheap on the CPU


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
        objectives.layer("head"),
    ]:
        fast.dream(img, objective, dataclasses.replace(cfg, step_size=0.02, steps=2))
    target = objectives.build(lite0, target=945)
    got = fast.dream(img, target, cfg)
    assert fast.captures == planned  # layer, target, step size and steps: no capture
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


def test_a_failed_capture_warns_once_and_dreams_eagerly(lite0, caplog):
    torch.manual_seed(8)
    img = torch.rand(*SMALL)
    cfg = DreamConfig(steps=2, octaves=1, jitter=0, min_size=16)
    fast = CpuGraphDreamer(lite0, fail=True)
    objective = objectives.layer("block6")
    with caplog.at_level("WARNING", logger="realtime.engine.fastpath"):
        outs = [fast.dream(img, objective, cfg) for _ in range(3)]
    warned = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warned) == 1 and "dreaming without graphs" in warned[0].getMessage()
    assert not fast.graphs_enabled and fast.captures == 0
    want = Dreamer(lite0).dream(img, objective, cfg)
    for out in outs:
        torch.testing.assert_close(out, want, rtol=0, atol=2e-5)


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
    fast = CpuGraphDreamer(lite0, budget_s=0.0)
    fast.dream(img, objectives.layer("block10"), cfg)
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
