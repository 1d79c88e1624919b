"""The CUDA-graph strategy: the one dream step, captured once per octave shape and replayed."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from realtime.engine import objectives
from realtime.engine.models import DreamModel
from realtime.engine.objectives import Objective, Term
from realtime.engine.step import CUDA, Dreamer, StepOptions, ascent_step, octave_sizes
from realtime.knobs import DreamConfig, TargetConfig

logger = logging.getLogger(__name__)

# Graphs kept at once, least recently used dropped first. Start-up captures every GoogLeNet layer
# (13) plus the class target at 2 octaves: 28; the rest leaves room for a few octave changes.
MAX_GRAPHS = 64
# Eager runs on a side stream before each capture: the PyTorch docs ask for a warm-up there, and
# it lets cuDNN and the allocator settle (which may sync) outside the capture. 3 as in the docs.
WARMUP_ITERS = 3
# A step shape met after start-up (an octave_scale fader moving) is dreamed eagerly until it is
# seen on this many frames, so a fader sweep does not stall to capture a graph for every value.
CAPTURE_AFTER_USES = 2
# Seconds per frame spent capturing the planned graphs that the frame did not need (at least one
# a frame): the rest of the plan fills in over the next frames, so a model switch or a new size
# makes the show dip for a moment instead of freezing for the whole plan (seconds at 1080p).
CAPTURE_BUDGET_S = 0.05
# After a failed capture, graphs rest this long before the next try, doubling up to the max: a
# passing cause (memory pressure, a driver hiccup) heals, a permanent one costs one try a while.
RETRY_FIRST_S = 2.0
RETRY_MAX_S = 300.0
# One capture at a time in the process: two dreamers capturing at once (a model swapped in while
# the old one still captures) would interleave work into each other's graphs.
_CAPTURE_LOCK = threading.Lock()


class GraphError(RuntimeError):
    """The graph strategy was asked for on a device it does not serve."""


@dataclass(frozen=True)
class GraphKey:
    """What fixes a captured step: the shape, the objective's terms (not their weights or
    classes, which are tensors the graph reads) and the gradient conditioning. The step size
    and jitter amount are tensors too."""

    height: int
    width: int
    terms: tuple[Term, ...]
    shaping: tuple  # the settings baked into the step (CAPTURED, in that order)


# The dream settings a captured step has baked in: its conditioning and its views. (Steps,
# octaves, step size and jitter amount are not: the loop and the scalar tensors carry those.)
CAPTURED = (
    "grad_norm",
    "smooth_sigma",
    "laplacian_levels",
    "fourier_decay",
    "color",
    "views",
    "view_zoom",
    "view_turn",
)


def graph_key(size: tuple[int, int], objective: Objective, cfg: DreamConfig) -> GraphKey:
    """The cache key of the step graph for an octave of `size` (height, width)."""
    shaping = tuple(getattr(cfg, name) for name in CAPTURED)
    return GraphKey(size[0], size[1], objective.structure, shaping)


def capture_plan(
    layers: Sequence[str],
    height: int,
    width: int,
    cfg: DreamConfig,
    class_recipe: TargetConfig | None = None,
) -> list[tuple[GraphKey, Objective, DreamConfig]]:
    """Every step graph a frame of (height, width) may need: each layer and a class target (as
    `class_recipe` dreams it) at each octave size. Largest first (the deepest objective, the
    class logits, leads), so later captures fit in the shared memory pool the first ones grew
    instead of growing it again."""
    class_cfg = class_recipe.apply(cfg) if class_recipe is not None else cfg
    objs = [(objectives.class_logit(0), class_cfg)]
    objs += [(objectives.layer(name), cfg) for name in reversed(layers)]
    own = [(obj, c, octave_sizes(height, width, c)) for obj, c in objs]  # the recipe skips some
    sizes = sorted({s for _, _, mine in own for s in mine}, key=lambda s: s[0] * s[1], reverse=True)
    return [
        (graph_key(size, obj, c), obj, c) for size in sizes for obj, c, mine in own if size in mine
    ]


def root_cause(err: BaseException) -> str:
    """The error and what it arose from (a failed capture often hides the real cause in its
    __cause__ or __context__), one line each."""
    lines, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        first = str(err).splitlines()[0] if str(err) else ""
        lines.append(f"{type(err).__name__}: {first}")
        err = err.__cause__ or err.__context__
    return "; from ".join(lines)


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
    weights: Tensor  # (n,) static term weights the graph reads
    class_weights: Tensor | None  # (1000,) static class weights, for a classes term
    filled: tuple | None  # the key of the objective whose numbers are in the static tensors


class GraphDreamer(Dreamer):
    """The same dream as Dreamer, on CUDA, with each octave's steps replayed CUDA graphs.

    One graph per (octave size, objective terms, gradient conditioning), captured after a
    side-stream warm-up and kept (least recently used dropped past `max_graphs`), all sharing
    one memory pool. A graph reads only static tensors allocated outside that pool (the octave's
    image, which it updates in place, the step size, the jitter amount, the objective's weights)
    and keeps nothing in it, so graphs may replay in any order. Inside: jitter drawn with the
    graph-safe CUDA RNG, then realtime.engine.step.ascent_step; no allocation, no host sync.

    From the first frame of a new frame size every layer of the model and a class target are
    captured ahead: what the frame needs at once, the rest within `capture_budget_s` a frame, so
    layer and target switches never capture. A failed capture is logged with its cause, the
    dream goes on eagerly, and graphs are tried again after a back-off. `on_progress` (if set)
    is called between captures and warm-up runs: the loop's heartbeat, so a long first capture
    does not look like a hung thread.

    The jitter comes from torch's default CUDA generator (torch.cuda.manual_seed for repeatable
    runs); a `generator` passed to dream() is used only by eager steps.
    Use from one thread, the dream thread, like Dreamer.
    """

    def __init__(
        self,
        model: DreamModel,
        device: str | torch.device | None = None,
        opts: StepOptions = CUDA,
        capture_ahead: bool = True,
        max_graphs: int = MAX_GRAPHS,
        capture_budget_s: float = CAPTURE_BUDGET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        dev = model.device if device is None else torch.device(device)
        if dev.type != "cuda":
            raise GraphError(
                f"GraphDreamer needs a CUDA device, got '{dev}'; use "
                f"realtime.engine.strategy.make_dreamer(model, '{dev}'), which picks the eager Dreamer"
            )
        super().__init__(model, dev, opts)
        self._setup_graphs(capture_ahead, max_graphs, capture_budget_s, clock)

    def _setup_graphs(
        self,
        capture_ahead: bool,
        max_graphs: int,
        capture_budget_s: float,
        clock: Callable[[], float],
    ) -> None:
        dev = self.device
        self.capture_ahead = capture_ahead
        self.max_graphs = max_graphs
        self.capture_budget_s = capture_budget_s
        self.on_progress: Callable[[], None] | None = None
        self.class_recipe: TargetConfig | None = None  # how class targets are planned ahead
        self._clock = clock
        self.captures = 0  # graphs captured so far (tests check switches do not add any)
        self.replays = 0
        self.failures = 0  # failed captures so far
        self._retry_at = 0.0  # no capture before this time (after a failure)
        self._backoff = RETRY_FIRST_S
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

    @property
    def capturing_ahead(self) -> bool:
        """Whether planned graphs are still waiting to be captured: a frame may then take
        seconds (a capture at a new depth tunes that depth's kernels first)."""
        return bool(self._pending) and self.graphs_enabled

    @property
    def graphs_enabled(self) -> bool:
        """False while resting after a failed capture."""
        return self._clock() >= self._retry_at

    # -- dream thread ------------------------------------------------------------------------

    @torch.no_grad()
    def dream(
        self,
        img: Tensor,
        objective: Objective,
        cfg: DreamConfig,
        generator: torch.Generator | None = None,
        frame: int = 0,
    ) -> Tensor:
        """Dream on a (1, 3, H, W) float32 CUDA image in [0, 1]; returns a new tensor like it."""
        if img.ndim != 4 or img.shape[:2] != (1, 3) or img.device.type != self.device.type:
            raise GraphError(
                f"expected a (1, 3, H, W) image on {self.device}, got {tuple(img.shape)} "
                f"on {img.device}"
            )
        height, width = img.shape[-2:]
        if self.capture_ahead and (height, width) != self._frame_size:
            self._plan(height, width, cfg)
        self._set_scalars(cfg)
        x = super().dream(img, objective, cfg, generator, frame)
        if self._pending and self.graphs_enabled:
            self._capture_pending(self.capture_budget_s)
        return x.clone() if self._is_static(x) else x

    def run_steps(
        self, x: Tensor, objective: Objective, cfg: DreamConfig, generator: torch.Generator | None
    ) -> Tensor:
        """An octave's steps as graph replays on the octave's static image (eager until its
        graph is captured)."""
        entry = self._graph_for(tuple(x.shape[-2:]), objective, cfg)
        if entry is None:
            return super().run_steps(x, objective, cfg, generator)
        entry.shape.x.copy_(x)
        if entry.filled != objective.key:
            objective.fill(entry.weights, entry.class_weights)
            entry.filled = objective.key
        for _ in range(cfg.steps):
            entry.graph.replay()
        self.replays += cfg.steps
        return entry.shape.x

    def prepare(self, height: int, width: int, cfg: DreamConfig) -> int:
        """Capture now every planned graph for frames of (height, width) under `cfg`'s octaves
        (each layer and a class target at each octave). Returns how many were captured."""
        before = self.captures
        if (height, width) != self._frame_size:
            self._plan(height, width, cfg)
        self._capture_pending(math.inf)
        return self.captures - before

    # -- planning and bookkeeping ---------------------------------------------------------------

    def _plan(self, height: int, width: int, cfg: DreamConfig) -> None:
        """A new frame size (start-up, a smaller dream after out-of-memory): plan every layer's
        graphs at its octaves, and drop the graphs of other sizes."""
        self._frame_size = (height, width)
        sizes = set(octave_sizes(height, width, cfg))
        for key in [k for k in self._graphs if (k.height, k.width) not in sizes]:
            self._evict(key)
        plan = capture_plan(self.model.layers, height, width, cfg, self.class_recipe)
        room = self.max_graphs - len(self._graphs)
        wanted = [(k, o, c) for k, o, c in plan if k not in self._graphs]
        if len(wanted) > room:
            logger.info(
                "planning %d of %d graphs (max_graphs %d); the rest capture on use",
                room,
                len(wanted),
                self.max_graphs,
            )
        self._pending = OrderedDict((k, (o, c)) for k, o, c in wanted[: max(room, 0)])
        self._ahead = (self._clock(), self.captures)
        if self._pending:  # the operator sees why the first half-minute is slow
            logger.info(
                "capturing %d CUDA graphs for %dx%d: the first frames are slow until they are "
                "captured (34 s for 57 on an H100), then each frame replays them",
                len(self._pending),
                width,
                height,
            )

    def _capture_pending(self, budget_s: float) -> None:
        """Capture planned graphs for up to `budget_s` seconds (at least one)."""
        deadline = self._clock() + budget_s
        while self._pending and self.graphs_enabled:
            key, (objective, cfg) = self._pending.popitem(last=False)
            if self._capture(key, objective, cfg) is None and not self.graphs_enabled:
                self._pending[key] = (objective, cfg)  # failed: try it again after the rest
                self._pending.move_to_end(key, last=False)
                return
            if self._clock() >= deadline:
                break
        if not self._pending and self._frame_size is not None:
            started, before = self._ahead
            h, w = self._frame_size
            logger.info(
                "captured %d CUDA graphs ahead for %dx%d (every layer and a class target at "
                "each octave) in %.1f s",
                self.captures - before,
                w,
                h,
                self._clock() - started,
            )

    def _is_static(self, x: Tensor) -> bool:
        return any(x is shape.x for shape in self._shapes.values())

    def _set_scalars(self, cfg: DreamConfig) -> None:
        values = (cfg.step_size, cfg.jitter)
        if values != self._scalars:  # fill_ with a Python number: a kernel, no host sync
            self._step_size.fill_(cfg.step_size)
            self._jitter.fill_(cfg.jitter)
            self._scalars = values

    def _graph_for(self, size: tuple[int, int], objective: Objective, cfg: DreamConfig):
        """The graph for this octave: captured now if planned, else on its
        CAPTURE_AFTER_USES-th frame (None until then, and while resting: eager)."""
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
        logger.info("capturing a CUDA graph for %dx%d %s", key.width, key.height, objective)
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

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _capture(self, key: GraphKey, objective: Objective, cfg: DreamConfig) -> _Graph | None:
        """Warm up on a side stream, then capture one step into the shared pool.

        The warm-up steps the shape's image; whatever happens, the image it started from is
        put back and the thread's current stream restored. Returns None (eager this time) when
        another capture is under way or this one failed.
        """
        if not _CAPTURE_LOCK.acquire(blocking=False):
            return None
        try:
            while len(self._graphs) >= self.max_graphs:
                self._evict(next(iter(self._graphs)))  # the least recently used
            shape = self._shape(key.height, key.width)
            weights, class_weights = objective.weight_tensors(
                self.device
            )  # static, outside the pool

            def body() -> None:  # randomness from the device's generator: graph-safe
                grid = (shape.rows, shape.cols)
                w = (weights, class_weights)
                step = (self._jitter, grid, self._step_size, self.opts, self.color)
                ascent_step(self.model, shape.x, objective, w, cfg, *step)
                self._progress()

            saved = shape.x.clone()
            try:
                graph = self._record(body)
            except torch.cuda.OutOfMemoryError:
                self._drop_graphs()  # give the memory back; the loop shrinks the dream and goes on
                self._release_generator()
                raise
            except RuntimeError as err:
                self._failed(err)
                return None
            finally:
                shape.x.copy_(saved)
        finally:
            _CAPTURE_LOCK.release()
        entry = _Graph(graph, shape, weights, class_weights, objective.key)
        self._graphs[key] = entry
        self._uses.pop(key, None)
        self.captures += 1
        self._backoff = RETRY_FIRST_S
        self._progress()
        return entry

    def _record(self, body: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Warm `body` up on a side stream (as the PyTorch docs ask), then capture it into the
        shared pool. The only CUDA-specific part of a capture.

        Whatever fails, the thread's current stream is what it was before: a capture that
        raises inside torch.cuda.graph may otherwise leave its capture stream current, and every
        later kernel of the thread would run there.
        """
        current = torch.cuda.current_stream(self.device)
        try:
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
        finally:
            torch.cuda.set_stream(current)

    def _release_generator(self) -> None:
        """Put the device's default generator back out of capture mode after a failed capture.

        A capture registers the generator and marks its state as capturing; only a capture that
        ends cleanly unmarks it. After one that failed, every later random draw outside a graph
        (the eager dream's jitter) raises "Offset increment outside graph capture encountered
        unexpectedly" (seen on an H100, torch 2.11). A clone of the state has the same seed and
        offset and is not capturing; the dropped graphs were the only users of the old one.
        """
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        generator = torch.cuda.default_generators[index]
        try:
            generator.graphsafe_set_state(generator.clone_state())
        except (AttributeError, RuntimeError) as err:  # torch < 2.4 has neither
            logger.warning("could not reset the CUDA generator after a failed capture: %s", err)

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

    def _failed(self, err: Exception) -> None:
        """Rest from graphs for a while (doubling each time) and say why, cause included."""
        self.failures += 1
        self._drop_graphs()
        self._release_generator()
        self._retry_at = self._clock() + self._backoff
        logger.warning(
            "CUDA graph capture failed (%s); dreaming without graphs for %.0f s, then trying "
            "again: the same fp16 channels_last dream, with more launch overhead per step",
            root_cause(err),
            self._backoff,
        )
        self._backoff = min(RETRY_MAX_S, self._backoff * 2)
