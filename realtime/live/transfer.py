"""Frame transfers between host and device through buffers reused every frame (pinned on CUDA)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class TransferError(ValueError):
    """A frame handed to an Uploader or Downloader has the wrong shape or type."""


def _pinned(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """A uint8 host buffer; page-locked when the device is CUDA, so copies to it can be async."""
    return torch.empty(shape, dtype=torch.uint8, pin_memory=device.type == "cuda")


# One-shot conversions: the plain reference for the reused buffers below, and for single stills.


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1] on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(image))  # (H, W, 3) uint8
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    return t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)  # (1, 3, H, W)


def to_image(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8 RGB on the host."""
    return (t[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)).cpu().numpy()


class Uploader:
    """(H, W, 3) uint8 RGB numpy frames -> (1, 3, H, W) float32 in [0, 1] on the device.

    Each call copies the frame into a host buffer (pinned on CUDA), starts an async copy of it to
    a device uint8 buffer and converts that into a device float buffer: three buffers reused
    for every frame of one size, reallocated only when the size changes. No host sync except a
    wait, before overwriting the host buffer, for the previous frame's copy out of it (long done
    in the dream loop, which reads back each frame before uploading the next).

    One thread (the dream thread) uses an instance. The returned tensor is the reused device
    buffer: it is valid until the next call, so copy it if it must outlive that.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._host: Tensor | None = None  # (H, W, 3) uint8, pinned on CUDA
        self._host_np: np.ndarray | None = None  # numpy view of _host
        self._staged: Tensor | None = None  # (H, W, 3) uint8 on the device
        self._out: Tensor | None = None  # (1, 3, H, W) float32 on the device
        self._copied: torch.cuda.Event | None = None  # recorded after the host -> device copy
        self.allocations = 0  # how many times the buffers were (re)allocated

    def _allocate(self, shape: tuple[int, int, int]) -> None:
        h, w, _ = shape
        if self._copied is not None:
            self._copied.synchronize()  # the old pinned buffer may still be read by a copy
        self._staged = torch.empty(shape, dtype=torch.uint8, device=self.device)
        if self._cuda:
            self._host = _pinned(shape, self.device)
            self._copied = torch.cuda.Event()
        else:
            self._host = self._staged  # the device is the host: no staging copy needed
        self._host_np = self._host.numpy()
        self._out = torch.empty((1, 3, h, w), dtype=torch.float32, device=self.device)
        self.allocations += 1

    def __call__(self, image: np.ndarray) -> Tensor:
        """Upload one frame; returns the reused (1, 3, H, W) float32 device buffer."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise TransferError(f"expected an (H, W, 3) uint8 RGB array, got shape {shape}")
        if image.dtype != np.uint8:
            raise TransferError(f"expected an (H, W, 3) uint8 RGB array, got dtype {image.dtype}")
        if self._host is None or tuple(self._host.shape) != image.shape:
            self._allocate(image.shape)
        elif self._copied is not None:
            self._copied.synchronize()  # normally long complete: the last frame was read back
        np.copyto(self._host_np, image)
        if self._cuda:
            self._staged.copy_(self._host, non_blocking=True)  # async: the buffer is pinned
            self._copied.record()
        chw = self._staged.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8 view
        return self._out.copy_(chw).div_(255.0)  # (1, 3, H, W) float32 in [0, 1]


class Downloader:
    """(1, 3, H, W) float in [0, 1] on the device -> (H, W, 3) uint8 RGB numpy on the host.

    The conversion to uint8 (clamp, scale, round) happens on the device into reused buffers, so
    only a quarter of the bytes cross the bus; an async copy into a pinned host buffer is
    followed by the one host sync of the frame (an event). The result is copied out of the
    pinned buffer (a 1280x720 frame is a ~1 ms memcpy), because the display and the recorder
    keep it while the next frame is read back.

    One thread (the dream thread) uses an instance.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._scaled: Tensor | None = None  # (1, 3, H, W) float32 on the device
        self._staged: Tensor | None = None  # (H, W, 3) uint8 on the device
        self._host: Tensor | None = None  # (H, W, 3) uint8, pinned on CUDA
        self._host_np: np.ndarray | None = None  # numpy view of _host
        self._copied: torch.cuda.Event | None = None  # recorded after the device -> host copy
        self.allocations = 0  # how many times the buffers were (re)allocated

    def _allocate(self, h: int, w: int) -> None:
        self._scaled = torch.empty((1, 3, h, w), dtype=torch.float32, device=self.device)
        self._staged = torch.empty((h, w, 3), dtype=torch.uint8, device=self.device)
        if self._cuda:
            self._host = _pinned((h, w, 3), self.device)
            self._copied = torch.cuda.Event()
        else:
            self._host = self._staged
        self._host_np = self._host.numpy()
        self.allocations += 1

    def __call__(self, t: Tensor) -> np.ndarray:
        """Read one frame back; returns a fresh (H, W, 3) uint8 array the caller owns."""
        if t.ndim != 4 or t.shape[:2] != (1, 3) or not t.is_floating_point():
            raise TransferError(
                f"expected a (1, 3, H, W) float tensor, got {tuple(t.shape)} {t.dtype}"
            )
        if t.device != self.device and not (t.device.type == self.device.type == "cuda"):
            raise TransferError(f"expected a tensor on {self.device}, got one on {t.device}")
        h, w = t.shape[-2:]
        if self._scaled is None or self._scaled.shape[-2:] != (h, w):
            self._allocate(h, w)
        scaled = self._scaled
        torch.mul(t.detach(), 255.0, out=scaled)  # (1, 3, H, W) float32 on the 0..255 scale
        scaled.clamp_(0.0, 255.0).round_()
        self._staged.copy_(scaled[0].permute(1, 2, 0))  # (H, W, 3) uint8: exact integers
        if self._cuda:
            self._host.copy_(self._staged, non_blocking=True)
            self._copied.record()
            self._copied.synchronize()  # the frame's one read-back wait
        return self._host_np.copy()
