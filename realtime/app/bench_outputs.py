"""`bench --outputs`: the dream's frame rate with the NDI and stream outputs on against off, in
runs taken in turn (off, on, off, on, ...) so that a busy machine weighs on both alike."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable

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
from realtime.engine.device import pick_device, tune_cpu, usable_cores
from realtime.engine.models import DreamModel
from realtime.engine.strategy import make_dreamer
from realtime.live.sender import FrameSender, OutputError

logger = logging.getLogger(__name__)

ROUNDS = 3  # pairs of runs (off, on); each pair is one comparison
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


def measure(row: Row, model: DreamModel, device: torch.device, frames: int, rounds: int) -> dict:
    """Loop fps with the outputs off and on, `rounds` pairs in turn."""
    counts = COUNTS["cuda" if device.type == "cuda" else "cpu"]

    threads = row.threads or usable_cores()
    if device.type == "cpu":
        tune_cpu(threads)

    def factory(m: DreamModel, d: torch.device):
        return make_dreamer(m, d, threads)

    def loop(callbacks: list) -> dict:
        timeout = 600.0
        return run_loop(model, device, row, counts.loop_warmup, frames, factory, timeout, callbacks)

    outputs, stops, notes = start_outputs(row.size, row.config(model).capture.fps)
    if not outputs:
        raise BenchError("bench --outputs: neither output can run here: " + "; ".join(notes))
    runs = []
    try:
        for r in range(rounds):
            for on in (False, True):
                before = {o.kind: (o.sent, o.dropped) for o in outputs}
                result = loop(outputs if on else [])
                run = {"round": r + 1, "outputs": on, "fps": result["fps"]}
                for o in outputs if on else []:
                    sent, dropped = before[o.kind]
                    run[f"{o.kind}_sent"] = o.sent - sent
                    run[f"{o.kind}_dropped"] = o.dropped - dropped
                runs.append(run)
                logger.info(
                    "round %d, outputs %s: %.2f fps", r + 1, "on" if on else "off", run["fps"]
                )
    finally:
        for stop in stops:
            stop()
    off = statistics.mean(r["fps"] for r in runs if not r["outputs"])
    on = statistics.mean(r["fps"] for r in runs if r["outputs"])
    # each round's on run against the off run just before it: the machine changes less between
    # the two runs of a round than across the whole bench
    ratios = [b["fps"] / a["fps"] for a, b in zip(runs[::2], runs[1::2], strict=True)]
    return {
        "model": row.model,
        "size": row.size_text,
        "outputs": [f"{o.kind} ({o.target})" for o in outputs],
        "notes": notes,
        "runs": runs,
        "fps_off": off,
        "fps_on": on,
        "change": on / off - 1.0,
        "round_ratios": ratios,
        "goal": "met" if on >= off * (1.0 - TOLERANCE) else "MISSED",
    }


def format_table(head: dict, result: dict) -> str:
    """Every run in the order taken, then the means and the goal."""
    kinds = [k for k in ("ndi", "stream") if any(f"{k}_sent" in r for r in result["runs"])]
    columns = ["round", "outputs", "fps", *[f"{k} sent / dropped" for k in kinds]]
    lines = [
        f"# Outputs benchmark: {head['device_name']} ({head['device']})",
        "",
        f"{result['model']} at {result['size']}, {head['cpu_cores']} usable CPU cores, "
        f"{head['date']}; outputs on: {', '.join(result['outputs'])}",
        *[f"Note: {n}" for n in result["notes"]],
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in result["runs"]:
        cells = [str(r["round"]), "on" if r["outputs"] else "off", f"{r['fps']:.2f}"]
        for k in kinds:
            cells.append(f"{r[f'{k}_sent']} / {r[f'{k}_dropped']}" if f"{k}_sent" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    ratios = ", ".join(f"{r:.2f}" for r in result["round_ratios"])
    lines += [
        "",
        f"Mean fps: off {result['fps_off']:.2f}, on {result['fps_on']:.2f} "
        f"({100 * result['change']:+.1f}%); goal within {100 * TOLERANCE:.0f}%: {result['goal']}",
        f"On / off in each round: {ratios} (median "
        f"{statistics.median(result['round_ratios']):.2f})",
    ]
    return "\n".join(lines)


def main(args) -> dict:
    """`bench --outputs`: print the table; returns the result (the caller writes the JSON)."""
    device = pick_device(args.device)
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
