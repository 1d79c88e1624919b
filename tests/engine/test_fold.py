"""BatchNorm folding: the same function on a checked copy, or the model itself when unsafe."""

from __future__ import annotations

import torch

from realtime.engine import objectives
from realtime.engine.fold import fold_batchnorm
from realtime.engine.models import LOGITS, DreamModel, random_model
from realtime.engine.step import Dreamer
from realtime.knobs import DreamConfig


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
    cfg = DreamConfig(jitter=5, step_size=0.05)
    s_want = Dreamer(lite0).step(img, objective, cfg, torch.Generator().manual_seed(1)) - img
    s_got = Dreamer(folded).step(img, objective, cfg, torch.Generator().manual_seed(1)) - img
    assert torch.nn.functional.cosine_similarity(s_got.flatten(), s_want.flatten(), dim=0) > 0.9999


def test_googlenet_batchnorms_fold_into_conv_biases():
    model = random_model("googlenet")
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
    model = DreamModel("efficientnet_lite0", net, [("a", net)], torch.nn.Flatten(), ("a",), "a")
    with caplog.at_level("WARNING", logger="realtime.engine.fold"):
        assert fold_batchnorm(model) is model
    assert "using it unfolded" in caplog.text


def test_a_model_without_batchnorm_is_not_copied():
    vgg = random_model("vgg16")
    assert fold_batchnorm(vgg) is vgg
