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

from realtime.live.feedback import flow_consistency, thumbnail

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


@dataclass(frozen=True)
class Steadiness:
    """Warp errors of a clip (mean squared, 0..255 scale, over consistent pixels)."""

    output: float  # of the output
    floor: float  # of the input: what a perfectly steady effect would score
    pairs: int  # frame pairs measured (pairs across a cut are left out)

    @property
    def above_floor(self) -> float:
        return self.output - self.floor


@dataclass(frozen=True)
class Motion:
    """The input clip's own motion, computed once and used to grade every output of it: for each
    frame pair (t-1, t) within a shot, the backward flow and where it is consistent."""

    pairs: tuple[tuple[int, np.ndarray, np.ndarray], ...]  # (t, flow t -> t-1, (H, W) bool mask)


def motion(inputs: Sequence[np.ndarray], cuts: Sequence[int] = ()) -> Motion:
    """Farneback flow both ways between consecutive inputs, skipping pairs across a cut."""
    skip = set(cuts)
    pairs = []
    for t in range(1, len(inputs)):
        if t in skip:
            continue
        back = flow(inputs[t], inputs[t - 1])  # t -> t-1: where each pixel of t was
        mask = flow_consistency(back, flow(inputs[t - 1], inputs[t]))
        if mask.any():
            pairs.append((t, back, mask))
    return Motion(tuple(pairs))


def warp_error(frames: Sequence[np.ndarray], moved: Motion) -> float:
    """Mean squared difference (0..255 scale) between frame t and frame t-1 warped onto it, over
    the consistent pixels of every pair."""
    total, count = 0.0, 0
    for t, back, mask in moved.pairs:
        prev = warp(frames[t - 1], back).astype(np.float32)
        total += float(((frames[t].astype(np.float32) - prev) ** 2).mean(-1)[mask].sum())
        count += int(mask.sum())
    return total / count if count else 0.0


def steadiness(
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    cuts: Sequence[int] = (),
    moved: Motion | None = None,
) -> Steadiness:
    """Warp error of `outputs` against the flow of `inputs`, and the inputs' own (the floor).

    Args:
        inputs, outputs: frames of the same length and size.
        cuts: indices t where a new scene starts (the pair t-1, t is skipped).
        moved: motion(inputs, cuts), when it is already known (it costs two flows a frame).
    """
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError(f"need two or more frames each, got {len(inputs)} and {len(outputs)}")
    moved = moved or motion(inputs, cuts)
    return Steadiness(warp_error(outputs, moved), warp_error(inputs, moved), len(moved.pairs))


def strength(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean |output - input| over every pixel of every frame, 0..255: how much is dreamed."""
    total = sum(
        float(np.abs(o.astype(np.int16) - i.astype(np.int16)).mean())
        for i, o in zip(inputs, outputs, strict=True)
    )
    return total / len(inputs)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Likeness of two pictures: correlation of grey thumbnails (dream texture averages out)."""
    return float((thumbnail(_grey(a)) * thumbnail(_grey(b))).sum())


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
