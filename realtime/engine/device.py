"""Choose the torch device the dream runs on: CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import logging
import os

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
