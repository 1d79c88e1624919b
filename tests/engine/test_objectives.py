"""Objectives: values, composition, float32 reduction, and validation against a model."""

from __future__ import annotations

import pytest
import torch

from realtime.engine import objectives
from realtime.engine.objectives import Objective, ObjectiveError


@pytest.fixture
def acts() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "a": torch.randn(1, 4, 5, 6),
        "b": torch.randn(1, 8, 3, 3),
        "logits": torch.randn(1, 1000),
    }


def test_layer_channel_and_class_values(acts):
    assert torch.allclose(objectives.layer("a")(acts), (acts["a"] ** 2).mean())
    assert torch.allclose(objectives.channel("b", 3)(acts), acts["b"][:, 3].mean())
    assert torch.allclose(objectives.class_logit(7)(acts), acts["logits"][0, 7])
    assert objectives.layer("a").needed == frozenset({"a"})
    assert objectives.class_logit(7).needed == frozenset({"logits"})


def test_objectives_add_and_scale(acts):
    a, b, c = objectives.layer("a"), objectives.channel("b", 1), objectives.class_logit(2)
    mixed = c + 0.5 * a + b * 2 - a
    expected = c(acts) + 0.5 * a(acts) + 2 * b(acts) - a(acts)
    assert isinstance(mixed, Objective)
    assert torch.allclose(mixed(acts), expected)
    assert mixed.needed == frozenset({"a", "b", "logits"})
    assert repr(c + 0.5 * a) == "classes({2: 1.0}) + 0.5 * layer('a')"
    with pytest.raises(TypeError):
        a + 1.0  # noqa: B018 (the TypeError is the point)


def test_class_terms_merge_into_one_weight_vector(acts):
    fade = 0.25 * objectives.class_logit(3) + 0.75 * objectives.class_logit(900)
    assert fade == objectives.classes({3: 0.25, 900: 0.75})
    assert len(fade.terms) == 1 and fade.classes == ((3, 0.25), (900, 0.75))
    want = 0.25 * acts["logits"][0, 3] + 0.75 * acts["logits"][0, 900]
    assert torch.allclose(fade(acts), want)
    assert (fade - objectives.class_logit(3) * 0.25).classes == ((900, 0.75),)


def test_keys_are_exact_and_equal_objectives_have_equal_keys():
    a = objectives.layer("a") + 0.1234561 * objectives.layer("b")
    b = objectives.layer("a") + 0.1234564 * objectives.layer("b")
    assert a.key != b.key and a.structure == b.structure
    assert (objectives.layer("a") * 2).key == (objectives.layer("a") + objectives.layer("a")).key
    assert objectives.class_logit(5).key != objectives.class_logit(6).key
    assert objectives.class_logit(5).structure == objectives.class_logit(6).structure


def test_weights_fill_static_tensors_without_new_ones():
    objective = 0.5 * objectives.layer("a") + objectives.classes({7: 2.0})
    w, cw = objective.weight_tensors(torch.device("cpu"))
    assert w.tolist() == [0.5, 1.0] and cw[7] == 2.0 and cw.sum() == 2.0
    other = 3.0 * objectives.layer("a") + objectives.classes({9: 1.5, 10: 0.5})
    before = (w.data_ptr(), cw.data_ptr())
    other.fill(w, cw)
    assert (w.data_ptr(), cw.data_ptr()) == before
    assert w.tolist() == [3.0, 1.0] and cw[9] == 1.5 and cw[10] == 0.5 and cw.sum() == 2.0


def test_reduction_runs_in_float32_so_fp16_does_not_overflow():
    big = {"x": torch.full((1, 2, 4, 4), 300.0, dtype=torch.float16)}  # 300**2 > fp16 max 65504
    value = objectives.layer("x")(big)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(90000.0)


def test_build_defaults_to_the_model_layer(lite0):
    objective = objectives.build(lite0)
    assert objective.needed == frozenset({lite0.default_layer})
    assert repr(objective) == f"layer('{lite0.default_layer}')"


def test_build_channel_and_target(lite0):
    assert repr(objectives.build(lite0, layer="block3", channel=39)) == "channel('block3', 39)"
    assert objectives.build(lite0, layer="block3", target=5).needed == frozenset({"logits"})
    mixed = objectives.build(lite0, layer="block3", target=5, layer_weight=0.25)
    assert mixed.needed == frozenset({"logits", "block3"})
    acts = lite0(torch.rand(1, 3, 64, 64), mixed.needed)
    expected = acts["logits"][0, 5] + 0.25 * acts["block3"].square().mean()
    assert torch.allclose(mixed(acts), expected)


def test_build_rejects_unknown_layer_naming_valid_ones(lite0):
    with pytest.raises(ObjectiveError) as err:
        objectives.build(lite0, layer="inception4c")
    message = str(err.value)
    assert "unknown layer 'inception4c' for efficientnet_lite0" in message
    assert "valid layers: stem, block0, block1" in message and "head" in message


def test_build_rejects_bad_channel_and_target(lite0):
    with pytest.raises(
        ObjectiveError,
        match=r"channel 40 of efficientnet_lite0 layer 'block3' is out of range; valid values are 0..39",
    ):
        objectives.build(lite0, layer="block3", channel=40)  # block3 has 40 channels
    with pytest.raises(ObjectiveError, match=r"integer in 0..39, got 1.5"):
        objectives.build(lite0, layer="block3", channel=1.5)
    with pytest.raises(ObjectiveError, match=r"target class 1000 is out of range; .*0..999"):
        objectives.build(lite0, target=1000)
    with pytest.raises(ObjectiveError, match=r"0..999"):
        objectives.build(lite0, target=-1)
