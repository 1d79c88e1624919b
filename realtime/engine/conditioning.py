"""Gradient conditioning: how a raw image gradient is shaped before the step (colour, spectrum,
smoothing, normalisation)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from realtime.knobs import DreamConfig

# Lucid's colour correlation (the square root of ImageNet's colour covariance, columns scaled to a
# largest norm of 1): stepping through C C^T puts the step mostly into luminance, where natural
# images vary, instead of independent red/green/blue speckle.
_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def color_matrix(device: torch.device) -> Tensor:
    """The (3, 3) colour preconditioner C C^T on `device` (make it once, outside any graph)."""
    c = torch.tensor(_COLOR_SQRT, dtype=torch.float32)
    c = c / c.norm(dim=0).max()
    return (c @ c.T).to(device)


def fourier_precondition(g: Tensor, decay: float) -> Tensor:
    """Scale g's spectrum by 1 / f^decay (f: radial frequency in cycles per pixel, floored at one
    cycle per frame), as stepping in Lucid's Fourier parameterisation does: coarse structure
    gets the step, pixel noise does not."""
    h, w = g.shape[-2:]
    fy = torch.fft.fftfreq(h, device=g.device)[:, None]  # (h, 1)
    fx = torch.fft.rfftfreq(w, device=g.device)[None, :]  # (1, w // 2 + 1)
    f = (fy.square() + fx.square()).sqrt().clamp_min(1.0 / max(h, w))
    spectrum = torch.fft.rfft2(g) / f.pow(decay)  # (B, 3, h, w // 2 + 1) complex
    return torch.fft.irfft2(spectrum, s=(h, w))


# Floor for divisors: keeps an all-zero gradient (e.g. a saturated frame) at zero instead of NaN,
# far below any real gradient magnitude so it never biases the normalisation.
TINY = 1e-30


def _gaussian_kernel(sigma: float, device: torch.device) -> Tensor:
    """Built per call (microseconds): a cache would hold device tensors for the process's life."""
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
    out = low / low.square().mean().sqrt().clamp_min(TINY)
    for band in reversed(bands):
        out = F.interpolate(out, size=band.shape[-2:], mode="bilinear", align_corners=False)
        out = out + band / band.square().mean().sqrt().clamp_min(TINY)
    return out


def normalise_gradient(g: Tensor, cfg: DreamConfig, color: Tensor | None = None) -> Tensor:
    """Condition a raw (1, 3, H, W) gradient so that its mean absolute value is 1.

    Args:
        color: color_matrix() on g's device, used when cfg.color is set.
    """
    if cfg.color and color is not None:
        g = torch.einsum("ij,bjhw->bihw", color, g)
    if cfg.grad_norm == "fourier":
        g = fourier_precondition(g, cfg.fourier_decay)
    elif cfg.grad_norm == "smooth":
        g = gaussian_blur(g, cfg.smooth_sigma)
    elif cfg.grad_norm == "laplacian":
        g = laplacian_normalise(g, cfg.laplacian_levels)
    return g / g.abs().mean().clamp_min(TINY)
