#!/usr/bin/env python3
"""What an OSC flood costs the dream: the installation's fps quiet and under 5,000 messages/s.

Runs `installation.py` headless on the demo source as a child process (the real thing: OSC
server, status out, dream loop) and reads its frame count from its own status messages. Quiet
windows and flooded windows alternate (A/B/A/B...), each flood of one kind, sent by a second
child process. Each flood runs twice: at the installation, and at a socket nobody reads (the
control: on one machine the sender's own work shares the dream's cores, where a real flood comes
over the network). The dream's fps under the flood is compared with both: quiet, and the same
flood sent elsewhere.

    python scripts/osc_flood.py                 # cpu preset, 15 s windows, every kind once
    python scripts/osc_flood.py send --port 9000 --kind classes --seconds 10   # just flood

It also reads, from /proc, the CPU time of the installation's `osc-server` thread: what the
flood costs the process itself, a figure that other work on the machine does not blur.

Kinds: params (valid faders), classes (refused class names, a new one each time), presets
(64 kB bundles of /dream/preset), resets, garbage (malformed datagrams), forged (addresses
with newlines and escape codes), mixed (all of them in turn).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("params", "classes", "presets", "resets", "garbage", "forged", "mixed")


def message(address: str, *args: object) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def bundle(*elements: bytes) -> bytes:
    out = b"#bundle\x00" + b"\x00" * 7 + b"\x01"
    for e in elements:
        out += struct.pack(">i", len(e)) + e
    return out


def datagrams(kind: str, rng: random.Random):
    """An endless stream of (datagram, how many messages it holds) of one kind."""
    presets = bundle(*[message("/dream/preset", "cpu")] * 2338)
    while True:
        k = rng.choice(KINDS[:-1]) if kind == "mixed" else kind
        if k == "params":
            yield message("/dream/mix", rng.random()), 1
        elif k == "classes":
            yield message("/dream/target", f"zz{rng.getrandbits(40):x}"), 1
        elif k == "presets":
            yield presets, 2338
        elif k == "resets":
            yield message("/dream/reset"), 1
        elif k == "garbage":
            yield b"/dream/feedback\x00,f\x00\x00" + rng.randbytes(rng.choice([1, 3, 5])), 1
        else:
            yield message("/dream/x\nERROR realtime.app: FORGED LINE\x1b[31m", 1.0), 1


def send(host: str, port: int, kind: str, rate: float, seconds: float, seed: int = 11) -> int:
    """Send `rate` messages a second of `kind` for `seconds`; returns the messages sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stream = datagrams(kind, random.Random(seed))
    sent, start = 0, time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = (now - start) * rate
        while sent < due:
            dgram, n = next(stream)
            try:
                sock.sendto(dgram, (host, port))
            except OSError:
                pass  # a full socket buffer: that datagram is lost, like any UDP in a flood
            sent += n
        time.sleep(0.002)
    sock.close()
    return sent


def cpu_seconds(pid: int, thread: str = "") -> float:
    """User plus system CPU time a process (or its threads of that name) has used, from /proc."""
    paths = [Path(f"/proc/{pid}/stat")]
    if thread:
        paths = [
            task / "stat"
            for task in Path(f"/proc/{pid}/task").iterdir()
            if (task / "comm").read_text().strip() == thread
        ]
    total = 0
    for path in paths:
        fields = path.read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class FrameCounter:
    """Listens for the installation's /dream/status/frames and keeps (time, frames) samples."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.samples: list[tuple[float, float]] = []
        self.errors = 0  # /dream/status/error replies received
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                dgram, _ = self.sock.recvfrom(65535)
                packet = OscPacket(dgram)
            except (TimeoutError, ValueError, Exception):  # noqa: BLE001 - keep listening
                continue
            for timed in packet.messages:
                m = timed.message
                if m.address == "/dream/status/frames" and m.params:
                    self.samples.append((time.monotonic(), float(m.params[0])))
                elif m.address == "/dream/status/error":
                    self.errors += 1

    def fps(self, start: float, end: float) -> float | None:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


def bench(args: argparse.Namespace) -> int:
    counter = FrameCounter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The control: the same flood sent to a socket nobody reads (the kernel drops it once its
    # buffer is full), so the sender's own cost on these cores is in both windows.
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    log = Path(args.json).with_suffix(".log")
    cmd = [
        sys.executable, str(ROOT / "installation.py"), "--config", args.config,
        "--source", "demo", "--headless", "--device", args.device, "--osc-port", str(port),
        "--status-to", f"127.0.0.1:{counter.port}", "--set", "osc.status_hz=4",
    ] + (["--size", args.size] if args.size else [])  # fmt: skip
    print("running:", " ".join(cmd), file=sys.stderr)
    with log.open("w") as log_file:
        proc = subprocess.Popen(cmd, stderr=log_file, cwd=ROOT)
    windows = []
    try:
        deadline = time.monotonic() + 180
        while len(counter.samples) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(args.warmup)
        plan = [("quiet", "")]
        for r in range(args.rounds):
            for kind in args.kinds.split(","):
                pair = [(kind, "osc"), (kind, "sink")]
                plan += (pair if r % 2 == 0 else pair[::-1]) + [("quiet", "")]
        for kind, to in plan:
            start, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
            osc0 = cpu_seconds(proc.pid, "osc-server")
            if kind == "quiet":
                time.sleep(args.seconds)
                sent = 0
            else:
                flood = subprocess.run(
                    ["nice", "-n", str(args.flood_nice), sys.executable, __file__, "send",
                     "--port", str(port if to == "osc" else sink.getsockname()[1]),
                     "--kind", kind, "--rate", str(args.rate), "--seconds", str(args.seconds)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                sent = int(flood.stdout.split()[-1])
            end, cpu = time.monotonic(), cpu_seconds(proc.pid) - cpu0
            osc = (cpu_seconds(proc.pid, "osc-server") - osc0) / (end - start)
            # The first and last second of a window are settling: counted in neither.
            fps = counter.fps(start + 1.0, end - 0.5)
            load = cpu / (end - start)
            windows.append(
                {"kind": kind, "to": to, "fps": fps, "sent": sent, "seconds": end - start,
                 "cpu": load, "osc_cpu": osc}
            )  # fmt: skip
            print(
                f"{kind:8s} {to:4s} {fps or 0:6.2f} fps  {load:5.2f} cores, OSC thread "
                f"{osc:6.1%} of one ({sent} messages)",
                file=sys.stderr,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        counter.close()
        sink.close()
    lines = log.read_text().splitlines()
    print(
        "\n| flood | messages/s sent | windows | quiet fps | same flood sent elsewhere | "
        "flooded fps | flooded / quiet | flooded / elsewhere | OSC thread CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    quiet = mean([w["fps"] for w in windows if w["kind"] == "quiet"])
    rows = []
    for kind in args.kinds.split(","):
        hit = [w for w in windows if w["kind"] == kind and w["to"] == "osc"]
        away = [w for w in windows if w["kind"] == kind and w["to"] == "sink"]
        row = {
            "kind": kind,
            "rate": mean([w["sent"] / w["seconds"] for w in hit]),
            "windows": len(hit),
            "flooded_fps": mean([w["fps"] for w in hit]),
            "elsewhere_fps": mean([w["fps"] for w in away]),
            "osc_cpu": mean([w["osc_cpu"] for w in hit]),
        }
        rows.append(row)
        print(
            f"| {kind} | {row['rate']:.0f} | {row['windows']} | {quiet:.2f} | "
            f"{row['elsewhere_fps']:.2f} | {row['flooded_fps']:.2f} | "
            f"{row['flooded_fps'] / quiet:.2f} | {row['flooded_fps'] / row['elsewhere_fps']:.2f} "
            f"| {row['osc_cpu']:.1%} of a core |"
        )
    flooded = mean([r["flooded_fps"] for r in rows])
    elsewhere = mean([r["elsewhere_fps"] for r in rows])
    summary = {
        "quiet_fps": quiet,
        "flooded_fps": flooded,
        "elsewhere_fps": elsewhere,
        "flooded_over_quiet": flooded / quiet,
        "flooded_over_elsewhere": flooded / elsewhere,
        "osc_cpu_max": max(r["osc_cpu"] for r in rows),
        "osc_log_lines": sum("realtime.control.osc" in line for line in lines),
        "log_bytes": log.stat().st_size,
        "status_errors_received": counter.errors,
        "tracebacks": sum("Traceback" in line for line in lines),
    }
    print(json.dumps(summary, indent=1))
    Path(args.json).write_text(json.dumps({"windows": windows, "rows": rows, **summary}, indent=1))
    return 0 if summary["flooded_over_elsewhere"] >= args.min_ratio else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command")
    s = sub.add_parser("send", help="flood one OSC port")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--kind", choices=KINDS, default="mixed")
    s.add_argument("--rate", type=float, default=5000.0, help="messages a second")
    s.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", help="capture size WxH (default: the preset's)")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each window")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the first window")
    ap.add_argument("--rounds", type=int, default=1, help="times each kind is flooded")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--rate", type=float, default=5000.0, help="messages a second")
    ap.add_argument("--min-ratio", type=float, default=0.9)
    ap.add_argument(
        "--flood-nice",
        type=int,
        default=0,
        help="niceness of the flooding process (at 19 on a busy 2-core machine it falls short "
        "of the rate: the table says what it sent)",
    )
    ap.add_argument("--json", default="osc_flood.json")
    args = ap.parse_args()
    if args.command == "send":
        print("sent", send(args.host, args.port, args.kind, args.rate, args.seconds))
        return 0
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
