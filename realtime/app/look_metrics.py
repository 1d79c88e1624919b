"""How good the live look is, in numbers: steadiness (warp error), ghosting after a cut, strength.

Steadiness follows Lai et al. 2018 ("Learning Blind Video Temporal Consistency"): the mean
squared difference between output t and output t-1 warped by the optical flow of the *input*
frames, over the pixels where that flow is consistent forwards and backwards, minus the same
quantity for the input itself (the floor: what flow error and lighting leave even in a perfectly
steady video). The flow here is Farneback's, a different estimator from the DIS flow that the
feedback uses, so the feedback is not graded by its own estimate.

All images are (H, W, 3) uint8 RGB; errors are on the 0..255 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# Farneback parameters (OpenCV's sample values: 3 levels at half scale, 15 px windows).
_FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}
# Forward-backward consistency (Sundaram et al. 2010, as Ruder et al. 2016 use it): a pixel is
# consistent when |f + b|^2 < 0.01 (|f|^2 + |b|^2) + 0.5 px^2.
_FB_RELATIVE, _FB_ABSOLUTE = 0.01, 0.5
GHOST_SIZE = 32  # px; width of the grey thumbnails compared for ghosting (texture averages out)
GHOST_MARGIN = 0.05  # correlation by which the output must resemble the old scene more than the
# new input does to count as a ghost frame
MAX_GHOST = 30  # frames looked at after a cut


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farneback flow f with a(p) ~ b(p + f(p)): (H, W, 2) float32 pixels (x, y)."""
    return cv2.calcOpticalFlowFarneback(_grey(a), _grey(b), None, **_FARNEBACK)


def warp(image: np.ndarray, f: np.ndarray) -> np.ndarray:
    """image sampled at p + f(p): brings `image` (frame t-1) onto frame t with backward flow."""
    h, w = f.shape[:2]
    grid = np.indices((h, w), dtype=np.float32)[::-1].transpose(1, 2, 0)  # (H, W, 2) x, y
    m = grid + f
    return cv2.remap(image, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(H, W) bool: where backward flow (t -> t-1) and forward flow (t-1 -> t) agree, and the
    sample stays inside the frame."""
    fwd_at = warp(forward, backward)  # forward flow at where each pixel of t came from
    total = backward + fwd_at
    lhs = (total**2).sum(-1)
    rhs = _FB_RELATIVE * ((backward**2).sum(-1) + (fwd_at**2).sum(-1)) + _FB_ABSOLUTE
    h, w = backward.shape[:2]
    ys, xs = np.indices((h, w), dtype=np.float32)
    x, y = xs + backward[..., 0], ys + backward[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return (lhs < rhs) & inside


@dataclass(frozen=True)
class Steadiness:
    """Warp errors of a clip (mean squared, 0..255 scale, over consistent pixels)."""

    output: float  # of the output
    floor: float  # of the input: what a perfectly steady effect would score
    pairs: int  # frame pairs measured (pairs across a cut are left out)

    @property
    def above_floor(self) -> float:
        return self.output - self.floor


def steadiness(
    inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], cuts: Sequence[int] = ()
) -> Steadiness:
    """Warp error of `outputs` against the flow of `inputs`, and the inputs' own (the floor).

    Args:
        inputs, outputs: frames of the same length and size.
        cuts: indices t where a new scene starts (the pair t-1, t is skipped).
    """
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError(f"need two or more frames each, got {len(inputs)} and {len(outputs)}")
    skip = set(cuts)
    out_sum = in_sum = 0.0
    count = 0
    pairs = 0
    for t in range(1, len(inputs)):
        if t in skip:
            continue
        back = flow(inputs[t], inputs[t - 1])  # t -> t-1: where each pixel of t was
        fwd = flow(inputs[t - 1], inputs[t])
        mask = consistent(back, fwd)
        n = int(mask.sum())
        if n == 0:
            continue
        for frames, acc in ((outputs, "out"), (inputs, "in")):
            prev = warp(frames[t - 1], back).astype(np.float32)
            err = ((frames[t].astype(np.float32) - prev) ** 2).mean(-1)[mask].sum()
            if acc == "out":
                out_sum += float(err)
            else:
                in_sum += float(err)
        count += n
        pairs += 1
    if count == 0:
        return Steadiness(0.0, 0.0, 0)
    return Steadiness(out_sum / count, in_sum / count, pairs)


def strength(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean |output - input| over every pixel of every frame, 0..255: how much is dreamed."""
    total = sum(
        float(np.abs(o.astype(np.int16) - i.astype(np.int16)).mean())
        for i, o in zip(inputs, outputs, strict=True)
    )
    return total / len(inputs)


def _thumb(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    size = (GHOST_SIZE, max(1, round(GHOST_SIZE * h / w)))
    small = cv2.resize(_grey(image), size, interpolation=cv2.INTER_AREA).astype(np.float32)
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float((_thumb(a) * _thumb(b)).sum())


def ghost_frames(
    inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], cut: int, limit: int = MAX_GHOST
) -> int:
    """Frames after a cut at `cut` for which the output still resembles the old scene (the last
    input before the cut) more than the new input does, by GHOST_MARGIN in correlation of grey
    thumbnails; counted until the first frame that does not."""
    old = inputs[cut - 1]
    frames = 0
    for t in range(cut, min(cut + limit, len(inputs))):
        if _ncc(outputs[t], old) > _ncc(inputs[t], old) + GHOST_MARGIN:
            frames += 1
        else:
            break
    return frames


def find_cuts(inputs: Sequence[np.ndarray], threshold: float = 0.5) -> list[int]:
    """Indices t where frame t is a new scene: the grey thumbnails of t-1 and t correlate below
    `threshold` (a cut drops correlation to ~0; motion within a shot keeps it near 1)."""
    return [t for t in range(1, len(inputs)) if _ncc(inputs[t], inputs[t - 1]) < threshold]
