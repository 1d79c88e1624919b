"""Choose the torch device the dream runs on (CUDA, Apple MPS or the CPU), the CPU's threads, and
how much of the CPU a virtual machine's host took."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from realtime.knobs import DEVICES as DEVICE_NAMES

logger = logging.getLogger(__name__)

THREADS_ENV = "DREAM_CPU_THREADS"  # overrides the CPU path's torch thread count


class DeviceError(RuntimeError):
    """A requested device does not exist on this machine."""


# Messages of CUDA errors after which the context is unusable: every later call fails too, and
# only a new process gets a working GPU back (CUDA runtime docs: "sticky" errors).
UNRECOVERABLE = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "illegal instruction",
    "misaligned address",
    "uncorrectable ECC error",
    "CUDA error: an illegal",
)


def is_unrecoverable(err: BaseException) -> bool:
    """Whether a device error leaves the CUDA context unusable for the rest of the process."""
    text = str(err)
    return isinstance(err, RuntimeError) and any(marker in text for marker in UNRECOVERABLE)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """Return the torch device for `name`.

    Args:
        name: "auto" (CUDA, then MPS, then CPU), "cuda", "cuda:N", "mps" or "cpu".

    Raises:
        DeviceError: the name is not one of the above, or that device is not available here.
    """
    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not _mps_available():
            raise DeviceError(
                "device 'mps' requested but Apple MPS is not available on this machine "
                "(needs macOS 12.3+ on Apple silicon and a PyTorch build with MPS); "
                "use --device auto or --device cpu"
            )
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{name}' requested but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}; "
                "check the NVIDIA driver with nvidia-smi); use --device auto or --device cpu"
            )
        index_text = key.partition(":")[2]
        if index_text:
            count = torch.cuda.device_count()
            if not index_text.isdigit() or int(index_text) >= count:
                raise DeviceError(
                    f"device '{name}' requested but this machine has {count} CUDA device(s); "
                    f"valid values are cuda:0 .. cuda:{count - 1}"
                )
        return torch.device(key)
    raise DeviceError(
        f"unknown device '{name}'; valid values are {', '.join(DEVICE_NAMES)} (or cuda:N)"
    )


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(stolen, total) CPU ticks of the whole machine since boot, from Linux's /proc/stat; None
    where there is none. "Stolen" is time a virtual machine's CPUs were ready to run but the
    host ran something else: on a shared cloud VM, the reason the same code runs slower at one
    hour than at another."""
    try:
        first = stat.read_text().split("\n", 1)[0].split()
        ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError) as err:
        logger.debug("no CPU steal figures from %s (%s)", stat, err)
        return None
    if first[0] != "cpu" or len(ticks) < 8:
        return None
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time the host took between two cpu_ticks() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


STEAL_NOTED = 0.05  # from this share up, a frame rate is reported with what the host took


def steal_note(share: float | None) -> str:
    """'the host took N% of the CPU' where it took a share worth naming, else ''."""
    if share is None or share < STEAL_NOTED:
        return ""
    return f"the host took {share:.0%} of the CPU"


def cpu_threads(threads: int | None = None) -> int:
    """The intra-op thread count for a CPU dream: `threads`, else $DREAM_CPU_THREADS if set,
    else every usable core (torch's own default may count physical cores only). Fewer than the
    cores can be faster when other busy processes share them: each parallel op waits for its
    slowest thread."""
    if threads is not None:
        return threads
    text = os.environ.get(THREADS_ENV, "").strip()
    threads = usable_cores()
    if text:
        if text.isdigit() and int(text) > 0:
            return int(text)
        logger.warning(
            "%s=%r is not a positive integer; using %d threads", THREADS_ENV, text, threads
        )
    return threads


# torch's CPU ops run on an OpenMP team that belongs to the thread calling them, and each thread
# has its own intra-op count: torch.set_num_threads sets the calling thread's, and a thread new to
# torch starts with the count last set anywhere, at its first parallel op. libgomp lets a team's
# workers wait for the next op by spinning only while the threads in all teams together are no
# more than the cores; past that they sleep after ~100 spins, and every op (hundreds a dream step)
# wakes them again. The main thread built the dreamer and so kept a team of 2 beside the dream
# thread's: on this 2-core VM the bench's cpu preset loop made 16.0, 13.8, 18.4 fps that way and
# 21.7, 18.2, 20.4 fps with the team the dream thread's alone (alternating runs, 2026-11-22). So
# the thread that dreams owns the team (Dreamer.dream calls tune_cpu), and every other thread that
# runs torch calls serial_cpu first.


def tune_cpu(threads: int | None = None) -> int:
    """Give the calling thread `threads` intra-op threads (see cpu_threads); returns the count."""
    threads = cpu_threads(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def serial_cpu() -> None:
    """Run torch on the calling thread alone, now and after another thread's tune_cpu."""
    torch.set_num_threads(1)
    torch.get_num_threads()  # fixes this thread's count: torch applies the last one set lazily
