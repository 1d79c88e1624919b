"""Offline rendering: dream a still image or every frame of a video file, with a progress bar."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch

from realtime.engine.models import DreamModel
from realtime.engine.objectives import Objective
from realtime.engine.strategy import make_dreamer
from realtime.knobs import DreamConfig
from realtime.live.feedback import Feedback
from realtime.live.recorder import VideoRecorder
from realtime.live.sources import IMAGE_SUFFIXES
from realtime.live.transfer import Downloader, Uploader, to_image, to_tensor

logger = logging.getLogger(__name__)


class RenderError(RuntimeError):
    """The input could not be read or the output could not be written."""


class Progress:
    """A one-line text progress bar on a stream (stderr by default)."""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None) -> None:
        self.total = total if total and total > 0 else None
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        elapsed = time.monotonic() - self.t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            width = 30  # characters of bar: fits an 80-column terminal with the figures
            done = int(width * self.n / self.total)
            eta = (self.total - self.n) / rate if rate else 0.0
            line = (
                f"\r{self.label} [{'#' * done}{'.' * (width - done)}] {self.n}/{self.total} "
                f"{rate:.2f} fps, {eta:.0f} s left"
            )
        else:
            line = f"\r{self.label} {self.n} frames {rate:.2f} fps"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


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


def render_image(
    src: Path,
    dst: Path,
    model: DreamModel,
    objective: Objective,
    cfg: DreamConfig,
    device: torch.device,
    max_side: int | None = None,
) -> np.ndarray:
    """Dream one still picture; returns the result (H, W, 3) uint8 RGB and writes it to dst."""
    image = shrink(read_image(src), max_side)
    dreamer = make_dreamer(model, device)
    progress = Progress(1, f"dreaming {src.name}")
    out = to_image(dreamer.dream(to_tensor(image, device), objective, cfg))
    progress.update()
    progress.close()
    write_image(dst, out)
    return out


def render_video(
    src: Path,
    dst: Path,
    model: DreamModel,
    objective: Objective,
    cfg: DreamConfig,
    device: torch.device,
    blend: float = 0.5,
    flow: bool = True,
    max_side: int | None = None,
) -> int:
    """Dream every frame of a video, keeping its frame count and frame rate.

    Each frame starts from the new input blended with the previous dreamed frame,
    warped along the optical flow between the two inputs, so the dream follows the
    motion instead of flickering.

    Args:
        blend: share of the previous dreamed frame carried into the next (0: none).
        flow: warp that share along the optical flow.

    Returns:
        The number of frames written.
    """
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise RenderError(
            f"cannot open video {str(src)!r}: missing or not a format OpenCV can read"
        )
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    dreamer = make_dreamer(model, device)
    feedback = Feedback(device)
    upload, download = Uploader(device), Downloader(device)  # buffers reused frame to frame
    recorder = VideoRecorder(dst, fps=fps)
    progress = Progress(total, f"dreaming {src.name}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frame = shrink(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side)
            x = feedback.apply(upload(frame), frame, blend, flow=flow)  # (1, 3, H, W)
            x = dreamer.dream(x, objective, cfg)
            feedback.remember(x)
            recorder(download(x))
            progress.update()
    finally:
        cap.release()
        recorder.close()
        progress.close()
    if recorder.frames_written == 0:
        raise RenderError(f"no frames could be read from {str(src)!r}")
    return recorder.frames_written


def render(
    src: str | Path,
    dst: str | Path,
    model: DreamModel,
    objective: Objective,
    cfg: DreamConfig,
    device: torch.device,
    max_side: int | None = None,
    blend: float = 0.5,
    flow: bool = True,
) -> None:
    """Dream an image or a video file, choosing by the input's suffix.

    Args:
        max_side: shrink so the longer side is at most this (None: full size).
        blend, flow: for videos, as in render_video; a still ignores them.
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
        render_image(src, dst, model, objective, cfg, device, max_side=max_side)
    else:
        if dst.suffix.lower() not in (".mp4", ".avi"):
            raise RenderError(f"a video input needs a .mp4 or .avi output, got {str(dst)!r}")
        render_video(src, dst, model, objective, cfg, device, blend, flow, max_side)
