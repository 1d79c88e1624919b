"""Choose the torch device the dream runs on: CUDA, Apple MPS or the CPU."""

from __future__ import annotations

import torch

DEVICE_NAMES = ("auto", "cuda", "mps", "cpu")


class DeviceError(RuntimeError):
    """A requested device does not exist on this machine."""


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
