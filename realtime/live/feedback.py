"""Temporal feedback: the previous dream, warped along the camera's optical flow, blended back in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class FeedbackError(ValueError):
    """Bad feedback settings or frames that do not fit together."""


@dataclass
class FeedbackConfig:
    """How much of the previous dreamed output each new frame keeps, and how it moves."""

    amount: float = 0.6  # 0..1 share of the previous output in the next input (0 = camera only)
    flow: bool = True  # warp the previous output along the camera's optical flow
    # Width in px at which DIS flow is computed. 160 px costs ~1 ms a frame on one CPU core with
    # the ultrafast preset, and the motion of people in a room is smooth at that scale; DIS gives
    # sub-pixel flow, so at a 640 px dream it is still better than a pixel after upscaling.
    flow_width: int = 160
    zoom: float = 1.0  # per-frame scale of the feedback; > 1 zooms in (the infinite-zoom dream)
    rotate: float = 0.0  # degrees per frame the feedback turns, counter-clockwise on screen

    def __post_init__(self) -> None:
        check_settings(self.amount, self.zoom, self.rotate)
        if not 16 <= self.flow_width <= 4096:
            raise FeedbackError(f"feedback.flow_width: expected 16..4096 px, got {self.flow_width}")


def check_settings(amount: float, zoom: float, rotate: float) -> None:
    """Raise FeedbackError unless amount is in 0..1, zoom in 0.5..2 and rotate in -180..180."""
    if not 0.0 <= amount <= 1.0:
        raise FeedbackError(f"feedback amount: expected 0..1, got {amount}")
    if not 0.5 <= zoom <= 2.0:  # beyond a factor 2 per frame the picture is gone in a few frames
        raise FeedbackError(f"feedback zoom: expected 0.5..2 per frame, got {zoom}")
    if not -180.0 <= rotate <= 180.0:
        raise FeedbackError(f"feedback rotate: expected -180..180 degrees per frame, got {rotate}")


class Feedback:
    """Keeps the previous output and blends it, motion-compensated, into each new camera frame.

    Not thread-safe: one thread (the dream thread) calls apply(), remember() and reset().
    """

    def __init__(self, device: torch.device | str, flow_width: int = 160) -> None:
        self.device = torch.device(device)
        self.flow_width = flow_width
        # DIS "ultrafast": coarse-to-fine patch search, built for real time on a CPU.
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._prev_out: Tensor | None = None  # (1, 3, H, W) float32, the last remembered output
        self._prev_gray: np.ndarray | None = None  # (h, w) uint8, last camera at flow size
        self._base_key: tuple[int, int] | None = None
        self._base: Tensor | None = None  # (1, H, W, 2) identity sampling grid
        self._affine_key: tuple[int, int, float, float] | None = None
        self._affine: tuple[Tensor, Tensor] | None = None  # (1, H, W, 2) grid, (2, 2) matrix

    def reset(self) -> None:
        """Forget the previous output: the next apply() returns the camera frame."""
        self._prev_out = None
        self._prev_gray = None

    def remember(self, output_t: Tensor) -> None:
        """Store the dreamed output (1, 3, H, W) in [0, 1] for the next frame (copied)."""
        if output_t.ndim != 4 or output_t.shape[:2] != (1, 3):
            raise FeedbackError(
                f"expected an output of shape (1, 3, H, W), got {tuple(output_t.shape)}"
            )
        output_t = output_t.detach()
        prev = self._prev_out
        if prev is not None and prev.shape == output_t.shape and prev.device == output_t.device:
            prev.copy_(output_t)  # reuse the buffer: no allocation per frame
        else:
            self._prev_out = output_t.to(dtype=torch.float32, copy=True)

    @torch.no_grad()
    def apply(
        self,
        camera_t: Tensor,
        camera_np: np.ndarray,
        amount: float,
        flow: bool = True,
        zoom: float = 1.0,
        rotate: float = 0.0,
    ) -> Tensor:
        """The next input to dream: (1 - amount) * camera + amount * warped previous output.

        Args:
            camera_t: the new camera frame, (1, 3, H, W) float in [0, 1] on the device.
            camera_np: the same frame as (H, W, 3) uint8 RGB, for the optical flow.
            amount: share of the previous output, 0..1.
            flow: warp the previous output along the motion from the last camera frame.
            zoom: scale of the feedback per frame; > 1 zooms in.
            rotate: degrees per frame, counter-clockwise.

        Returns:
            (1, 3, H, W) float on the device; the camera frame itself on the first frame, after
            reset(), or when the size changed.
        """
        check_settings(amount, zoom, rotate)
        if camera_t.ndim != 4 or camera_t.shape[:2] != (1, 3):
            raise FeedbackError(
                f"expected camera_t of shape (1, 3, H, W), got {tuple(camera_t.shape)}"
            )
        h, w = camera_t.shape[-2:]
        if camera_np.shape != (h, w, 3) or camera_np.dtype != np.uint8:
            raise FeedbackError(
                f"expected camera_np as ({h}, {w}, 3) uint8 to match camera_t, "
                f"got {camera_np.shape} {camera_np.dtype}"
            )
        gray = self._flow_gray(camera_np)  # (h', w') uint8
        prev_gray, self._prev_gray = self._prev_gray, gray
        prev = self._prev_out  # (1, 3, H, W)
        if prev is None or prev.shape[-2:] != (h, w) or amount == 0.0:
            return camera_t
        turned = zoom != 1.0 or rotate != 0.0
        if turned:
            grid, matrix = self._affine_grid(h, w, zoom, rotate)  # (1, H, W, 2), (2, 2)
        else:
            grid, matrix = self._base_grid(h, w), None  # (1, H, W, 2)
        if flow and prev_gray is not None and prev_gray.shape == gray.shape:
            offset = self._flow_offset(gray, prev_gray, h, w)  # (1, H, W, 2)
            if matrix is not None:
                offset = offset @ matrix.T  # A (p + f) = A p + A f: zoom the flow's target too
            grid = grid + offset
        elif not turned:
            return torch.lerp(camera_t, prev.to(camera_t.dtype), amount)
        warped = F.grid_sample(
            prev, grid, mode="bilinear", padding_mode="border", align_corners=False
        )  # (1, 3, H, W)
        return torch.lerp(camera_t, warped.to(camera_t.dtype), amount)

    # -- helpers -----------------------------------------------------------------------------

    def _flow_gray(self, camera_np: np.ndarray) -> np.ndarray:
        """The frame in grey at flow_width (never enlarged)."""
        h, w = camera_np.shape[:2]
        gray = cv2.cvtColor(camera_np, cv2.COLOR_RGB2GRAY)
        if w <= self.flow_width:
            return gray
        size = (self.flow_width, max(1, round(h * self.flow_width / w)))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)

    def _flow_offset(self, gray: np.ndarray, prev_gray: np.ndarray, h: int, w: int) -> Tensor:
        """Backward flow (current -> previous) as offsets in grid_sample's [-1, 1] units."""
        # calc(I0, I1) finds f with I0(x) ~ I1(x + f(x)): each current pixel learns where its
        # content was in the previous frame, which is where to sample the previous output.
        field = self._dis.calc(gray, prev_gray, None)  # (h', w', 2) float32 px at flow size
        fh, fw = field.shape[:2]
        field_t = torch.from_numpy(field).to(self.device).permute(2, 0, 1)[None]  # (1, 2, h', w')
        # One pixel is 2 / width in normalised units, whatever the resolution: scale first, then
        # upsample, and the offsets hold at the full size.
        field_t[:, 0] *= 2.0 / fw
        field_t[:, 1] *= 2.0 / fh
        if (fh, fw) != (h, w):
            field_t = F.interpolate(field_t, size=(h, w), mode="bilinear", align_corners=False)
        return field_t.permute(0, 2, 3, 1)  # (1, H, W, 2)

    def _base_grid(self, h: int, w: int) -> Tensor:
        if self._base_key != (h, w) or self._base is None:
            identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=self.device)
            self._base = F.affine_grid(identity, [1, 3, h, w], align_corners=False)
            self._base_key = (h, w)
        return self._base  # (1, H, W, 2)

    def _affine_grid(self, h: int, w: int, zoom: float, rotate: float) -> tuple[Tensor, Tensor]:
        """Sampling grid for a zoom and turn about the centre, and its (2, 2) matrix."""
        key = (h, w, zoom, rotate)
        if self._affine_key != key or self._affine is None:
            # Output pixel p samples the feedback at R p / zoom. Rotation is done in pixel units
            # (normalised x and y differ in scale when w != h), then mapped back.
            c, s = math.cos(math.radians(rotate)), math.sin(math.radians(rotate))
            m = [[c / zoom, -s * (h / w) / zoom], [s * (w / h) / zoom, c / zoom]]
            matrix = torch.tensor(m, device=self.device)  # (2, 2)
            theta = torch.zeros(1, 2, 3, device=self.device)
            theta[0, :, :2] = matrix
            grid = F.affine_grid(theta, [1, 3, h, w], align_corners=False)  # (1, H, W, 2)
            self._affine, self._affine_key = (grid, matrix), key
        return self._affine
