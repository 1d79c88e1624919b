"""Temporal feedback: the previous dream, moved along the camera's optical flow, into the next frame.

What is carried (feedback.carry):
- "detail": the dream's detail, output minus camera, warped along the flow and added to the new
  camera frame. The scene itself is always the camera's, so it never double-exposes, and the
  hallucination sticks to what moves.
- "frame": the whole previous output cross-faded with the new frame (the classic infinite-zoom
  look with feedback.zoom).

The change each frame's dream makes is smoothed over time too (feedback.smooth): the new change
is blended with the last frames' (moved along the flow like the detail). The jitter of each step
makes part of every change random; that part averages out, while what the dream keeps finding
adds up, so the hallucination grows steadily instead of shimmering.

Where the flow cannot be trusted (forward and backward flow disagree: occlusions, someone
stepping in, fast motion) the feedback there is dropped and the camera taken, as Ruder et al.
2016 do for video style transfer. A scene cut (consecutive frames no longer alike) clears it.
feedback.amount = 0 turns every carry off: each frame is dreamed on its own.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from realtime.knobs import FeedbackConfig

# Forward-backward consistency (Sundaram et al. 2010): a pixel is trusted when
# |b + f(p + b)|^2 < 0.01 (|b|^2 + |f(p + b)|^2) + 0.5, in flow-size pixels.
_FB_RELATIVE, _FB_ABSOLUTE = 0.01, 0.5
CUT_WIDTH = 32  # px; cuts are judged on grey thumbnails this wide (motion within a shot keeps
# them alike, a new scene does not)


class FeedbackError(ValueError):
    """Frames or outputs that do not fit together."""


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A zero-mean, unit-norm grey thumbnail CUT_WIDTH wide, for likeness by dot product."""
    h, w = gray.shape[:2]
    small = cv2.resize(
        gray, (CUT_WIDTH, max(1, round(CUT_WIDTH * h / w))), interpolation=cv2.INTER_AREA
    )
    small = small.astype(np.float32)
    small -= small.mean()
    return small / (float(np.linalg.norm(small)) + 1e-6)


def _square_norm(v: np.ndarray) -> np.ndarray:
    """|v|^2 of an (h, w, 2) field: the same values as (v**2).sum(-1), about 7x faster (numpy's
    reduction over an axis of two is slow; the consistency check took 1.3 ms a frame that way)."""
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]


def flow_consistency(back: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """(h, w) bool: where following the backward flow (t -> t-1) and then the forward flow
    (t-1 -> t) returns home, and the sample lies inside the frame. Flows are (h, w, 2) px."""
    h, w = back.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = xs + back[..., 0], ys + back[..., 1]
    fwd_at = cv2.remap(fwd, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lhs = _square_norm(back + fwd_at)
    rhs = _FB_RELATIVE * (_square_norm(back) + _square_norm(fwd_at)) + _FB_ABSOLUTE
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return (lhs < rhs) & inside


class Feedback:
    """Keeps what the previous dream added and brings it, motion-compensated, into each new frame.

    Not thread-safe: one thread (the dream thread) calls apply(), remember() and reset().
    """

    def __init__(self, device: torch.device | str, flow_width: int = 160) -> None:
        self.device = torch.device(device)
        self.flow_width = flow_width
        # DIS "ultrafast": coarse-to-fine patch search, built for real time on a CPU.
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._prev: Tensor | None = None  # (1, 3, H, W) float32: detail or whole output
        self._prev_carry: str | None = None  # what _prev holds
        self._change: Tensor | None = None  # (1, 3, H, W): the smoothed dream change so far
        self._change_in: Tensor | None = None  # the same, moved onto this frame by apply()
        self._prev_gray: np.ndarray | None = None  # (h, w) uint8, last camera at flow size
        self._prev_thumb: np.ndarray | None = None
        self._base_key: tuple[int, int] | None = None
        self._base: Tensor | None = None  # (1, H, W, 2) identity sampling grid
        self._affine_key: tuple[int, int, float, float] | None = None
        self._affine: tuple[Tensor, Tensor] | None = None  # (1, H, W, 2) grid, (2, 2) matrix
        self.cuts = 0  # scene cuts seen
        self.trusted = 1.0  # share of the last frame's pixels whose flow was consistent

    def reset(self) -> None:
        """Forget the previous dream: the next apply() returns the camera frame."""
        self._prev = None
        self._change = None
        self._change_in = None
        self._prev_gray = None
        self._prev_thumb = None

    def steady(self, x: Tensor, dreamed: Tensor, cfg: FeedbackConfig) -> Tensor:
        """The dreamed frame with its change (dreamed - x) blended with the last frames'.

        What the dream keeps finding is the same change every frame, and the blend keeps it
        whole; what differs from frame to frame (the jitter's part) averages out. Nothing is
        rescaled: a larger share of random change simply makes a smaller step.

        Args:
            x: what was dreamed from (apply()'s result), (1, 3, H, W).
            dreamed: the dream's result for it.

        Returns:
            x plus the smoothed change, clamped to [0, 1]; `dreamed` itself when smoothing is
            off or nothing came before.
        """
        change = dreamed - x
        before, self._change_in = self._change_in, None
        if cfg.amount == 0.0 or cfg.smooth == 0.0 or before is None or before.shape != change.shape:
            self._change = change
            return dreamed
        smoothed = torch.lerp(change, before, cfg.smooth)  # (1, 3, H, W)
        self._change = smoothed
        return (x + smoothed).clamp_(0.0, 1.0)

    def remember(self, output_t: Tensor, camera_t: Tensor, cfg: FeedbackConfig) -> None:
        """Keep what this frame's dream carries into the next: (1, 3, H, W) in [0, 1] each."""
        if output_t.ndim != 4 or output_t.shape[:2] != (1, 3) or output_t.shape != camera_t.shape:
            raise FeedbackError(
                f"expected output and camera of one shape (1, 3, H, W), got "
                f"{tuple(output_t.shape)} and {tuple(camera_t.shape)}"
            )
        output_t = output_t.detach().float()
        prev = self._prev
        if prev is None or prev.shape != output_t.shape or prev.device != output_t.device:
            prev = self._prev = torch.empty_like(output_t)  # reused: no allocation per frame
        if cfg.carry == "detail":
            torch.sub(output_t, camera_t.float(), out=prev)
        else:
            prev.copy_(output_t)
        self._prev_carry = cfg.carry

    @torch.no_grad()
    def apply(self, camera_t: Tensor, camera_np: np.ndarray, cfg: FeedbackConfig) -> Tensor:
        """The next input to dream: the camera frame plus the carried dream.

        Args:
            camera_t: the new camera frame, (1, 3, h, w) float in [0, 1] on the device (maybe
                a smaller copy: the feedback lives at the dream's size).
            camera_np: the frame as (H, W, 3) uint8 RGB, for the optical flow.
            cfg: amount, carry, flow, flow_check, cut_threshold, zoom, rotate.

        Returns:
            (1, 3, H, W) float on the device; the camera frame itself on the first frame, after
            reset() or a cut, or when the size changed.
        """
        if camera_t.ndim != 4 or camera_t.shape[:2] != (1, 3):
            raise FeedbackError(
                f"expected camera_t of shape (1, 3, H, W), got {tuple(camera_t.shape)}"
            )
        h, w = camera_t.shape[-2:]
        if camera_np.ndim != 3 or camera_np.shape[2] != 3 or camera_np.dtype != np.uint8:
            raise FeedbackError(
                f"expected camera_np as (H, W, 3) uint8 (the frame camera_t was made from), "
                f"got {camera_np.shape} {camera_np.dtype}"
            )
        gray = self._flow_gray(camera_np)  # (h', w') uint8
        thumb = thumbnail(gray)
        prev_gray, self._prev_gray = self._prev_gray, gray
        prev_thumb, self._prev_thumb = self._prev_thumb, thumb
        prev = self._prev  # (1, 3, H, W)
        self.trusted = 1.0
        self._change_in = None
        if (
            prev is None
            or prev.shape[-2:] != (h, w)
            or cfg.amount == 0.0
            or self._prev_carry != cfg.carry
        ):
            return camera_t
        if cfg.cut_threshold > 0 and prev_thumb is not None and prev_thumb.shape == thumb.shape:
            if float((prev_thumb * thumb).sum()) < cfg.cut_threshold:  # a new scene
                self.cuts += 1
                self._prev = self._change = None
                return camera_t
        turned = cfg.zoom != 1.0 or cfg.rotate != 0.0
        if turned:
            grid, matrix = self._affine_grid(h, w, cfg.zoom, cfg.rotate)  # (1, H, W, 2), (2, 2)
        else:
            grid, matrix = self._base_grid(h, w), None  # (1, H, W, 2)
        weight: Tensor | float = cfg.amount
        if cfg.flow and prev_gray is not None and prev_gray.shape == gray.shape:
            offset, trust = self._flow(gray, prev_gray, h, w, cfg.flow_check)  # (1,H,W,2), mask
            if matrix is not None:
                offset = offset @ matrix.T  # A (p + f) = A p + A f: zoom the flow's target too
            grid = grid + offset
            if trust is not None:
                weight = trust * cfg.amount  # (1, 1, H, W)
        elif not turned:
            self._change_in = self._trusted_change(self._change, weight, cfg.amount)
            return self._combine(camera_t, prev, weight, cfg.carry)
        # Outside the frame there is no detail to carry (zeros); a whole frame repeats its edge.
        padding = "zeros" if cfg.carry == "detail" else "border"
        warped = F.grid_sample(
            prev, grid, mode="bilinear", padding_mode=padding, align_corners=False
        )
        if self._change is not None and self._change.shape == prev.shape:
            moved = F.grid_sample(
                self._change, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            self._change_in = self._trusted_change(moved, weight, cfg.amount)
        return self._combine(camera_t, warped, weight, cfg.carry)

    @staticmethod
    def _trusted_change(change: Tensor | None, weight: Tensor | float, amount: float):
        """The smoothed change where the flow is trusted (weight is amount times the trust)."""
        if change is None:
            return None
        return change if isinstance(weight, float) else change * (weight / amount)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _combine(camera_t: Tensor, carried: Tensor, weight: Tensor | float, carry: str) -> Tensor:
        carried = carried.to(camera_t.dtype)
        if carry == "detail":
            return (camera_t + carried * weight).clamp_(0.0, 1.0)  # (1, 3, H, W)
        return torch.lerp(camera_t, carried, weight)

    def _flow_gray(self, camera_np: np.ndarray) -> np.ndarray:
        """The frame in grey at flow_width (never enlarged)."""
        h, w = camera_np.shape[:2]
        gray = cv2.cvtColor(camera_np, cv2.COLOR_RGB2GRAY)
        if w <= self.flow_width:
            return gray
        size = (self.flow_width, max(1, round(h * self.flow_width / w)))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)

    def _flow(
        self, gray: np.ndarray, prev_gray: np.ndarray, h: int, w: int, check: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Backward flow (current -> previous) as offsets in grid_sample's [-1, 1] units, and
        where checked, the (1, 1, H, W) trust in it: 1 where the forward flow agrees, else 0."""
        # calc(I0, I1) finds f with I0(x) ~ I1(x + f(x)): each current pixel learns where its
        # content was in the previous frame, which is where to sample the previous dream.
        back = self._dis.calc(gray, prev_gray, None)  # (h', w', 2) float32 px at flow size
        trust = None
        if check:
            fwd = self._dis.calc(prev_gray, gray, None)
            trust = cv2.blur(flow_consistency(back, fwd).astype(np.float32), (3, 3))  # soft edges
        fh, fw = back.shape[:2]
        field = torch.from_numpy(back).to(self.device).permute(2, 0, 1)[None]  # (1, 2, h', w')
        # One pixel is 2 / width in normalised units, whatever the resolution: scale first, then
        # upsample, and the offsets hold at the full size.
        field[:, 0] *= 2.0 / fw
        field[:, 1] *= 2.0 / fh
        if (fh, fw) != (h, w):
            field = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=False)
        mask = None
        if trust is not None:
            self.trusted = float(trust.mean())
            mask = torch.from_numpy(trust).to(self.device)[None, None]  # (1, 1, h', w')
            if (fh, fw) != (h, w):
                mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
        return field.permute(0, 2, 3, 1), mask  # (1, H, W, 2), (1, 1, H, W)

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
