"""The dream itself: jittered gradient ascent on an objective, over a pyramid of octaves."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from realtime.engine.models import DreamModel
from realtime.engine.objectives import Objective

GRAD_NORMS = ("mean", "smooth", "laplacian")
# Floor for divisors: keeps an all-zero gradient (e.g. a saturated frame) at zero instead of NaN,
# far below any real gradient magnitude so it never biases the normalisation.
_TINY = 1e-30


class DreamError(ValueError):
    """A dream setting is out of range; the message names the valid values."""


def _as_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise DreamError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise DreamError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_float(name: str, value: object, low: float, inclusive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < low if inclusive else value <= low):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise DreamError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


@dataclass
class DreamConfig:
    """How hard and at which scales to dream. Validated on creation and on dataclasses.replace."""

    steps: int = 2  # gradient steps per octave; more = stronger hallucination, linearly slower
    octaves: int = 2  # pyramid levels; more = larger structures (dreamed at smaller sizes first)
    octave_scale: float = 1.4  # size ratio between neighbouring octaves (> 1)
    step_size: float = 0.02  # mean |pixel change| per step on the [0, 1] scale (after normalising)
    jitter: int = 16  # px; max random roll per axis before each step, hides the network's grid
    grad_norm: str = "mean"  # "mean": divide by mean |g|; "smooth": blur first (softer strokes);
    #                          "laplacian": equalise each Laplacian pyramid band (cleaner detail)
    smooth_sigma: float = 1.0  # px; Gaussian sigma of the "smooth" gradient blur
    laplacian_levels: int = 4  # bands for "laplacian"; more = evens out coarser structures too
    min_size: int = 32  # px; octaves whose shorter side would be smaller are skipped (the
    #                     networks downsample by 32, so smaller inputs leave nothing to dream on)

    def __post_init__(self) -> None:
        self.steps = _as_int("steps", self.steps, 1)
        self.octaves = _as_int("octaves", self.octaves, 1)
        self.octave_scale = _as_float("octave_scale", self.octave_scale, 1.0, inclusive=True)
        self.step_size = _as_float("step_size", self.step_size, 0.0, inclusive=False)
        self.jitter = _as_int("jitter", self.jitter, 0)
        if self.grad_norm not in GRAD_NORMS:
            raise DreamError(
                f"grad_norm must be one of {', '.join(GRAD_NORMS)}, got {self.grad_norm!r}"
            )
        self.smooth_sigma = _as_float("smooth_sigma", self.smooth_sigma, 0.0, inclusive=False)
        self.laplacian_levels = _as_int("laplacian_levels", self.laplacian_levels, 1)
        self.min_size = _as_int("min_size", self.min_size, 1)


def octave_sizes(height: int, width: int, cfg: DreamConfig) -> list[tuple[int, int]]:
    """(height, width) of each octave, smallest first, ending with the full size."""
    sizes = []
    for i in reversed(range(1, cfg.octaves)):
        factor = cfg.octave_scale**i
        size = (max(1, round(height / factor)), max(1, round(width / factor)))
        if min(size) >= cfg.min_size and size != (height, width) and size not in sizes:
            sizes.append(size)
    return [*sizes, (height, width)]


# ---- gradient conditioning -------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _gaussian_kernel(sigma: float, device: torch.device) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))  # 3 sigma holds 99.7% of the weight
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, K): one 1-D kernel per colour channel


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (B, 3, H, W) tensor, reflecting at the borders."""
    k = _gaussian_kernel(float(sigma), x.device)  # (3, 1, 1, K)
    r = k.shape[-1] // 2
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.conv2d(F.pad(x, [r, r, 0, 0], mode=mode), k, groups=3)
    return F.conv2d(F.pad(x, [0, 0, r, r], mode=mode), k.transpose(2, 3), groups=3)


# 5-tap binomial kernel: the classic Burt-Adelson pyramid filter (as in the TF deepdream tutorial)
_BINOMIAL_SIGMA = 1.0


def laplacian_normalise(g: Tensor, levels: int) -> Tensor:
    """Split into Laplacian bands, scale each to unit RMS, merge: every scale gets its share."""
    bands = []
    low = g
    for _ in range(levels - 1):
        if min(low.shape[-2:]) < 4:  # nothing left to split
            break
        smaller = gaussian_blur(low, _BINOMIAL_SIGMA)[..., ::2, ::2]  # (B, 3, H/2, W/2)
        up = F.interpolate(smaller, size=low.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(low - up)
        low = smaller
    out = low / low.square().mean().sqrt().clamp_min(_TINY)
    for band in reversed(bands):
        out = F.interpolate(out, size=band.shape[-2:], mode="bilinear", align_corners=False)
        out = out + band / band.square().mean().sqrt().clamp_min(_TINY)
    return out


def normalise_gradient(g: Tensor, cfg: DreamConfig) -> Tensor:
    """Condition a raw (1, 3, H, W) gradient so that its mean absolute value is 1."""
    if cfg.grad_norm == "smooth":
        g = gaussian_blur(g, cfg.smooth_sigma)
    elif cfg.grad_norm == "laplacian":
        g = laplacian_normalise(g, cfg.laplacian_levels)
    return g / g.abs().mean().clamp_min(_TINY)


# ---- the dreamer -----------------------------------------------------------------------------


class Dreamer:
    """Gradient ascent on a model's activations.

    Use from one thread (the dream thread): CUDA autocast is entered inside each step, in the
    calling thread. On CUDA the model is switched to channels_last and the forward runs under
    fp16 autocast while the image and its gradient stay float32; CPU and MPS run float32.

    The inner step is `step_shifted(img, objective, cfg, shift)`: deterministic, no host sync,
    with the jitter drawn outside by `draw_shift`, so a fast path (CUDA graphs for a fixed
    shape) can replace it on a subclass or instance without touching `dream`.
    """

    def __init__(self, model: DreamModel, device: str | torch.device | None = None) -> None:
        self.device = model.device if device is None else torch.device(device)
        self.model = model.to(self.device)
        self.is_cuda = self.device.type == "cuda"
        if self.is_cuda:
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed shapes per octave: pick fast kernels once

    def draw_shift(self, jitter: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """Random (dy, dx) roll in -jitter..jitter, drawn on the CPU (no device sync)."""
        if jitter == 0:
            return (0, 0)
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        return (dy, dx)

    def gradient(self, img: Tensor, objective: Objective, shift: tuple[int, int]) -> Tensor:
        """Gradient of `objective` w.r.t. `img` seen rolled by `shift`, returned un-rolled.

        Two backward stages keep fp16 out of underflow: the objective is reduced in float32 on
        float32 copies of the activations, and that gradient, rescaled so its largest mean
        |g| is 1, is fed back through the (maybe fp16) network. The scale is irrelevant to the
        result, which is normalised afterwards; only its direction counts.
        """
        x = img.detach().requires_grad_(True)  # (1, 3, H, W) float32 leaf
        with torch.enable_grad():
            rolled = torch.roll(x, shifts=shift, dims=(2, 3)) if any(shift) else x
            if self.is_cuda:
                rolled = rolled.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.is_cuda):
                acts = self.model(rolled, objective.needed)
            outs = list(acts.values())
            acts32 = {k: v.detach().float().requires_grad_(True) for k, v in acts.items()}
            loss = objective(acts32)
            grads = torch.autograd.grad(loss, list(acts32.values()), allow_unused=True)
            grads = [
                torch.zeros_like(a) if g is None else g for g, a in zip(grads, outs, strict=True)
            ]
            scale = torch.stack([g.abs().mean() for g in grads]).amax().clamp_min(_TINY)
            grad_outs = [(g / scale).to(a.dtype) for g, a in zip(grads, outs, strict=True)]
            (g_img,) = torch.autograd.grad(outs, [x], grad_outs)  # (1, 3, H, W) float32
        return g_img

    def step_shifted(
        self, img: Tensor, objective: Objective, cfg: DreamConfig, shift: tuple[int, int]
    ) -> Tensor:
        """One ascent step with a given jitter shift; returns a new (1, 3, H, W) in [0, 1]."""
        g = normalise_gradient(self.gradient(img, objective, shift), cfg)  # (1, 3, H, W)
        return img.detach().add(g, alpha=cfg.step_size).clamp_(0.0, 1.0)

    def step(
        self,
        img: Tensor,
        objective: Objective,
        cfg: DreamConfig,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One jittered ascent step on a (1, 3, H, W) float32 image in [0, 1]."""
        return self.step_shifted(img, objective, cfg, self.draw_shift(cfg.jitter, generator))

    @torch.no_grad()
    def dream(
        self,
        img: Tensor,
        objective: Objective,
        cfg: DreamConfig,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Dream on `img` over the octaves, smallest first, carrying the added detail up.

        Args:
            img: (1, 3, H, W) float32 RGB in [0, 1] on the model's device (not an inference-mode
                tensor: the step needs autograd).
            generator: CPU generator for reproducible jitter.

        Returns:
            (1, 3, H, W) float32 in [0, 1].
        """
        height, width = img.shape[-2:]
        detail = None  # (1, 3, h, w): what the dream added at the previous octave
        x = img
        for size in octave_sizes(height, width, cfg):
            base = img if size == (height, width) else _resize(img, size)  # (1, 3, h, w)
            x = base if detail is None else (base + _resize(detail, size)).clamp_(0.0, 1.0)
            for _ in range(cfg.steps):
                x = self.step(x, objective, cfg, generator)
            detail = x - base
        return x


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def activation(model: DreamModel, layer: str, img: Tensor) -> float:
    """Mean squared activation of `layer` for a (1, 3, H, W) image in [0, 1] (tests, bench)."""
    return model(img, {layer})[layer].float().square().mean().item()
