"""The dream step, written once: jittered gradient ascent on an objective, over a pyramid of octaves.

One step: jitter the image (a random roll), run the network as far as the objective needs,
take the gradient of the objective with respect to the image only, condition it (normalise,
smooth or equalise per band), step, clamp. The octave loop dreams a pyramid of sizes, smallest
first, carrying the added detail up. Everything else is a strategy around this code, chosen by
`StepOptions` and by how `Dreamer.run_steps` is carried out: the eager dreamer here, the
CUDA-graph dreamer (realtime.engine.graphs) which replays the same step captured once, and the
benchmark's naive reference, which switches off autocast, truncation and channels_last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from realtime.engine.conditioning import TINY, color_matrix, normalise_gradient
from realtime.engine.device import tune_cpu
from realtime.engine.models import DreamModel
from realtime.engine.objectives import Objective
from realtime.knobs import DreamConfig

OCTAVE_MULTIPLE = 8  # px; octave sides round to this, so a fader sweep of octave_scale meets a
# handful of shapes (cuDNN tunes kernels per shape) and the networks' stride-8 stages align


@dataclass(frozen=True)
class StepOptions:
    """What a strategy switches on around the one step (the naive reference: all off)."""

    autocast: bool = False  # fp16 forward under CUDA autocast; the image stays float32
    truncate: bool = True  # run the network only as deep as the objective needs
    channels_last: bool = False  # feed the network channels_last (faster convolutions)


EAGER = StepOptions()
CUDA = StepOptions(autocast=True, truncate=True, channels_last=True)
REFERENCE = StepOptions(autocast=False, truncate=False, channels_last=False)


def octave_sizes(height: int, width: int, cfg: DreamConfig) -> list[tuple[int, int]]:
    """(height, width) of each octave, smallest first, ending with the full size.

    Every size but the full one is rounded to a multiple of OCTAVE_MULTIPLE.
    """
    sizes = []
    for i in reversed(range(1, cfg.octaves)):
        factor = cfg.octave_scale**i
        size = (_round_to(height / factor), _round_to(width / factor))
        if min(size) >= cfg.min_size and size != (height, width) and size not in sizes:
            if size[0] < height and size[1] < width:
                sizes.append(size)
    return [*sizes, (height, width)]


def _round_to(x: float, multiple: int = OCTAVE_MULTIPLE) -> int:
    return max(multiple, multiple * round(x / multiple))


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) to `size` (h', w'); the same tensor if it already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---- jitter -----------------------------------------------------------------------------------


def uniform(shape: tuple[int, ...], device: torch.device, generator=None) -> Tensor:
    """Uniform [0, 1) numbers on `device`. With a CPU `generator` (reproducible eager runs) they
    are drawn on the CPU and moved; without one on the device: graph-safe on CUDA, where each
    replay advances the Philox offset."""
    if generator is not None:
        return torch.rand(shape, generator=generator).to(device)
    return torch.rand(shape, device=device)


def draw_roll(jitter: Tensor | float, device: torch.device, generator=None) -> Tensor:
    """A random (dy, dx) in -jitter..jitter, each value equally likely, as a (2,) int64 tensor."""
    u = uniform((2,), device, generator)  # (2,) in [0, 1)
    return (u * (2 * jitter + 1)).floor_().sub_(jitter).long()  # (2,) int64


def gather_roll(x: Tensor, rows: Tensor, cols: Tensor, shift: Tensor) -> Tensor:
    """torch.roll(x, (dy, dx), dims=(2, 3)) for a device tensor shift (2,): by two gathers, so the
    shift may change between graph replays, and autograd un-rolls the gradient by itself.
    rows/cols: aranges over x's height and width."""
    h, w = x.shape[-2:]
    r = (rows - shift[0]).remainder_(h)  # rolled[i] = x[(i - dy) mod h], as torch.roll
    c = (cols - shift[1]).remainder_(w)
    return x.index_select(2, r).index_select(3, c)  # (B, C, h, w)


def plain_roll(cfg: DreamConfig) -> bool:
    """Whether the views are one rolled copy (exact and cheapest) rather than affine views."""
    return cfg.views == 1 and cfg.view_zoom == 0.0 and cfg.view_turn == 0.0


def jittered_views(
    image: Tensor,
    cfg: DreamConfig,
    jitter: Tensor | float,
    grid: tuple[Tensor, Tensor],
    generator=None,
) -> Tensor:
    """What the network looks at this step: (views, 3, h, w) randomly moved copies of `image`.

    One copy rolled by up to `jitter` px (the classic deep dream jitter, exact), or cfg.views
    copies each zoomed by up to cfg.view_zoom, turned by up to cfg.view_turn degrees and shifted
    by up to `jitter` px, sampled bilinearly with reflection at the borders: an expectation over
    transformations that only shapes which survive them can satisfy (Olah et al. 2017). Either
    way a function of `image` autograd carries the gradient back through.
    """
    device = image.device
    if plain_roll(cfg):
        return gather_roll(image, *grid, draw_roll(jitter, device, generator))
    n = cfg.views
    h, w = image.shape[-2:]
    u = uniform((n, 4), device, generator) * 2 - 1  # (n, 4) in [-1, 1)
    zoom = 1.0 + cfg.view_zoom * u[:, 0]  # (n,)
    turn = math.radians(cfg.view_turn) * u[:, 1]
    c, s = turn.cos() / zoom, turn.sin() / zoom
    # Output pixel p samples the image at R p / zoom + t; rotation in pixel units, as the feedback.
    theta = torch.stack(
        [
            torch.stack([c, -s * (h / w), u[:, 2] * (2 * jitter / w)], dim=1),
            torch.stack([s * (w / h), c, u[:, 3] * (2 * jitter / h)], dim=1),
        ],
        dim=1,
    )  # (n, 2, 3)
    sample = F.affine_grid(theta, [n, 3, h, w], align_corners=False)  # (n, h, w, 2)
    views = image.expand(n, -1, -1, -1)
    return F.grid_sample(
        views, sample, mode="bilinear", padding_mode="reflection", align_corners=False
    )


# ---- the step ---------------------------------------------------------------------------------


def objective_gradient(
    model: DreamModel,
    image: Tensor,
    view: Tensor,
    objective: Objective,
    weights: tuple[Tensor, Tensor | None],
    opts: StepOptions,
) -> Tensor:
    """Gradient of `objective` for the network looking at `view` (a jittered function of the
    leaf `image`), with respect to `image`.

    Two backward stages keep fp16 out of underflow: the objective is reduced in float32 on
    float32 copies of the activations, and that gradient, rescaled so its largest mean |g| is 1,
    is fed back through the (maybe fp16) network. The scale is irrelevant to the result, which
    is normalised afterwards; only its direction counts. autocast's weight cache is off, as
    graph capture requires (the frozen weights would not be cached anyway).
    """
    device = "cuda" if view.device.type == "cuda" else "cpu"
    autocast = torch.autocast(
        device, dtype=torch.float16, enabled=opts.autocast, cache_enabled=False
    )
    if opts.channels_last:
        view = view.contiguous(memory_format=torch.channels_last)
    with autocast:
        acts = model(view, objective.needed, full=not opts.truncate)
    outs = [acts[name] for name in sorted(objective.needed)]
    acts32 = {
        n: a.detach().float().requires_grad_(True)
        for n, a in zip(sorted(objective.needed), outs, strict=True)
    }
    loss = objective.loss(acts32, *weights)
    grads = torch.autograd.grad(loss, list(acts32.values()), allow_unused=True)
    grads = [
        torch.zeros_like(a) if g is None else g for g, a in zip(grads, acts32.values(), strict=True)
    ]
    scale = torch.stack([g.abs().mean() for g in grads]).amax().clamp_min(TINY)
    grad_outs = [(g / scale).to(a.dtype) for g, a in zip(grads, outs, strict=True)]
    (g_image,) = torch.autograd.grad(outs, [image], grad_outs)  # (1, 3, h, w) float32
    return g_image


def ascent_step(
    model: DreamModel,
    x: Tensor,
    objective: Objective,
    weights: tuple[Tensor, Tensor | None],
    cfg: DreamConfig,
    jitter: Tensor | float,
    grid: tuple[Tensor, Tensor],
    step_size: Tensor | float,
    opts: StepOptions,
    color: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One jittered ascent step on x (1, 3, h, w) float32 in [0, 1], in place; returns x.

    Reads only tensors and settings that fix the computation's shape, so a CUDA graph can
    capture it: the jitter amount and step size may be 0-d tensors, the objective's weights are
    tensors, `grid` is (rows, cols) aranges over x's height and width, `color` the colour
    preconditioner (conditioning.color_matrix). The randomness comes from `generator` (CPU,
    reproducible) or, without one, the device's generator (graph-safe).
    """
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)  # (1, 3, h, w) float32
        views = jittered_views(leaf, cfg, jitter, grid, generator)  # (n, 3, h, w)
        g = objective_gradient(model, leaf, views, objective, weights, opts)
    g = normalise_gradient(g, cfg, color)  # (1, 3, h, w), mean |g| = 1
    return x.add_(g * step_size).clamp_(0.0, 1.0)


# ---- the eager strategy and the octave loop ---------------------------------------------------


class Dreamer:
    """Gradient ascent on a model's activations, step by step as the code runs (eager).

    Use from one thread (the dream thread): CUDA autocast is entered inside each step, in the
    calling thread. With `opts`=CUDA the model is switched to channels_last and the forward runs
    under fp16 autocast while the image and its gradient stay float32; CPU and MPS run float32.
    Subclasses change how `run_steps` carries out an octave's steps (CUDA graphs), never the
    step or the octave loop.
    """

    # Whether frames may still take seconds while work planned ahead is done (GraphDreamer's
    # captures); an eager dreamer has none.
    capturing_ahead = False

    def __init__(
        self,
        model: DreamModel,
        device: str | torch.device | None = None,
        opts: StepOptions | None = None,
        threads: int | None = None,
    ) -> None:
        """threads: the CPU intra-op threads the thread that calls dream() is given (None:
        leave them); see realtime.engine.device.tune_cpu."""
        self.threads = threads
        self.device = model.device if device is None else torch.device(device)
        self.model = model.to(self.device)
        self.is_cuda = self.device.type == "cuda"
        if opts is None:
            opts = CUDA if self.is_cuda else EAGER
        self.opts = opts
        if opts.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # cudnn.benchmark stays off (torch's default): on an H100 (2026-11-22, EfficientNet-Lite0,
        # default preset, 640x360) it made the first frame take 13.9 s instead of 8.4, and every
        # new shape (a class recipe's views, another octave size) stalled the show to tune
        # again, for no steady gain: 7.9 ms a frame with it, 7.5 ms without.
        self.color = color_matrix(self.device)  # (3, 3), made once: never inside a graph
        self._grids: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        self._weights: tuple[tuple, tuple[Tensor, Tensor | None]] | None = None

    def grid(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """(rows, cols) aranges for the roll at this size, kept per size."""
        grid = self._grids.get((height, width))
        if grid is None:
            grid = (
                torch.arange(height, device=self.device),
                torch.arange(width, device=self.device),
            )
            self._grids[(height, width)] = grid
        return grid

    def weights(self, objective: Objective) -> tuple[Tensor, Tensor | None]:
        """The objective's weights as tensors on the device, rebuilt only when they change."""
        if self._weights is None or self._weights[0] != objective.key:
            self._weights = (objective.key, objective.weight_tensors(self.device))
        return self._weights[1]

    def step(
        self,
        img: Tensor,
        objective: Objective,
        cfg: DreamConfig,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One jittered ascent step; returns a new (1, 3, H, W) float32 tensor in [0, 1]."""
        x = img.detach().float().clone()
        grid = self.grid(*x.shape[-2:])
        weights = self.weights(objective)
        return ascent_step(
            self.model,
            x,
            objective,
            weights,
            cfg,
            cfg.jitter,
            grid,
            cfg.step_size,
            self.opts,
            self.color,
            generator,
        )

    def run_steps(
        self, x: Tensor, objective: Objective, cfg: DreamConfig, generator: torch.Generator | None
    ) -> Tensor:
        """Carry out one octave's `cfg.steps` steps on x (1, 3, h, w), which it may change."""
        for _ in range(cfg.steps):
            x = self.step(x, objective, cfg, generator)
        return x

    @torch.no_grad()
    def dream(
        self,
        img: Tensor,
        objective: Objective,
        cfg: DreamConfig,
        generator: torch.Generator | None = None,
        frame: int = 0,
    ) -> Tensor:
        """Dream on `img` over the octaves, smallest first, carrying the added detail up.

        With cfg.octave_cycle only octave `frame` mod their number is dreamed; whatever size
        the last octave dreamed was at, its detail is added to the full-size image, so the
        picture itself keeps its sharpness. (cfg.scale is the caller's: the live pipeline dreams
        a smaller copy of the frame.)

        Args:
            img: (1, 3, H, W) float32 RGB in [0, 1] on the model's device (not an inference-mode
                tensor: the step needs autograd). Left unchanged.
            generator: CPU generator for reproducible jitter.
            frame: the frame's number, for cfg.octave_cycle.

        Returns:
            (1, 3, H, W) float32 in [0, 1], a new tensor.
        """
        if self.threads:
            tune_cpu(self.threads)  # whichever thread dreams owns the intra-op team
        height, width = img.shape[-2:]
        img = img.float()
        sizes = octave_sizes(height, width, cfg)
        if cfg.octave_cycle:
            sizes = [sizes[frame % len(sizes)]]
        detail = None  # (1, 3, h, w): what the dream added at the previous octave
        x = img
        for size in sizes:
            base = resize(img, size)  # (1, 3, h, w)
            x = base.clone() if detail is None else (base + resize(detail, size)).clamp_(0.0, 1.0)
            x = self.run_steps(x, objective, cfg, generator)
            detail = x - base
        if sizes[-1] != (height, width):
            return (img + resize(detail, (height, width))).clamp_(0.0, 1.0)
        return x


@torch.no_grad()
def activation(model: DreamModel, layer: str, img: Tensor) -> float:
    """Mean squared activation of `layer` for a (1, 3, H, W) image in [0, 1] (tests, bench)."""
    return model(img, {layer})[layer].float().square().mean().item()
