"""LiveParams: validation, clamping, float indices, glides and thread-safe snapshots."""

import threading

import pytest

from realtime.control.params import KNOBS, LiveParams, ParamError
from realtime.engine.classes import class_names

LAYERS = [
    "conv1",
    "conv2",
    "conv3",
    "inception3a",
    "inception3b",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "inception5a",
    "inception5b",
]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def params():
    return LiveParams(LAYERS, ["googlenet", "efficientnet_lite0"], "googlenet")


def test_layer_by_name_and_float_index(params):
    assert params.set("layer", "inception4c") == "inception4c"
    assert params.set("layer", 3.0) == "inception3a"
    assert params.set("layer", "Inception4E") == "inception4e"  # case forgiven
    assert params.set("layer", 99.0) == "inception5b"  # clamped to the last layer
    assert params.snapshot().layer_index == len(LAYERS) - 1


def test_unknown_layer_names_valid_ones_and_changes_nothing(params):
    params.set("layer", "inception4c")
    with pytest.raises(ParamError, match="valid layers: conv1, conv2"):
        params.set("layer", "inception9z")
    assert params.get("layer") == "inception4c"


def test_target_by_name_index_and_clear(params):
    names = class_names()
    assert names[params.set("target", "jellyfish")] == "jellyfish"
    assert params.set("target", 945.0) == 945
    assert params.set("target", -1.0) is None
    assert params.set("target", 12) == 12
    assert params.set("target", "none") is None
    with pytest.raises(ParamError, match="target"):
        params.set("target", "qqqqzzzz")


def test_numbers_are_clamped_and_ints_take_floats(params):
    assert params.set("feedback", 5.0, glide=False) == KNOBS["feedback"].hi
    assert params.set("steps", -3) == 0
    assert params.set("steps", 2.6) == 3
    assert params.set("flow", 0.0) is False
    assert params.set("flow", "on") is True


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "abc", None, [1]])
def test_bad_numbers_are_refused(params, bad):
    before = params.state()
    with pytest.raises(ParamError):
        params.set("step_size", bad)
    assert params.state() == before


def test_unknown_parameter_lists_valid(params):
    with pytest.raises(ParamError, match="valid parameters: model, layer, target"):
        params.set("wobble", 1.0)


def test_a_refused_update_ends_with_what_is_valid_for_it(params):
    with pytest.raises(ParamError) as err:
        params.update({"layer": "inception9"}, strict=True)
    assert str(err.value).endswith("(or an index 0-11)")  # the layers, not every parameter
    with pytest.raises(ParamError, match="valid parameters: model, layer"):
        params.update({"wobble": 1.0, "steps": 2})
    # another model's layer says whose it is (the README's GoogLeNet examples, run offline)
    lite = LiveParams(["stem", "block10", "head"], ["efficientnet_lite0"], "efficientnet_lite0")
    with pytest.raises(
        ParamError, match="inception4c is a googlenet layer: pass --model googlenet"
    ):
        lite.set("layer", "inception4c")


def test_continuous_parameters_glide():
    clock = FakeClock()
    p = LiveParams(LAYERS, ["googlenet"], "googlenet", {"glide": 1.0, "feedback": 0.2}, clock=clock)
    p.set("feedback", 0.2, glide=False)
    p.set("feedback", 0.8)
    assert p.snapshot().feedback.amount == pytest.approx(0.2)
    clock.t += 0.5
    assert p.snapshot().feedback.amount == pytest.approx(0.5)  # smoothstep is half way at half time
    clock.t += 0.6
    assert p.snapshot().feedback.amount == pytest.approx(0.8)
    assert p.get("feedback") == pytest.approx(0.8)  # the stored value is the end point


def test_update_is_all_or_nothing(params):
    before = params.state()
    with pytest.raises(ParamError, match="wobble"):
        params.update({"steps": 5, "wobble": 1})
    assert params.state() == before
    params.update({"steps": 5, "octaves": 3})
    assert (params.get("steps"), params.get("octaves")) == (5, 3)


def test_set_layers_keeps_relative_depth(params):
    params.set("layer", "inception4c")
    params.set("model", "efficientnet_lite0")
    assert params.state()["model"] == "googlenet"  # asked for, not yet dreaming
    assert params.state()["model_loading"] == "efficientnet_lite0"
    params.set_layers(["stem", "block0", "block1", "block2", "head"], "efficientnet_lite0")
    snap = params.snapshot()
    assert snap.model == params.dreaming == params.state()["model"] == "efficientnet_lite0"
    assert params.state()["model_loading"] == "none"
    assert snap.layer in ("block1", "block2")


MODELS = ("googlenet", "vgg16", "efficientnet_lite0")


def test_a_refused_model_asks_for_the_one_dreaming_unless_a_newer_request_stands():
    params = LiveParams(LAYERS, MODELS, "googlenet")
    params.set("model", "vgg16")
    params.refuse_model("vgg16")
    assert params.get("model") == "googlenet"
    params.set("model", "vgg16")
    params.set("model", "efficientnet_lite0")  # newer than the load that fails next
    params.refuse_model("vgg16")
    assert params.get("model") == "efficientnet_lite0"


def test_a_model_whose_weights_are_missing_is_refused_when_the_check_says_so():
    missing = {"vgg16": "vgg16 weights are not on disk"}
    params = LiveParams(LAYERS, MODELS, "googlenet", missing=missing.get)
    with pytest.raises(ParamError, match="not switching to vgg16: vgg16 weights are not on"):
        params.set("model", "vgg16")
    assert params.get("model") == "googlenet"
    params.set("model", "efficientnet_lite0")  # on disk: taken


def test_counters_and_state_are_plain_types(params):
    params.request_reset()
    params.request_snapshot()
    params.toggle_pause()
    snap = params.snapshot()
    assert (snap.reset_count, snap.snapshot_count, snap.paused) == (1, 1, True)
    for value in params.state().values():
        assert type(value) in (int, float, str)


def test_snapshots_are_consistent_under_concurrent_writes(params):
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            params.set("layer", i % len(LAYERS))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(2000):
            snap = params.snapshot()
            assert LAYERS[snap.layer_index] == snap.layer
    finally:
        stop.set()
        t.join()


def test_a_model_switch_keeps_its_layer_until_the_model_has_loaded(params):
    params.update({"model": "efficientnet_lite0", "layer": "block10"})
    assert params.get("model") == "efficientnet_lite0"
    assert params.get("layer") in LAYERS  # still a layer of the model that is running
    params.set_layers(["stem", "block9", "block10", "head"], "efficientnet_lite0")
    assert params.get("layer") == "block10"


def test_a_target_switch_crossfades_the_objective_weights_over_the_glide():

    clock = FakeClock()
    p = LiveParams(LAYERS, ["googlenet"], "googlenet", {"glide": 2.0}, clock=clock)
    p.set("target", "volcano", glide=False)
    volcano, pizza = p.get("target"), 963
    snap = p.snapshot()
    assert snap.targets == ((volcano, 1.0),) and snap.layer_weight == 0.0
    p.set("target", "pizza")
    assert p.snapshot().targets == ((volcano, 1.0),)  # the switch starts where it was
    clock.t += 1.0  # half way: smoothstep(0.5) = 0.5
    snap = p.snapshot()
    assert dict(snap.targets) == pytest.approx({pizza: 0.5, volcano: 0.5})
    assert snap.target == pizza and snap.target_name == "pizza"  # the stored end point
    clock.t += 1.5
    assert p.snapshot().targets == ((pizza, 1.0),)
    p.set("target", "none")  # back to the layer dream: the layer term fades in
    clock.t += 1.0
    snap = p.snapshot()
    assert dict(snap.targets) == pytest.approx({pizza: 0.5}) and snap.layer_weight == 0.5
    clock.t += 1.5
    snap = p.snapshot()
    assert snap.targets == () and snap.layer_weight == 1.0


def test_the_glided_objective_is_what_the_dream_maximises(lite0):
    from realtime.engine import objectives
    from realtime.engine.step import Dreamer
    from realtime.live.pipeline import FramePipeline

    clock = FakeClock()
    p = LiveParams(
        lite0.layers, ["efficientnet_lite0"], "efficientnet_lite0", {"glide": 1.0}, clock=clock
    )
    p.set("layer", "block6")
    p.set("target", 1, glide=False)
    p.set("target", 107)
    clock.t += 0.5
    pipeline = FramePipeline(lite0, Dreamer(lite0), lite0.device)
    objective = pipeline.objective(p.snapshot())
    assert objective == objectives.classes({1: 0.5, 107: 0.5})


def test_while_a_class_target_leads_it_is_dreamed_with_the_target_recipe():
    from realtime.knobs import DreamConfig, FeedbackConfig, TargetConfig

    recipe = TargetConfig(views=3, step_scale=2.0, feedback=0.97)
    base = {
        "dream": DreamConfig(step_size=0.02),
        "feedback": FeedbackConfig(amount=0.5),
        "target": recipe,
    }
    p = LiveParams(LAYERS, ["googlenet"], "googlenet", base=base)
    layer = p.snapshot()
    assert (layer.dream.views, layer.dream.step_size, layer.feedback.amount) == (1, 0.02, 0.5)
    p.set("target", "volcano", glide=False)
    target = p.snapshot()
    assert target.dream.views == 3 and target.dream.fourier_decay == recipe.fourier_decay
    assert target.dream.step_size == pytest.approx(0.04)  # the fader's value, scaled
    assert target.feedback.amount == 0.97  # at least the recipe's
    assert (layer.dream.min_size, target.dream.min_size) == (32, recipe.min_size)  # raised
    p.set("feedback", 0.98, glide=False)
    assert p.snapshot().feedback.amount == 0.98  # the operator can still go above it


def test_a_settled_snapshot_is_reused_and_any_change_or_glide_makes_a_new_one():
    """Several readers ask each frame (the loop, the snapshot saver, the HUD); while nothing
    changes or glides they share one snapshot instead of rebuilding and re-checking it."""
    clock = FakeClock()
    p = LiveParams(LAYERS, ["googlenet"], "googlenet", {"glide": 1.0}, clock=clock)
    first = p.snapshot()
    assert p.snapshot() is first
    p.set("feedback", 0.9)  # glides over 1 s
    clock.t += 0.5
    mid = p.snapshot()
    assert mid is not first and 0.0 < mid.feedback.amount < 0.9
    clock.t += 0.1
    later = p.snapshot()
    assert later is not mid and later.feedback.amount > mid.feedback.amount  # not frozen mid-glide
    clock.t += 1.0
    done = p.snapshot()
    assert done.feedback.amount == pytest.approx(0.9) and p.snapshot() is done
    p.set("layer", "inception5a", glide=False)
    assert p.snapshot().layer == "inception5a"
    p.set("target", "volcano")  # the class cross-fade glides too
    assert p.snapshot().target_name == "volcano"
    clock.t += 0.5
    assert 0.0 < p.snapshot().layer_weight < 1.0  # mid cross-fade: made afresh
    clock.t += 1.0
    settled = p.snapshot()
    assert settled.layer_weight == 0.0 and p.snapshot() is settled
    p.request_snapshot()
    assert p.snapshot().snapshot_count == settled.snapshot_count + 1
