"""The CUDA fast path: fp16 autocast, channels_last, the truncated network, one CUDA graph per step."""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realtime.engine import objectives
from realtime.engine.dream import _TINY, DreamConfig, Dreamer, normalise_gradient, octave_sizes
from realtime.engine.models import LOGITS, NUM_CLASSES, DreamModel
from realtime.engine.objectives import Objective

logger = logging.getLogger(__name__)

# Graphs kept at once, least recently used dropped first. Start-up captures every GoogLeNet layer
# (13) plus the class target at 2 octaves: 28; the rest leaves room for a few octave changes.
MAX_GRAPHS = 64
# Eager runs on a side stream before each capture: the PyTorch docs ask for a warm-up there, and
# it lets cudnn.benchmark pick its kernels (which syncs) outside the capture. 3 as in the docs.
WARMUP_ITERS = 3
# A step shape met after start-up (an octave_scale fader moving) is dreamed eagerly until it is
# seen on this many frames, so a fader sweep does not stall to capture a graph for every value.
CAPTURE_AFTER_USES = 2
# Seconds per frame spent capturing the planned graphs that the frame did not need (at least one
# a frame): the rest of the plan fills in over the next frames, so a model switch or a new size
# makes the show dip for a moment instead of freezing for the whole plan (seconds at 1080p).
CAPTURE_BUDGET_S = 0.05
THREADS_ENV = "DREAM_CPU_THREADS"  # overrides the CPU path's torch thread count
_FOLD_PROBE = 64  # px; the smallest input every model maps to >= 1x1 at its deepest layer
# Relative activation change a correct fold stays far below (float rounding, TF32 convolutions on
# CUDA: ~1e-3); a BatchNorm paired with the wrong conv changes activations by order 1.
_FOLD_TOLERANCE = 1e-2
_CLASS_TERM = re.compile(r"class_logit\((\d+)\)")  # the repr objectives.class_logit gives


class FastPathError(RuntimeError):
    """The fast path was asked for on a device it does not serve."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def tune_cpu(threads: int | None = None) -> int:
    """Set torch's intra-op threads; returns the count set.

    Args:
        threads: None takes $DREAM_CPU_THREADS if set, else every usable core (torch's own
            default may count physical cores only). Fewer than the cores can be faster when
            other busy processes share them: each parallel op waits for its slowest thread.
    """
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        threads = usable_cores()
        if text:
            if text.isdigit() and int(text) > 0:
                threads = int(text)
            else:
                logger.warning(
                    "%s=%r is not a positive integer; using %d threads", THREADS_ENV, text, threads
                )
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def make_dreamer(
    model: DreamModel, device: str | torch.device | None = None, threads: int | None = None
) -> Dreamer:
    """The fastest dreamer for `device`: FastDreamer on CUDA, the eager Dreamer elsewhere.

    Every path dreams on a copy of the model with its BatchNorms folded into the convs
    (EfficientNet-Lite0 at 320x180 on 2 CPU cores: 36 -> 23 ms a step). On the CPU the threads
    are set by tune_cpu(threads) and the copy is switched to channels_last (17% faster there);
    the network runs float32 and only as deep as the objective needs, as on every path.
    """
    dev = model.device if device is None else torch.device(device)
    model = fold_batchnorm(model)  # a copy: the caller's model keeps its BatchNorms
    if dev.type == "cuda":
        return FastDreamer(model, dev)
    if dev.type == "cpu":
        tune_cpu(threads)
        model.to(memory_format=torch.channels_last)
    return Dreamer(model, dev)


# ---- BatchNorm folding ---------------------------------------------------------------------------


class ChannelBias(nn.Module):
    """What a folded BatchNorm leaves after a conv that takes no bias: a per-channel shift (the
    scale went into the conv's weights). Keeps the input's dtype (fp16 under autocast)."""

    def __init__(self, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias.detach().reshape(1, -1, 1, 1).clone())

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.to(x.dtype)  # (B, C, H, W)


def _conv_bn_pairs(net: nn.Module) -> list[tuple[nn.Module, nn.Conv2d, str, nn.BatchNorm2d]]:
    """(parent, conv, bn name, bn) for every eval BatchNorm2d registered right after the
    Conv2d that feeds it (GoogLeNet's BasicConv2d, EfficientNet-Lite's conv/_bnN pairs)."""
    pairs = []
    for parent in net.modules():
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children[:-1], children[1:], strict=True):
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and bn.running_mean is not None
                and bn.affine
            ):
                pairs.append((parent, conv, bn_name, bn))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: DreamModel) -> DreamModel:
    """A copy of `model` with each eval BatchNorm folded into the conv before it: the same
    function, minus a normalisation pass forward and backward per conv (~15% of a CPU step).

    The copy is checked against the original on a probe image, every layer; if it differs
    (a BatchNorm that was not fed by the conv registered before it) the original is returned.
    Models without BatchNorm (VGG16) are returned as they are, without a copy.
    """
    if not _conv_bn_pairs(model.net):
        return model
    folded = copy.deepcopy(model)
    for parent, conv, bn_name, bn in _conv_bn_pairs(folded.net):
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()  # (C,)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
        if type(conv) is nn.Conv2d:  # its forward adds self.bias, fused into the conv kernel
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
            setattr(parent, bn_name, nn.Identity())
        else:  # a subclass may ignore self.bias (SameConv2d does)
            setattr(parent, bn_name, ChannelBias(bias))
    probe = torch.rand(1, 3, _FOLD_PROBE, _FOLD_PROBE, generator=torch.Generator().manual_seed(0))
    probe = probe.to(model.device)
    names = [*model.layers, LOGITS]
    want, got = model(probe, names), folded(probe, names)
    worst = max(
        ((got[n] - want[n]).abs().max() / want[n].abs().max().clamp_min(_TINY)).item()
        for n in names
    )
    if worst > _FOLD_TOLERANCE:
        logger.warning(
            "folding %s's BatchNorms changed its activations by %.2g (relative); using it unfolded",
            model.name,
            worst,
        )
        return model
    logger.debug("folded %d BatchNorms of %s", len(_conv_bn_pairs(model.net)), model.name)
    return folded


# ---- graph keys and capture planning (plain Python: tested on the CPU) -------------------------


@dataclass(frozen=True)
class GraphKey:
    """What fixes a captured step: the shape, the objective's structure and the gradient
    conditioning. Step size, jitter amount and the class index are device tensors, not keys."""

    height: int
    width: int
    objective: str  # objective repr with a single class index replaced by "*"
    grad_norm: str
    smooth_sigma: float
    laplacian_levels: int


def objective_key(objective: Objective) -> tuple[str, int | None]:
    """(structure key, class index) of an objective.

    An objective with exactly one class_logit term keys as "class_logit(*)" with the index
    returned apart: the graph captured for one class serves every class, through a permutation
    of the logits (see `swap_permutation`). Anything else keys by its full repr, so custom
    objectives must have a repr that tells them apart (the builders in objectives.py do).
    """
    desc = repr(objective)
    found = _CLASS_TERM.findall(desc)
    if len(found) == 1 and LOGITS in objective.needed:
        return _CLASS_TERM.sub("class_logit(*)", desc), int(found[0])
    return desc, None


def graph_key(size: tuple[int, int], objective: Objective, cfg: DreamConfig) -> GraphKey:
    """The cache key of the step graph for an octave of `size` (height, width)."""
    structure, _ = objective_key(objective)
    norm = (cfg.grad_norm, cfg.smooth_sigma, cfg.laplacian_levels)
    return GraphKey(size[0], size[1], structure, *norm)


def capture_plan(
    layers: Sequence[str], height: int, width: int, cfg: DreamConfig
) -> list[tuple[GraphKey, Objective]]:
    """Every step graph a frame of (height, width) may need: each layer and a class target at
    each octave size. Largest first (the deepest objective, the class logits, leads), so later
    captures fit in the shared memory pool the first ones grew instead of growing it again."""
    objs = [objectives.class_logit(0)] + [objectives.layer(name) for name in reversed(layers)]
    sizes = sorted(octave_sizes(height, width, cfg), key=lambda s: s[0] * s[1], reverse=True)
    return [(graph_key(size, obj, cfg), obj) for size in sizes for obj in objs]


def swap_permutation(perm: Tensor, captured: int, target: int) -> Tensor:
    """Fill `perm` (n,) in place with the identity, columns `captured` and `target` swapped.

    A graph captured for class `captured` reads logits[:, captured]; fed logits permuted by
    this, it reads the target's logit instead, and its gradient lands on the target's column.
    Small device kernels with Python numbers as arguments: no host sync, no recapture.
    """
    torch.arange(perm.shape[0], out=perm)
    if captured != target:
        perm[captured].fill_(target)  # 0-d views filled with Python numbers: no copy from host
        perm[target].fill_(captured)
    return perm


def retarget(acts: Mapping[str, Tensor], perm: Tensor) -> dict[str, Tensor]:
    """The activations with the (B, 1000) logits' columns permuted by `perm`."""
    out = dict(acts)
    out[LOGITS] = acts[LOGITS].index_select(1, perm)  # (B, 1000)
    return out


def draw_roll(jitter: Tensor) -> Tensor:
    """A random (dy, dx) in -jitter..jitter (each value equally likely) from a 0-d float tensor,
    on its device: graph-safe on CUDA, where each replay advances the Philox offset."""
    u = torch.rand(2, device=jitter.device)  # (2,) in [0, 1)
    return (u * (2 * jitter + 1)).floor_().sub_(jitter).long()  # (2,) int64


def gather_roll(x: Tensor, rows: Tensor, cols: Tensor, shift: Tensor) -> Tensor:
    """torch.roll(x, (dy, dx), dims=(2, 3)) for a device tensor shift (2,): by two gathers, so
    the shift may change between graph replays. rows/cols: aranges over x's height and width."""
    h, w = x.shape[-2:]
    r = (rows - shift[0]).remainder_(h)  # rolled[i] = x[(i - dy) mod h], as torch.roll
    c = (cols - shift[1]).remainder_(w)
    return x.index_select(2, r).index_select(3, c)  # (B, C, h, w)


def ascent_gradient(model: DreamModel, leaf: Tensor, objective: Objective, perm: Tensor | None):
    """Dreamer.gradient's two-stage backward on an already rolled leaf: the objective reduced in
    float32, its gradient rescaled and fed back through the (fp16 on CUDA) network. Class
    objectives see the logits permuted by `perm`. autocast's weight cache is off, as graph
    capture requires (the frozen weights would not be cached anyway)."""
    cuda = leaf.device.type == "cuda"
    autocast = torch.autocast(
        "cuda" if cuda else "cpu", dtype=torch.float16, enabled=cuda, cache_enabled=False
    )
    with autocast:
        acts = model(leaf, objective.needed)
    outs = list(acts.values())
    acts32 = {k: v.detach().float().requires_grad_(True) for k, v in acts.items()}
    loss = objective(acts32 if perm is None else retarget(acts32, perm))
    grads = torch.autograd.grad(loss, list(acts32.values()), allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for g, a in zip(grads, outs, strict=True)]
    scale = torch.stack([g.abs().mean() for g in grads]).amax().clamp_min(_TINY)
    grad_outs = [(g / scale).to(a.dtype) for g, a in zip(grads, outs, strict=True)]
    (g_leaf,) = torch.autograd.grad(outs, [leaf], grad_outs)  # (1, 3, h, w) float32
    return g_leaf


def graph_step(
    model: DreamModel,
    x: Tensor,
    rows: Tensor,
    cols: Tensor,
    objective: Objective,
    cfg: DreamConfig,
    step_size: Tensor,
    jitter: Tensor,
    perm: Tensor | None = None,
) -> None:
    """One jittered ascent step on x (1, 3, h, w) float32, in place, reading only tensors (the
    step size and jitter are 0-d tensors): what a FastDreamer graph captures. Any device, so the
    CPU tests check it against Dreamer.step_shifted."""
    shift = draw_roll(jitter)  # (2,)
    rolled = gather_roll(x, rows, cols, shift)  # (1, 3, h, w)
    with torch.enable_grad():
        leaf = rolled.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        g = ascent_gradient(model, leaf, objective, perm)  # (1, 3, h, w) float32, rolled
    g = gather_roll(g, rows, cols, -shift)  # (1, 3, h, w) un-rolled
    g = normalise_gradient(g, cfg)
    x.add_(g * step_size).clamp_(0.0, 1.0)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---- the CUDA dreamer ----------------------------------------------------------------------------


@dataclass
class _Shape:
    """Static device tensors of one octave size, allocated outside every graph's pool."""

    x: Tensor  # (1, 3, h, w) float32: the image, stepped in place by each replay
    rows: Tensor  # (h,) int64 arange, for the device-side roll
    cols: Tensor  # (w,) int64 arange


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    shape: _Shape
    captured_class: int | None  # the class the captured objective reads (None: no class term)
    perm: Tensor | None  # (1000,) int64 static logits permutation when captured_class is set
    target: int | None  # the class perm currently points at


class FastDreamer(Dreamer):
    """The same dream as Dreamer, on CUDA, with each gradient step a replayed CUDA graph.

    One graph per (octave size, objective structure, gradient conditioning), captured after a
    side-stream warm-up and kept (least recently used dropped past `max_graphs`), all sharing
    one memory pool. A step reads only static tensors allocated outside that pool (the octave's
    image, which it updates in place, the step size, the jitter amount, the logits permutation)
    and keeps nothing in it, so graphs may replay in any order. Inside a graph: jitter drawn
    with the graph-safe CUDA RNG, roll by gather, fp16 autocast forward as deep as the objective
    needs (channels_last), the two-stage backward of Dreamer.gradient, normalisation, the step,
    the clamp; no allocation, no host sync. Octave resizes run eagerly between replays.

    From the first frame of a new frame size every layer of the model and a class target are
    captured ahead: what the frame needs at once, the rest within `capture_budget_s` a frame
    (prepare() captures it all at once), so layer and target switches never capture. If capture
    fails the dreamer warns once and dreams eagerly (Dreamer's fp16 channels_last path).

    The jitter comes from torch's default CUDA generator (torch.cuda.manual_seed for repeatable
    runs); a `generator` passed to dream() is used only by eager steps.
    Use from one thread, the dream thread, like Dreamer.
    """

    def __init__(
        self,
        model: DreamModel,
        device: str | torch.device | None = None,
        capture_ahead: bool = True,
        max_graphs: int = MAX_GRAPHS,
        capture_budget_s: float = CAPTURE_BUDGET_S,
    ) -> None:
        dev = model.device if device is None else torch.device(device)
        if dev.type != "cuda":
            raise FastPathError(
                f"FastDreamer needs a CUDA device, got '{dev}'; use "
                f"realtime.engine.fastpath.make_dreamer(model, '{dev}'), which picks the eager Dreamer"
            )
        super().__init__(model, dev)
        self._init_graphs(capture_ahead, max_graphs, capture_budget_s)

    def _init_graphs(self, capture_ahead: bool, max_graphs: int, capture_budget_s: float) -> None:
        dev = self.device
        self.capture_ahead = capture_ahead
        self.max_graphs = max_graphs
        self.capture_budget_s = capture_budget_s
        self.graphs_enabled = True  # False after a failed capture: eager from then on
        self.captures = 0  # graphs captured so far (tests check switches do not add any)
        self.replays = 0
        self._graphs: OrderedDict[GraphKey, _Graph] = OrderedDict()
        self._shapes: dict[tuple[int, int], _Shape] = {}
        self._uses: dict[GraphKey, int] = {}  # frames an uncaptured key was dreamed eagerly
        self._frame_size: tuple[int, int] | None = None  # (h, w) the plan was made for
        # Planned graphs not captured yet, largest first, with the config they normalise with.
        self._pending: OrderedDict[GraphKey, tuple[Objective, DreamConfig]] = OrderedDict()
        self._ahead: tuple[float, int] = (0.0, 0)  # (when, captures) at the plan's start
        self._pool = None  # one graph memory pool handle shared by every capture
        self._step_size = torch.zeros((), device=dev)  # static: step size of every graph
        self._jitter = torch.zeros((), device=dev)  # static: max roll in px
        self._scalars: tuple[float, int] | None = None  # host copy, to skip redundant fills

    # -- dream thread ------------------------------------------------------------------------

    @torch.no_grad()
    def dream(
        self,
        img: Tensor,
        objective: Objective,
        cfg: DreamConfig,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Dream on a (1, 3, H, W) float32 CUDA image in [0, 1]; returns a new tensor like it."""
        if img.ndim != 4 or img.shape[:2] != (1, 3) or img.device.type != self.device.type:
            raise FastPathError(
                f"expected a (1, 3, H, W) image on {self.device}, got {tuple(img.shape)} "
                f"on {img.device}"
            )
        if not self.graphs_enabled:
            return super().dream(img, objective, cfg, generator)
        height, width = img.shape[-2:]
        if self.capture_ahead and (height, width) != self._frame_size:
            self._plan(height, width, cfg)
        self._set_scalars(cfg)
        _, target = objective_key(objective)
        img = img.float()
        detail = None  # (1, 3, h, w): what the dream added at the previous octave
        x = img
        for size in octave_sizes(height, width, cfg):
            base = img if size == (height, width) else _resize(img, size)  # (1, 3, h, w)
            x = base if detail is None else (base + _resize(detail, size)).clamp_(0.0, 1.0)
            entry = self._graph_for(size, objective, cfg)
            if entry is None:  # not captured (yet, or capture failed): eager steps
                for _ in range(cfg.steps):
                    x = self.step(x, objective, cfg, generator)
            else:
                entry.shape.x.copy_(x)
                self._point(entry, target)
                for _ in range(cfg.steps):
                    entry.graph.replay()
                self.replays += cfg.steps
                x = entry.shape.x
            detail = x - base
        if self._pending:
            self._capture_pending(self.capture_budget_s)
        return x.clone() if self._is_static(x) else x

    def prepare(self, height: int, width: int, cfg: DreamConfig) -> int:
        """Capture now every planned graph for frames of (height, width) under `cfg`'s octaves
        (each layer and a class target at each octave). Returns how many were captured."""
        before = self.captures
        if (height, width) != self._frame_size:
            self._plan(height, width, cfg)
        self._capture_pending(math.inf)
        return self.captures - before

    def _plan(self, height: int, width: int, cfg: DreamConfig) -> None:
        """A new frame size (start-up, a smaller dream after out-of-memory): plan every layer's
        graphs at its octaves, and drop the graphs of other sizes."""
        self._frame_size = (height, width)
        sizes = set(octave_sizes(height, width, cfg))
        for key in [k for k in self._graphs if (k.height, k.width) not in sizes]:
            self._evict(key)
        plan = capture_plan(self.model.layers, height, width, cfg)
        room = self.max_graphs - len(self._graphs)
        wanted = [(k, o) for k, o in plan if k not in self._graphs]
        if len(wanted) > room:
            logger.info(
                "planning %d of %d graphs (max_graphs %d); the rest capture on use",
                room,
                len(wanted),
                self.max_graphs,
            )
        self._pending = OrderedDict((k, (o, cfg)) for k, o in wanted[: max(room, 0)])
        self._ahead = (time.monotonic(), self.captures)

    def _capture_pending(self, budget_s: float) -> None:
        """Capture planned graphs for up to `budget_s` seconds (at least one)."""
        deadline = time.monotonic() + budget_s
        while self._pending and self.graphs_enabled:
            key, (objective, cfg) = self._pending.popitem(last=False)
            self._capture(key, objective, cfg)
            if time.monotonic() >= deadline:
                break
        if not self._pending and self.graphs_enabled and self._frame_size is not None:
            started, before = self._ahead
            h, w = self._frame_size
            logger.info(
                "captured %d CUDA graphs ahead for %dx%d (every layer and a class target at "
                "each octave) in %.1f s",
                self.captures - before,
                w,
                h,
                time.monotonic() - started,
            )

    def _is_static(self, x: Tensor) -> bool:
        return any(x is shape.x for shape in self._shapes.values())

    def _set_scalars(self, cfg: DreamConfig) -> None:
        values = (cfg.step_size, cfg.jitter)
        if values != self._scalars:  # fill_ with a Python number: a kernel, no host sync
            self._step_size.fill_(cfg.step_size)
            self._jitter.fill_(cfg.jitter)
            self._scalars = values

    def _point(self, entry: _Graph, target: int | None) -> None:
        """Aim a class graph's logits permutation at `target`."""
        if entry.perm is None or target is None or entry.target == target:
            return
        swap_permutation(entry.perm, entry.captured_class, target)
        entry.target = target

    def _graph_for(self, size: tuple[int, int], objective: Objective, cfg: DreamConfig):
        """The graph for this octave: captured now if planned, else on its
        CAPTURE_AFTER_USES-th frame (None until then: eager)."""
        key = graph_key(size, objective, cfg)
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            return entry
        if not self.graphs_enabled:
            return None
        if self._pending.pop(key, None) is not None:
            return self._capture(key, objective, cfg)
        if len(self._uses) > 4 * self.max_graphs:  # a long fader sweep: forget old counts
            self._uses.clear()
        self._uses[key] = self._uses.get(key, 0) + 1
        if self._uses[key] < CAPTURE_AFTER_USES:
            return None
        logger.info("capturing a CUDA graph for %dx%d %s", key.width, key.height, key.objective)
        return self._capture(key, objective, cfg)

    def _shape(self, height: int, width: int) -> _Shape:
        shape = self._shapes.get((height, width))
        if shape is None:
            dev = self.device
            shape = _Shape(
                x=torch.zeros((1, 3, height, width), device=dev),
                rows=torch.arange(height, device=dev),
                cols=torch.arange(width, device=dev),
            )
            self._shapes[(height, width)] = shape
        return shape

    def _capture(self, key: GraphKey, objective: Objective, cfg: DreamConfig) -> _Graph | None:
        """Warm up on a side stream, then capture one step into the shared pool."""
        while len(self._graphs) >= self.max_graphs:
            self._evict(next(iter(self._graphs)))  # the least recently used
        shape = self._shape(key.height, key.width)
        _, captured = objective_key(objective)
        perm = None
        if captured is not None:
            perm = torch.arange(NUM_CLASSES, device=self.device)  # static, outside the pool

        def body() -> None:
            self._step_body(shape, objective, cfg, perm)

        try:
            saved = shape.x.clone()  # the warm-up steps the image; capture itself runs nothing
            graph = self._record(body)
            shape.x.copy_(saved)
        except torch.cuda.OutOfMemoryError:
            self._drop_graphs()  # give the memory back; the loop shrinks the dream and goes on
            raise
        except RuntimeError as err:
            self._disable(err)
            return None
        entry = _Graph(graph, shape, captured, perm, captured)
        self._graphs[key] = entry
        self._uses.pop(key, None)
        self.captures += 1
        return entry

    def _record(self, body: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Warm `body` up on a side stream (as the PyTorch docs ask), then capture it into the
        shared pool. The only CUDA-specific part of a capture (the CPU tests fake it)."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_ITERS):
                body()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # thread_local: only this thread must avoid unsafe calls while capturing. In "global"
        # mode a model loading onto the GPU in the background would break the capture.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            body()
        return graph

    def _step_body(
        self, shape: _Shape, objective: Objective, cfg: DreamConfig, perm: Tensor | None
    ) -> None:
        step = (self._step_size, self._jitter)
        graph_step(self.model, shape.x, shape.rows, shape.cols, objective, cfg, *step, perm)

    def _evict(self, key: GraphKey) -> None:
        entry = self._graphs.pop(key)
        entry.graph.reset()
        if not any(k.height == key.height and k.width == key.width for k in self._graphs):
            self._shapes.pop((key.height, key.width), None)

    def _drop_graphs(self) -> None:
        for entry in self._graphs.values():
            entry.graph.reset()
        self._graphs.clear()
        self._shapes.clear()
        self._pending.clear()
        self._frame_size = None
        self._pool = None
        torch.cuda.empty_cache()

    def _disable(self, err: Exception) -> None:
        self.graphs_enabled = False
        self._drop_graphs()
        logger.warning(
            "CUDA graph capture failed (%s: %s); dreaming without graphs from now on: the same "
            "fp16 channels_last dream, with more launch overhead per step",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
        )
