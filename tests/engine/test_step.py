"""The dreamer: activation goes up, class targets take over, settings validate, CUDA path."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from realtime.engine import objectives
from realtime.engine.dream import (
    GRAD_NORMS,
    DreamConfig,
    Dreamer,
    DreamError,
    activation,
    laplacian_normalise,
    normalise_gradient,
    octave_sizes,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dream_raises_the_layer_activation(lite0, chelsea_224):
    layer = lite0.default_layer
    before = activation(lite0, layer, chelsea_224)
    cfg = DreamConfig(steps=3, octaves=2)
    out = Dreamer(lite0).dream(chelsea_224, objectives.layer(layer), cfg, generator=seeded())
    assert out.shape == chelsea_224.shape and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert activation(lite0, layer, out) > 1.5 * before
    assert (out - chelsea_224).abs().mean() > 0.01  # the picture visibly changed


@pytest.mark.parametrize("grad_norm", GRAD_NORMS)
def test_every_gradient_normalisation_dreams(lite0, chelsea_224, grad_norm):
    small = torch.nn.functional.interpolate(chelsea_224, size=(96, 128), mode="bilinear")
    layer = "block8"
    cfg = DreamConfig(steps=6, octaves=1, grad_norm=grad_norm)
    out = Dreamer(lite0).dream(small, objectives.layer(layer), cfg, generator=seeded())
    # measured 1.37x (smooth) to 1.57x (laplacian); unchanged would be 1.0x
    assert activation(lite0, layer, out) > 1.25 * activation(lite0, layer, small)


def test_class_target_takes_over_the_picture(lite0, coffee_224, imagenet_categories):
    goldfish = imagenet_categories.index("goldfish")

    def probability(x: torch.Tensor) -> float:
        with torch.no_grad():
            return lite0(x, {"logits"})["logits"].softmax(dim=1)[0, goldfish].item()

    assert probability(coffee_224) < 0.05
    dreamer, cfg = Dreamer(lite0), DreamConfig(steps=1, octaves=1, jitter=8)
    objective = objectives.build(lite0, target=goldfish)
    x, generator = coffee_224, seeded()
    for _ in range(10):
        x = dreamer.step(x, objective, cfg, generator)
    assert probability(x) > 0.5


def test_gradient_equals_plain_autograd_through_the_roll(lite0):
    """The two-stage backward (float32 reduction, rescaled) keeps the true gradient direction."""
    torch.manual_seed(3)
    img = torch.rand(1, 3, 64, 80)
    objective = objectives.layer("block5") + 0.1 * objectives.class_logit(1)
    shift = (5, -7)
    got = Dreamer(lite0).gradient(img, objective, shift)
    x = img.clone().requires_grad_(True)
    acts = lite0(torch.roll(x, shifts=shift, dims=(2, 3)), objective.needed)
    (expected,) = torch.autograd.grad(objective(acts), [x])
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
    assert cosine > 0.9999


def test_step_is_reproducible_and_leaves_its_input_alone(lite0):
    img = torch.rand(1, 3, 64, 64)
    keep = img.clone()
    dreamer, cfg = Dreamer(lite0), DreamConfig(jitter=16)
    objective = objectives.layer("block3")
    a = dreamer.step(img, objective, cfg, seeded(5))
    b = dreamer.step(img, objective, cfg, seeded(5))
    assert torch.equal(a, b) and torch.equal(img, keep)
    # mean |change| is step_size wherever the clamp does not cut it short
    assert 0.5 * cfg.step_size < (a - img).abs().mean() <= cfg.step_size * 1.0001


def test_draw_shift_stays_within_the_jitter(lite0):
    dreamer, generator = Dreamer(lite0), seeded()
    shifts = [dreamer.draw_shift(3, generator) for _ in range(200)]
    assert {s for pair in shifts for s in pair} == set(range(-3, 4))
    assert dreamer.draw_shift(0, generator) == (0, 0)


def test_octave_sizes_go_smallest_first_and_respect_min_size():
    cfg = DreamConfig(octaves=4, octave_scale=2.0, min_size=32)
    assert octave_sizes(240, 320, cfg) == [(30, 40), (60, 80), (120, 160), (240, 320)][1:]
    assert octave_sizes(240, 320, dataclasses.replace(cfg, octaves=1)) == [(240, 320)]
    assert octave_sizes(20, 20, cfg) == [(20, 20)]  # the full size is always dreamed


def test_gradient_normalisation_gives_unit_mean_magnitude():
    torch.manual_seed(0)
    g = torch.randn(1, 3, 50, 70) * 1e-6
    for grad_norm in GRAD_NORMS:
        out = normalise_gradient(g, DreamConfig(grad_norm=grad_norm))
        assert out.abs().mean().item() == pytest.approx(1.0, rel=1e-4)
    # one level is plain unit-RMS scaling
    assert torch.allclose(laplacian_normalise(g, 1), g / g.square().mean().sqrt())


def test_config_validation_names_valid_values():
    with pytest.raises(DreamError, match="grad_norm must be one of mean, smooth, laplacian"):
        DreamConfig(grad_norm="fancy")
    with pytest.raises(DreamError, match="steps must be an integer >= 1, got 0"):
        DreamConfig(steps=0)
    with pytest.raises(DreamError, match="octaves must be an integer >= 1, got 2.5"):
        DreamConfig(octaves=2.5)
    with pytest.raises(DreamError, match="step_size must be a number > 0"):
        DreamConfig(step_size=0.0)
    with pytest.raises(DreamError, match="octave_scale must be a number >= 1"):
        dataclasses.replace(DreamConfig(), octave_scale=0.7)
    assert DreamConfig(steps=3.0, jitter=8.0).steps == 3  # OSC sends floats for everything


@pytest.mark.cuda
def test_cuda_fp16_dream_matches_fp32_direction_and_raises_activation(lite0, chelsea_224):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from realtime.engine.models import load_model

    model, _ = load_model("efficientnet_lite0", device="cuda")
    img = chelsea_224.cuda()
    objective = objectives.layer(model.default_layer)
    g16 = Dreamer(model).gradient(img, objective, (0, 0))
    g32 = Dreamer(lite0).gradient(chelsea_224, objective, (0, 0))
    assert g16.dtype == torch.float32 and torch.isfinite(g16).all()
    assert torch.nn.functional.cosine_similarity(g16.cpu().flatten(), g32.flatten(), dim=0) > 0.95
    out = Dreamer(model).dream(img, objective, DreamConfig(steps=3), generator=seeded())
    before = activation(model, model.default_layer, img)
    assert activation(model, model.default_layer, out) > 1.5 * before
