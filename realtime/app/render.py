"""Offline rendering: a still dreamed at length, or a video through the live per-frame code."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from realtime.app.progress import Progress
from realtime.control.params import Snapshot
from realtime.engine.models import DreamModel
from realtime.engine.strategy import make_dreamer
from realtime.live.capture import fit_frame
from realtime.live.pipeline import FramePipeline
from realtime.live.recorder import VideoRecorder
from realtime.live.slot import Frame
from realtime.live.sources import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)


SEED = 0  # jitter seed of every render: the same input and settings give the same frames
VIDEO_OUTPUTS = (".mp4", ".avi")


class RenderError(RuntimeError):
    """The input could not be read or the output could not be written."""


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RenderError(
            f"cannot read image {str(path)!r}: missing or not an image OpenCV can decode"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write (H, W, 3) uint8 RGB to a file whose suffix picks the format."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise RenderError(
            f"cannot write {str(path)!r}: check the folder exists and the suffix is "
            f"one of {', '.join(sorted(IMAGE_SUFFIXES))}"
        )


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Scale (width, height) down so the longer side is at most max_side (None: unchanged)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(16, round(width * s)), max(16, round(height * s))


def shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """(H, W, 3) image scaled down so its longer side is at most max_side (None: unchanged)."""
    w, h = fit_size(image.shape[1], image.shape[0], max_side)
    if (w, h) == (image.shape[1], image.shape[0]):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def dream_still(
    image: np.ndarray, model: DreamModel, snap: Snapshot, device: torch.device, seed: int = SEED
) -> np.ndarray:
    """One picture dreamed as the live loop dreams a first frame (the same per-frame code, with
    nothing carried yet): (H, W, 3) uint8 RGB in, the same out."""
    return seeded_pipeline(model, device, seed=seed).process(
        Frame(image, time.monotonic(), 0), snap
    )


def render_image(
    src: Path,
    dst: Path,
    model: DreamModel,
    snap: Snapshot,
    device: torch.device,
    max_side: int | None = None,
) -> np.ndarray:
    """Dream one still picture; returns the result (H, W, 3) uint8 RGB and writes it to dst."""
    image = shrink(read_image(src), max_side)
    progress = Progress(1, f"dreaming {src.name}")
    out = dream_still(image, model, snap, device)
    progress.update()
    progress.close()
    write_image(dst, out)
    return out


def open_video(src: Path) -> tuple[cv2.VideoCapture, float, int | None]:
    """(capture, frames per second, frame count or None) of a video file."""
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        cap.release()
        raise RenderError(
            f"cannot open video {str(src)!r}: missing or not a format OpenCV can read"
        )
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and 1.0 <= fps <= 240.0 else 30.0
    return cap, fps, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None


def read_frames(cap: cv2.VideoCapture, size: tuple[int, int] | None, max_side: int | None):
    """Every frame as (H, W, 3) uint8 RGB: fitted to `size` (w, h) as the capture thread
    fits camera frames, or else shrunk to `max_side`."""
    while True:
        ok, bgr = cap.read()
        if not ok:
            return
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        yield fit_frame(rgb, size) if size is not None else shrink(rgb, max_side)


class FrameWriter:
    """Where rendered frames go: a video file, or a folder of lossless PNGs numbered from
    000000.png (one per input frame)."""

    def __init__(self, dst: Path, fps: float) -> None:
        self.dst = dst
        self.frames_written = 0
        self.folder = dst.suffix == "" or dst.is_dir()
        if self.folder:
            try:
                dst.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RenderError(f"cannot create folder {str(dst)!r}: {err}") from err
            self._video = None
        elif dst.suffix.lower() in VIDEO_OUTPUTS:
            # the output the command names, replaced as a render's output is expected to be
            self._video = VideoRecorder(dst, fps=fps, overwrite=True)
        else:
            raise RenderError(
                f"a video input needs a video output ({', '.join(VIDEO_OUTPUTS)}) or a folder "
                f"for PNGs, got {str(dst)!r}"
            )

    def __call__(self, image: np.ndarray) -> None:
        if self._video is not None:
            self._video(image)
            self.frames_written = self._video.frames_written
            if self._video.error:  # a render that cannot be written is no render
                raise RenderError(f"the output could not be written: {self._video.error}")
            return
        write_image(self.dst / f"{self.frames_written:06d}.png", image)
        self.frames_written += 1

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self.frames_written = self._video.frames_written


def seeded_pipeline(
    model: DreamModel, device: torch.device, flow_width: int = 160, seed: int = SEED
) -> FramePipeline:
    """The live per-frame code with its randomness seeded: the same frames in, the same out."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    return FramePipeline(
        model, make_dreamer(model, device), device, flow_width=flow_width, generator=generator
    )


def render_video(
    src: Path,
    dst: Path,
    model: DreamModel,
    snap: Snapshot,
    device: torch.device,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    flow_width: int = 160,
    seed: int = SEED,
    limit: int | None = None,
    on_frame=None,
) -> int:
    """Dream every frame of a video through the live loop's per-frame code (FramePipeline:
    feedback along the flow, the dream as `snap` says), keeping the frame count and rate.

    Deterministic: jitter comes from a generator seeded with `seed`; no frame is dropped or
    paced. Attract mode is off (it reacts to wall-clock time).

    Args:
        snap: the parameters every frame is dreamed with (LiveParams.snapshot()).
        size: (w, h) to fit each frame to, as the capture thread does; None keeps the input's
            size (shrunk to max_side).
        limit: stop after this many frames (None: all).
        on_frame: called with (input, output) of each frame, both (H, W, 3) uint8 RGB.

    Returns:
        The number of frames written.
    """
    cap, fps, total = open_video(src)
    pipeline = seeded_pipeline(model, device, flow_width, seed)
    writer = FrameWriter(dst, fps)
    count = total if limit is None or total is None else min(total, limit)
    progress = Progress(count, f"dreaming {src.name}")
    try:
        for i, image in enumerate(read_frames(cap, size, max_side)):
            if limit is not None and i >= limit:
                break
            out = pipeline.process(Frame(image, time.monotonic(), i), snap)
            writer(out)
            if on_frame is not None:
                on_frame(image, out)
            progress.update()
    finally:
        cap.release()
        writer.close()
        progress.close()
    if writer.frames_written == 0:
        raise RenderError(f"no frames could be read from {str(src)!r}")
    return writer.frames_written


def render(
    src: str | Path,
    dst: str | Path,
    model: DreamModel,
    snap: Snapshot,
    device: torch.device,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    flow_width: int = 160,
) -> int:
    """Dream an image or a video file, choosing by the input's suffix. Returns frames written.

    Args:
        size: videos: fit every frame to (w, h) as the live capture does (render --live).
        max_side: shrink so the longer side is at most this (None: full size).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise RenderError(f"input {str(src)!r} not found")
    if src.suffix.lower() in IMAGE_SUFFIXES:
        if dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise RenderError(
                f"an image input needs an image output ({', '.join(sorted(IMAGE_SUFFIXES))}),"
                f" got {str(dst)!r}"
            )
        render_image(src, dst, model, snap, device, max_side=max_side)
        return 1
    return render_video(src, dst, model, snap, device, size, max_side, flow_width)
