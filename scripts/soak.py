#!/usr/bin/env python3
"""Soak test: run the installation headless for many frames and watch its resident memory.

Runs `installation.py` as a child process (the real thing: capture thread, dream loop, OSC,
watchdog) and samples its RSS from /proc every few seconds. Prints a table and exits non-zero
if memory grew by more than --max-growth-mb between the end of warm-up and the end.

    python scripts/soak.py                       # 10,000 frames, CPU, 128x72, demo source
    python scripts/soak.py --frames 200000 --device cuda --size 1280x720   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else None


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", default="128x72")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--warmup", type=float, default=0.1, help="share of frames before the baseline")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--max-growth-mb", type=float, default=50.0)
    ap.add_argument("--json", default="soak.json")
    args = ap.parse_args()

    log = Path(args.json).with_suffix(".log")
    cmd = [
        sys.executable,
        str(ROOT / "installation.py"),
        "--config",
        args.config,
        "--source",
        "demo",
        "--headless",
        "--frames",
        str(args.frames),
        "--size",
        args.size,
        "--device",
        args.device,
        "--osc-port",
        "0",
        "--set",
        "capture.fps=240",
        "--set",
        "log.stats_interval=30",
    ]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        samples = []
        while proc.poll() is None:
            mb = rss_mb(proc.pid)
            if mb is not None:
                samples.append((time.monotonic() - t0, mb))
                print(f"{samples[-1][0]:8.0f} s  rss {mb:8.1f} MB", flush=True)
            time.sleep(args.interval)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0 or len(samples) < 3:
        print(f"soak failed: exit {proc.returncode}, {len(samples)} samples; see {log}")
        return 1
    base = samples[max(1, int(len(samples) * args.warmup))][1]
    peak, end = max(mb for _, mb in samples), samples[-1][1]
    errors = sum(" ERROR " in line for line in log.read_text().splitlines())
    result = {
        "frames": args.frames,
        "size": args.size,
        "device": args.device,
        "seconds": round(elapsed),
        "fps": round(args.frames / elapsed, 1),
        "rss_after_warmup_mb": round(base, 1),
        "rss_end_mb": round(end, 1),
        "rss_peak_mb": round(peak, 1),
        "growth_mb": round(end - base, 1),
        "error_lines": errors,
    }
    Path(args.json).write_text(json.dumps(result, indent=2))
    print("| frames | size | device | time | fps | RSS after warm-up | RSS end | peak | growth |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.frames} | {args.size} | {args.device} | {elapsed:.0f} s | {result['fps']} | "
        f"{base:.1f} MB | {end:.1f} MB | {peak:.1f} MB | {end - base:+.1f} MB |"
    )
    if end - base > args.max_growth_mb:
        print(f"FAIL: memory grew {end - base:.1f} MB > {args.max_growth_mb} MB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
