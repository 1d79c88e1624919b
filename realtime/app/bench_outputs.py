"""`bench --outputs`: the dream's frame rate with the NDI and stream outputs on against off, in
runs taken in turn (off, ndi, stream, both, off, ...) so that a busy machine weighs on all alike."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from realtime.app.bench import (
    COUNTS,
    BenchError,
    Row,
    default_rows,
    get_model,
    header,
    run_loop,
    select_rows,
)
from realtime.engine.device import pick_device, serial_cpu, usable_cores
from realtime.engine.models import DreamModel
from realtime.engine.strategy import make_dreamer
from realtime.live.sender import FrameSender, OutputError

logger = logging.getLogger(__name__)

TOLERANCE = 0.05  # the goal: outputs on cost at most 5% of the frame rate
NAME = f"dream-bench-{os.getpid()}"


class NdiReceiver:
    """Receives the bench's NDI source on a daemon thread, so that NDI compresses every frame
    (with nobody connected a sender sends nothing). It runs on the bench's machine, so the
    measured cost includes a receiver's decoding, which a show's receiver does elsewhere."""

    def __init__(self, ndi, address: str) -> None:
        settings = ndi.RecvCreateV3()
        settings.color_format = ndi.RECV_COLOR_FORMAT_FASTEST
        settings.source_to_connect_to = ndi.Source(None, address)
        self._ndi = ndi
        self._receiver = ndi.recv_create_v3(settings)
        self._stop = threading.Event()
        self.frames = 0  # video frames received
        self._thread = threading.Thread(target=self._run, name="bench-ndi-recv", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ndi = self._ndi
        while not self._stop.is_set():
            kind, video, _, _ = ndi.recv_capture_v2(self._receiver, 100)  # frees the GIL
            if kind == ndi.FRAME_TYPE_VIDEO:
                self.frames += 1
                ndi.recv_free_video_v2(self._receiver, video)

    def stop(self) -> None:
        """Stop receiving and wait for the thread; then let go of the receiver."""
        self._stop.set()
        self._thread.join(2.0)
        self._ndi.recv_destroy(self._receiver)


def start_outputs(
    size: tuple[int, int], fps: float
) -> tuple[list[FrameSender], list[Callable[[], None]], list[str]]:
    """The NDI output (with a receiver connected) and a UDP stream to a local socket that
    nobody reads: (outputs, what to stop, notes on what could not start)."""
    outputs: list[FrameSender] = []
    stops: list[Callable[[], None]] = []
    notes: list[str] = []
    try:
        from realtime.live.ndi import NdiOutput, find_source, load_ndi

        ndi_out = NdiOutput(NAME, fps=fps)
    except OutputError as err:
        notes.append(f"no NDI: {err}")
    else:
        ndi_out.start()
        stops.append(ndi_out.stop)
        ndi_out(np.zeros((size[1], size[0], 3), np.uint8))  # the source appears with a frame
        deadline = time.monotonic() + 10.0
        while not ndi_out.source and ndi_out.state != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        address = ndi_out.address or find_source(load_ndi(), ndi_out.source, "127.0.0.1", 10.0)
        if address:
            receiver = NdiReceiver(load_ndi(), address)
            stops.insert(0, receiver.stop)
        else:
            notes.append("the NDI source was not found on 127.0.0.1: nobody received it")
        outputs.append(ndi_out)
    if shutil.which("ffmpeg"):
        from realtime.live.stream import StreamOutput

        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes the datagrams, unread
        sink.bind(("127.0.0.1", 0))
        stream = StreamOutput(f"udp://127.0.0.1:{sink.getsockname()[1]}", fps=fps)
        stream.start()
        stops += [stream.stop, sink.close]
        stream(np.zeros((size[1], size[0], 3), np.uint8))  # ffmpeg starts before the timed runs
        deadline = time.monotonic() + 10.0
        while stream.sent == 0 and stream.state != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        outputs.append(stream)
    else:
        notes.append("no stream: ffmpeg is not installed")
    return outputs, stops, notes


def cpu_seconds(outputs: list[FrameSender]) -> float:
    """CPU time so far of this process (every thread: the dream, NDI's, the receiver's) and of
    the outputs' running ffmpeg processes (Linux: /proc; elsewhere this process only)."""
    t = os.times()
    total = t.user + t.system
    for output in outputs:
        pid = getattr(output, "pid", None)
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # not Linux, or it has just ended
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def measure(row: Row, model: DreamModel, device: torch.device, frames: int, rounds: int) -> dict:
    """Loop fps with no output, each output alone and all together, in turns, `rounds` times."""
    counts = COUNTS["cuda" if device.type == "cuda" else "cpu"]
    threads = row.threads or usable_cores()

    def factory(m: DreamModel, d: torch.device):
        return make_dreamer(m, d, threads)

    outputs, stops, notes = start_outputs(row.size, row.config(model).capture.fps)
    if not outputs:
        raise BenchError("bench --outputs: neither output can run here: " + "; ".join(notes))
    setups = [[]] + ([[o] for o in outputs] if len(outputs) > 1 else []) + [outputs]
    runs = []
    try:
        for r in range(rounds):
            for on in setups:
                before = {o.kind: (o.sent, o.dropped) for o in on}
                cpu = cpu_seconds(outputs)
                result = run_loop(
                    model, device, row, counts.loop_warmup, frames, factory, 600.0, on
                )
                cpu = (cpu_seconds(outputs) - cpu) * 1000.0 / (counts.loop_warmup + frames)
                label = "+".join(o.kind for o in on) or "off"
                run = {"round": r + 1, "outputs": label, "fps": result["fps"], "cpu_ms": cpu}
                for o in on:
                    run[f"{o.kind}_sent"] = o.sent - before[o.kind][0]
                    run[f"{o.kind}_dropped"] = o.dropped - before[o.kind][1]
                runs.append(run)
                logger.info("round %d, %s: %.2f fps", r + 1, label, run["fps"])
    finally:
        for stop in stops:
            stop()
    # Each run against the off run of its own round: the machine changes less within a round
    # than across the whole bench.
    ratios: dict[str, list[float]] = {}
    for r in runs:
        off = next(o for o in runs if o["round"] == r["round"] and o["outputs"] == "off")
        if r is not off:
            ratios.setdefault(r["outputs"], []).append(r["fps"] / off["fps"])
    means = {
        label: statistics.mean(r["fps"] for r in runs if r["outputs"] == label)
        for label in dict.fromkeys(r["outputs"] for r in runs)
    }
    every = "+".join(o.kind for o in outputs)
    return {
        "model": row.model,
        "size": row.size_text,
        "outputs": [f"{o.kind} ({o.target})" for o in outputs],
        "notes": notes,
        "runs": runs,
        "mean_fps": means,
        "round_ratios": ratios,
        "change": means[every] / means["off"] - 1.0,
        "goal": "met" if means[every] >= means["off"] * (1.0 - TOLERANCE) else "MISSED",
    }


def format_table(head: dict, result: dict) -> str:
    """Every run in the order taken, then the means, the ratios per round and the goal."""
    kinds = [k for k in ("ndi", "stream") if any(f"{k}_sent" in r for r in result["runs"])]
    columns = ["round", "outputs", "fps", "CPU ms a frame"]
    columns += [f"{k} sent / dropped" for k in kinds]
    lines = [
        f"# Outputs benchmark: {head['device_name']} ({head['device']})",
        "",
        f"{result['model']} at {result['size']}, {head['cpu_cores']} usable CPU cores, "
        f"{head['date']}; outputs: {', '.join(result['outputs'])}",
        *[f"Note: {n}" for n in result["notes"]],
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in result["runs"]:
        cells = [str(r["round"]), r["outputs"], f"{r['fps']:.2f}", f"{r['cpu_ms']:.1f}"]
        for k in kinds:
            cells.append(f"{r[f'{k}_sent']} / {r[f'{k}_dropped']}" if f"{k}_sent" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    means = result["mean_fps"]
    lines += ["", "Mean fps: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items())]
    cpu = {
        label: statistics.median(r["cpu_ms"] for r in result["runs"] if r["outputs"] == label)
        for label in means
    }
    lines.append(
        "Median CPU ms a dreamed frame (every thread and ffmpeg): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
    )
    for label, ratios in result["round_ratios"].items():
        lines.append(
            f"{label} / off in each round: {', '.join(f'{x:.2f}' for x in ratios)} "
            f"(median {statistics.median(ratios):.2f})"
        )
    lines.append(
        f"All outputs on: {100 * result['change']:+.1f}% of the mean off frame rate; "
        f"goal within {100 * TOLERANCE:.0f}%: {result['goal']}"
    )
    return "\n".join(lines)


def main(args) -> dict:
    """`bench --outputs`: print the table; returns the result (the caller writes the JSON)."""
    device = pick_device(args.device)
    serial_cpu()  # the loop's dream thread alone runs torch in parallel (engine.device)
    kind = "quick" if args.quick else ("cuda" if device.type == "cuda" else "cpu")
    frames = args.frames or COUNTS[kind].loop_frames
    rows = select_rows(default_rows(device.type, args.quick), args.models, args.sizes)
    row = rows[0]  # the first row the goals are read against: the cpu preset, or 1280x720
    model, weights = get_model(row.model, device, bool(getattr(args, "random_weights", False)))
    if model is None:
        raise BenchError(f"bench --outputs: {row.model}: {weights}")
    result = measure(row, model, device, frames, args.rounds)
    head = header(device)
    print(format_table(head, result))
    return {**head, **result}
