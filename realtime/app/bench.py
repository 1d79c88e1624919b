"""Speed benchmark: dream step time and the real loop's frame rate and latency, against a naive reference."""

from __future__ import annotations

import datetime
import gc
import json
import logging
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

from realtime.control.config import Config, ConfigError, load_config
from realtime.control.params import LiveParams
from realtime.engine import models
from realtime.engine.device import (
    cpu_ticks,
    pick_device,
    serial_cpu,
    steal_note,
    steal_share,
    usable_cores,
)
from realtime.engine.graphs import GraphDreamer
from realtime.engine.models import MODEL_NAMES, DreamModel, ModelError, load_model
from realtime.engine.objectives import Objective, build
from realtime.engine.step import Dreamer, octave_sizes
from realtime.engine.strategy import make_dreamer, reference_dreamer
from realtime.knobs import DreamConfig, KnobError, parse_size
from realtime.live.capture import CaptureThread
from realtime.live.loop import DreamLoop
from realtime.live.slot import Frame, Output
from realtime.live.sources import DemoSource
from realtime.live.transfer import Uploader

logger = logging.getLogger(__name__)
T = TypeVar("T")

GOALS = (
    "GPU: googlenet inception4c 1280x720, 2 octaves x 2 steps, flow feedback: >= 60 fps end to "
    "end and <= 50 ms latency; 1920x1080: >= 30 fps; fast path >= 4x the naive reference",
    "CPU: the cpu preset (efficientnet_lite0 dreaming at 320x180, shown at 640x360, one of four "
    "octaves a frame) >= 20 fps end to end on 2 cores",
)
# Capture pace of the demo source: above the loop's rate, so the loop never waits for a frame. On
# a CPU it is a webcam's 30 fps: making frames the loop never takes would only take cores from it.
CAPTURE_FPS = {"cuda": 240.0, "cpu": 30.0, "mps": 120.0}
REF_LOOP_BUDGET_S = 60.0  # the reference's end-to-end run is skipped when it would take longer
COLUMNS = (
    "model",
    "weights",
    "size",
    "octaves x steps",
    "layer",
    "dream ms",
    "ref dream ms",
    "speed-up",
    "fps",
    "latency ms p50",
    "latency ms p95",
    "ref fps",
    "host steal",
    "goal",
)


class BenchError(RuntimeError):
    """A benchmark option is wrong or a run did not finish."""


@dataclass(frozen=True)
class Row:
    """One configuration to measure: a preset, with the model, size, octaves and steps set."""

    model: str
    size: tuple[int, int]  # (width, height) of the dream
    octaves: int
    steps: int
    preset: str = "default"  # every other setting comes from this preset in config/
    label: str = ""  # e.g. "cpu preset"
    threads: int | None = None  # CPU: torch threads for this row; None = every usable core

    @property
    def size_text(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"

    def config(self, model: DreamModel) -> Config:
        """The row's preset with its model, size, octaves and steps (the preset's layer where
        the model has it, else the model's own)."""
        base = load_config(self.preset)
        layer = base.model.layer if base.model.layer in model.layers else ""
        return load_config(
            self.preset,
            [
                f"model.name={model.name}",
                f'model.layer="{layer}"',
                f"capture.size={self.size_text}",
                f"dream.octaves={self.octaves}",
                f"dream.steps={self.steps}",
                "attract.enabled=false",
            ],
        )


@dataclass(frozen=True)
class Counts:
    """Frames per measurement: warm-up frames are run and thrown away first."""

    dream_warmup: int
    dream_frames: int
    loop_warmup: int
    loop_frames: int


COUNTS = {
    # loop_warmup: the loop captures its planned graphs at least one a frame (<= 28 for GoogLeNet)
    "cuda": Counts(dream_warmup=5, dream_frames=50, loop_warmup=60, loop_frames=300),
    "cpu": Counts(dream_warmup=3, dream_frames=20, loop_warmup=5, loop_frames=60),
    "quick": Counts(dream_warmup=1, dream_frames=3, loop_warmup=2, loop_frames=6),
}


def default_rows(device_type: str, quick: bool = False) -> list[Row]:
    """The rows the goals are read against (a quick smoke set with `quick`)."""
    if device_type == "cpu":
        preset = load_config("cpu")
        cpu = Row(
            preset.model.name,
            parse_size(preset.capture.size),
            preset.dream.octaves,
            preset.dream.steps,
            preset="cpu",
            label="cpu preset",
        )
        if quick:  # one thread: a smoke test must not stall on a machine busy with other work
            small = replace(cpu, size=(160, 96), threads=1)
            return [small, replace(small, octaves=2, steps=2, label="")]
        rows = [cpu]
        if usable_cores() > 1:  # all cores vs one fewer: shows whether threads contend
            rows.append(replace(cpu, threads=usable_cores() - 1))
        return [
            *rows,
            replace(cpu, octaves=2, steps=2, label=""),
            Row("googlenet", (320, 180), 2, 2, preset="cpu"),
        ]
    if quick:
        return [Row("efficientnet_lite0", (320, 180), 2, 2)]
    return [
        Row("googlenet", (1280, 720), 2, 2),
        Row("googlenet", (1920, 1080), 2, 2),
        Row("efficientnet_lite0", (1280, 720), 2, 2),
        Row("googlenet", (640, 360), 2, 2),
    ]


def select_rows(rows: list[Row], models_arg: str | None, sizes_arg: str | None) -> list[Row]:
    """Apply --models and --sizes: each listed model (size) takes every configuration of the
    default rows, one row per (model, size, octaves, steps, threads)."""
    try:
        if models_arg:
            names = [models.resolve_model_name(n) for n in models_arg.split(",") if n.strip()]
            # A label names a preset of its own model: another model drops it.
            rows = [
                replace(r, model=n, label=r.label * (n == r.model)) for n in names for r in rows
            ]
        if sizes_arg:
            sizes = [parse_size(s.strip()) for s in sizes_arg.split(",") if s.strip()]
            rows = [replace(r, size=s) for s in sizes for r in rows]
    except (ModelError, ConfigError, KnobError) as err:
        raise BenchError(f"bench: {err}") from err
    unique: dict[tuple, Row] = {}
    for r in rows:  # one row per configuration; the first (with its settings) wins
        unique.setdefault((r.model, r.size, r.octaves, r.steps, r.threads), r)
    return list(unique.values())


def get_model(
    name: str, device: torch.device, random_weights: bool
) -> tuple[DreamModel | None, str]:
    """(model, weights label); (None, why) when its weights are missing."""
    try:
        model, _ = load_model(name, device=device)
        return model, "pretrained"
    except ModelError as err:
        if random_weights:
            return models.random_model(name, device), "random weights"
        first = str(err).split(";")[0]
        return None, f"skipped: {first}; --random-weights benches it with random weights"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def demo_image(size: tuple[int, int], device: torch.device) -> Tensor:
    source = DemoSource(size)
    source.open()
    return Uploader(device)(source.frame_at(10)).clone()  # (1, 3, H, W)


def run_on_own_thread(fn: Callable[[], T]) -> T:
    """fn() on a thread of its own, returning its result or raising its exception. The thread
    ends with it, and with the thread its OpenMP team: a dream timed here leaves no team behind
    to sleep beside a later dream thread's (realtime.engine.device)."""
    box: list = []

    def target() -> None:
        try:
            box.append((True, fn()))
        except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
            box.append((False, err))

    thread = threading.Thread(target=target, name="timed-dream")
    thread.start()
    thread.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value


def time_dream(
    dreamer: Dreamer, img: Tensor, objective: Objective, cfg: DreamConfig, warmup: int, frames: int
) -> float:
    """ms of one frame's dream (all octaves x steps; with cfg.octave_cycle, the octave each frame
    dreams in turn: see frame_ms), after `warmup` frames."""
    if isinstance(dreamer, GraphDreamer):  # every graph captured before timing, not on the way
        dreamer.prepare(*img.shape[-2:], cfg)
    for i in range(warmup):
        dreamer.dream(img, objective, cfg, frame=i)
    _sync(img.device)
    times = []
    for i in range(warmup, warmup + frames):
        if img.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dreamer.dream(img, objective, cfg, frame=i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            dreamer.dream(img, objective, cfg, frame=i)
            times.append((time.perf_counter() - t0) * 1000.0)
    cycle = len(octave_sizes(*img.shape[-2:], cfg)) if cfg.octave_cycle else 1
    return frame_ms(times, cycle)


def frame_ms(times: Sequence[float], cycle: int = 1) -> float:
    """The typical frame's dream from consecutive frames' ms: their median; where the frames take
    the octaves in turn (`cycle` of them, each costing differently, 17 to 56 ms for the cpu
    preset), the median over whole cycles of a cycle's mean, which is what sets the frame rate.
    The median of the frames themselves would be one octave's or another's, as it happened."""
    whole = len(times) // cycle * cycle
    if cycle <= 1 or whole == 0:
        return statistics.median(times)
    return statistics.median(statistics.fmean(times[i : i + cycle]) for i in range(0, whole, cycle))


def run_loop(
    model: DreamModel,
    device: torch.device,
    row: Row,
    warmup: int,
    frames: int,
    factory: Callable[[DreamModel, torch.device], Dreamer],
    timeout: float,
    callbacks: Sequence[Callable[[Output], None]] = (),
) -> dict:
    """The real loop: DemoSource -> CaptureThread -> DreamLoop with flow feedback -> Outputs,
    each also handed to `callbacks` (an NDI or stream output) on the dream thread.

    Returns fps over the outputs after `warmup` and their latency (done_ts - capture_ts).
    """
    cfg = row.config(model)
    params = LiveParams.from_config(cfg, model.layers, MODEL_NAMES, model.name)
    if not cfg.model.layer:
        params.set("layer", model.default_layer)
    capture = CaptureThread(DemoSource(row.size), row.size, fps=CAPTURE_FPS.get(device.type, 30.0))
    outputs: list[Output] = []  # appended on the dream thread, read after it is done
    loop = DreamLoop(
        capture.slot,
        params,
        model,
        device,
        callbacks=[outputs.append, *callbacks],
        max_frames=warmup + frames,
        dreamer_factory=factory,
        flow_width=cfg.feedback.flow_width,
    )
    ticks = cpu_ticks()
    capture.start()
    try:
        loop.start()
        finished = loop.done.wait(timeout)
    finally:
        loop.stop()
        capture.stop()
    steal = steal_share(ticks, cpu_ticks())
    timed = outputs[warmup:]
    if not finished or len(timed) < 2:
        raise BenchError(
            f"the loop made {len(outputs)} of {warmup + frames} frames in {timeout:.0f} s"
        )
    span = timed[-1].done_ts - timed[0].done_ts
    latencies = sorted((o.done_ts - o.capture_ts) * 1000.0 for o in timed)
    return {
        "fps": (len(timed) - 1) / span,
        "latency_ms": statistics.median(latencies),
        "latency_p95_ms": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "frames": len(timed),
        "steal": steal,
    }


def goal_check(device_type: str, row: Row, result: dict) -> str:
    """Which of the stated goals this row is read against, and whether it meets them."""
    checks = []
    fps, lat, speedup = result.get("fps"), result.get("latency_ms"), result.get("speedup")
    if device_type == "cuda" and row.model == "googlenet" and (row.octaves, row.steps) == (2, 2):
        if row.size == (1280, 720):
            checks += [("fps", fps, 60.0, ">="), ("latency", lat, 50.0, "<=")]
        elif row.size == (1920, 1080):
            checks.append(("fps", fps, 30.0, ">="))
    if device_type == "cuda":
        checks.append(("speed-up", speedup, 4.0, ">="))
    # The cpu goal is on every core (threads None); a row with fewer is there only to compare.
    preset = row.label == "cpu preset" and row.model == "efficientnet_lite0" and row.threads is None
    if device_type == "cpu" and preset and row.size == parse_size(load_config("cpu").capture.size):
        checks.append(("fps", fps, 20.0, ">="))
    if not checks:
        return "-"
    missed = []
    for name, value, bound, op in checks:
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        if not ok:
            missed.append(f"{name} {'n/a' if value is None else f'{value:.1f}'} {op} {bound:g}")
    if not missed:
        return "met"
    taken = steal_note(result.get("steal"))
    return "MISSED: " + ", ".join(missed) + (f" ({taken})" if taken else "")


def bench_row(
    row: Row, model: DreamModel, weights: str, device: torch.device, counts: Counts
) -> dict:
    """Measure one row: the fast dream, the reference dream, the loop with each."""
    cfg = row.config(model)
    objective = build(model, layer=cfg.model.layer or model.default_layer)
    cfg = cfg.dream
    result: dict = {
        "model": row.model,
        "weights": weights,
        "size": row.size_text,
        "octaves": row.octaves,
        "steps": row.steps,
        "layer": objective.terms[0].layer,
        "label": row.label,
    }
    threads = row.threads or usable_cores()
    if device.type == "cpu":
        result["threads"] = threads

    def factory(m: DreamModel, d: torch.device) -> Dreamer:
        return make_dreamer(m, d, threads)

    def reference(m: DreamModel, d: torch.device) -> Dreamer:
        return reference_dreamer(m, d, threads)

    w, h = row.size  # the dream's own size: the pipeline dreams a dream.scale copy of the frame
    img = demo_image((max(8, round(w * cfg.scale)), max(8, round(h * cfg.scale))), device)
    fast = factory(model, device)
    # Timed on threads that end with them, as the loop's dream thread will (engine.device).
    result["dream_ms"] = run_on_own_thread(
        partial(time_dream, fast, img, objective, cfg, counts.dream_warmup, counts.dream_frames)
    )
    del fast
    _release(device)
    naive = reference(model, device)
    result["ref_dream_ms"] = run_on_own_thread(
        partial(time_dream, naive, img, objective, cfg, 1, max(3, counts.dream_frames // 2))
    )
    result["speedup"] = result["ref_dream_ms"] / result["dream_ms"]
    per_frame_s = max(result["dream_ms"], 1.0) / 1000.0
    timeout = 120.0 + 20.0 * (counts.loop_warmup + counts.loop_frames) * per_frame_s
    result.update(
        run_loop(model, device, row, counts.loop_warmup, counts.loop_frames, factory, timeout)
    )
    _release(device)
    ref_frames = min(counts.loop_frames, 60)
    ref_s = result["ref_dream_ms"] / 1000.0 * (counts.loop_warmup + ref_frames)
    if ref_s < REF_LOOP_BUDGET_S:
        ref_loop = run_loop(
            model,
            device,
            row,
            counts.loop_warmup,
            ref_frames,
            reference,
            120.0 + 20.0 * ref_s,
        )
        result["ref_fps"] = ref_loop["fps"]
    del naive
    _release(device)
    result["goal"] = goal_check(device.type, row, result)
    return result


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- header, table, profile, entry point -------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError as err:  # not Linux: platform's name will do
        logger.debug("no /proc/cpuinfo (%s)", err)
    return name


def header(device: torch.device) -> dict:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_cores": usable_cores(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "capture_fps": CAPTURE_FPS.get(device.type, 60.0),
        "goals": list(GOALS),
    }


def _fmt(value: object, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return str(value)


def format_table(head: dict, results: list[dict]) -> str:
    """The markdown table, with the machine and the goals above it."""
    lines = [
        f"# Dream benchmark: {head['device_name']} ({head['device']})",
        "",
        f"torch {head['torch']} (built for CUDA {head['cuda']}), Python {head['python']}, "
        f"{head['cpu_cores']} usable CPU cores, {head['date']}",
        f"End to end: DemoSource paced at {head['capture_fps']:g} fps -> CaptureThread -> "
        "DreamLoop with flow feedback -> Output; latency = done - capture.",
        "Reference: eager float32, the full network every step, no graphs/channels_last/autocast.",
        "host steal: the share of the machine's CPU time a virtual machine's host ran something "
        "else during the end-to-end run (Linux; the same code is that much slower).",
        "dream ms: one frame's dream at the dream's own size (size x dream.scale; with "
        "dream.octave_cycle, each frame dreams one octave in turn: the mean over a cycle, median "
        "over cycles).",
        "Goals:",
        *[f"- {goal}" for goal in head["goals"]],
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in results:
        notes = [r["label"]] if r.get("label") else []
        if r.get("threads"):
            notes.append(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}")
        label = f" ({', '.join(notes)})" if notes else ""
        cells = [
            r["model"] + label,
            r["weights"],
            r["size"],
            f"{r['octaves']} x {r['steps']}",
            r.get("layer") or "-",
            _fmt(r.get("dream_ms")),
            _fmt(r.get("ref_dream_ms")),
            _fmt(r.get("speedup"), 2, "x"),
            _fmt(r.get("fps")),
            _fmt(r.get("latency_ms")),
            _fmt(r.get("latency_p95_ms")),
            _fmt(r.get("ref_fps")),
            "-" if r.get("steal") is None else f"{r['steal']:.0%}",
            r.get("goal") or r.get("note") or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile(row: Row, model: DreamModel, device: torch.device, frames: int = 8) -> str:
    """Where a frame's time goes: the live per-frame code (FramePipeline) under torch.profiler,
    its phases (the labels the pipeline puts on them) and then the top ops."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from realtime.live.pipeline import PHASES, FramePipeline

    cfg = row.config(model)
    params = LiveParams.from_config(cfg, model.layers, MODEL_NAMES, model.name)
    if not cfg.model.layer:
        params.set("layer", model.default_layer)
    snap = params.snapshot()
    source = DemoSource(row.size)
    source.open()
    pipeline = FramePipeline(
        model, make_dreamer(model, device), device, flow_width=cfg.feedback.flow_width
    )
    for i in range(3):  # warm-up (and graph capture on CUDA)
        pipeline.process(Frame(source.frame_at(i), time.monotonic(), i), snap)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        for i in range(3, 3 + frames):
            pipeline.process(Frame(source.frame_at(i), time.monotonic(), i), snap)
        _sync(device)
    events = {e.key: e for e in prof.key_averages()}
    per_frame = {
        name: events[name].cpu_time_total / 1000.0 / frames for name in PHASES if name in events
    }
    total = sum(per_frame.values()) or 1.0
    lines = [
        f"## Profile: {row.model} {row.size_text}, {row.octaves} x {row.steps}, {frames} frames",
        "",
        "| phase | ms a frame (host) | share |",
        "|---|---|---|",
        *[f"| {n} | {ms:.1f} | {100 * ms / total:.0f}% |" for n, ms in per_frame.items()],
    ]
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=20)
    lines += ["", f"Top ops by {sort_by}:", "```", table, "```"]
    return "\n".join(lines)


def main(args) -> int:
    """`python installation.py bench`: print the table, write it as JSON. Returns the exit code.

    args: device, quick, json, models, sizes, frames, random_weights, profile (argparse names).
    """
    device = pick_device(args.device)
    serial_cpu()  # the dreams run on threads of their own, each with the row's threads
    kind = "quick" if args.quick else ("cuda" if device.type == "cuda" else "cpu")
    counts = COUNTS[kind]
    if args.frames is not None:
        if args.frames < 2:
            raise BenchError(f"--frames must be at least 2, got {args.frames}")
        counts = replace(
            counts, loop_frames=args.frames, dream_frames=min(args.frames, counts.dream_frames)
        )
    rows = select_rows(default_rows(device.type, args.quick), args.models, args.sizes)
    random_weights = bool(getattr(args, "random_weights", False))
    loaded: dict[str, tuple[DreamModel | None, str]] = {}
    results = []
    for row in rows:
        if row.model not in loaded:
            loaded[row.model] = get_model(row.model, device, random_weights)
        model, weights = loaded[row.model]
        if model is None:
            results.append({**_row_info(row), "weights": "missing", "note": weights})
            logger.info("%s %s: %s", row.model, row.size_text, weights)
            continue
        logger.info(
            "bench %s %s %d x %d on %s", row.model, row.size_text, row.octaves, row.steps, device
        )
        try:
            results.append(bench_row(row, model, weights, device, counts))
        except (RuntimeError, ValueError) as err:  # one failing row (e.g. out of memory) is noted
            logger.error("%s %s failed: %s", row.model, row.size_text, err)
            results.append({**_row_info(row), "weights": weights, "note": f"failed: {err}"})
            _release(device)
    head = header(device)
    print(format_table(head, results))
    if args.json:
        Path(args.json).write_text(json.dumps({**head, "rows": results}, indent=2) + "\n")
        logger.info("wrote %s", Path(args.json).resolve())
    if getattr(args, "profile", False):
        first = next((r for r in rows if loaded[r.model][0] is not None), None)
        if first is not None:
            print()
            print(profile(first, loaded[first.model][0], device))
    return 0


def _row_info(row: Row) -> dict:
    info = asdict(row)
    info["size"] = row.size_text
    return info
