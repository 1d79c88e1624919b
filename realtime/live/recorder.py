"""Writes the dreamed output to a video file, one frame per call, from any thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Codec per container: MPEG-4 Part 2 ('mp4v') is the one encoder every OpenCV build with FFmpeg
# has (H.264 needs an external encoder); MJPG in .avi is bigger but trivially seekable.
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


class RecorderError(RuntimeError):
    """The video file cannot be opened or a frame cannot be written."""


class VideoRecorder:
    """A per-frame callback that appends each frame to a video file.

    The file is opened on the first frame, at that frame's size (rounded down to even sizes,
    which the encoders need). Frames of another size are resized to it.

    With `realtime`, the file plays at the pace the frames were made: a frame carrying a
    `done_ts` (an Output) is written as many times as the file's frame rate has frames until the
    next one (and not at all when frames come faster than the file rate), so a clip dreamed at
    12 fps into a 30 fps file plays in real time instead of 2.5 times too fast. Without it, every
    frame is written once (an offline render keeps its input's timing).

    Threads: __call__ and close() may be called from any thread, close() also from a signal
    handler; after close() further frames are ignored.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, realtime: bool = False) -> None:
        """
        Args:
            path: .mp4 (also .m4v, .mov) or .avi file to write; its folder must exist.
            fps: frame rate stored in the file.
            realtime: write frames at the pace their done_ts says (see the class docstring).

        Raises:
            RecorderError: unknown suffix, missing folder or fps not positive.
        """
        self.path = Path(path)
        self.fps = float(fps)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_BY_SUFFIX:
            raise RecorderError(
                f"cannot record to {str(self.path)!r}: expected a file ending in "
                f"{', '.join(FOURCC_BY_SUFFIX)}, got {suffix or 'no suffix'!r}"
            )
        if not self.path.parent.is_dir():
            raise RecorderError(
                f"cannot record to {str(self.path)!r}: the folder {str(self.path.parent)!r} "
                f"does not exist; create it or choose another path"
            )
        if not self.fps > 0:
            raise RecorderError(f"expected a recording fps > 0, got {fps}")
        self.fourcc = FOURCC_BY_SUFFIX[suffix]
        # Guards the writer and the counts: frames arrive from the dream thread, close() comes
        # from the main thread or a signal handler. Reentrant, because a signal handler runs on
        # whatever thread Python picks (the main one), possibly in the middle of __call__.
        self._lock = threading.RLock()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height) written
        self._closed = False
        self._busy = False  # a frame is being written (only True while the lock is held)
        self._close_pending = False  # close() came from a signal handler mid-write
        self._late_frames = 0  # frames that arrived after close(), ignored
        self.realtime = realtime
        self._start_ts: float | None = None  # done_ts of the first frame (realtime)
        self.frames_written = 0  # frames in the file (repeats included)
        self.frames_received = 0  # frames handed in

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the video, None before the first frame."""
        return self._size

    def __call__(self, frame: object) -> None:
        """Append one frame: (H, W, 3) uint8 RGB, or an object whose .dream is one (Output).

        Raises:
            RecorderError: the frame is not an RGB image, or the file cannot be opened.
        """
        image = getattr(frame, "dream", frame)
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
            got = getattr(image, "shape", type(image).__name__)
            raise RecorderError(f"expected an (H, W, 3) uint8 RGB frame to record, got {got}")
        if image.dtype != np.uint8:
            raise RecorderError(f"expected a uint8 frame to record, got dtype {image.dtype}")
        with self._lock:
            self._busy = True
            try:
                if self._closed:
                    self._late_frames += 1
                    if self._late_frames == 1:
                        logger.warning(
                            "recorder for %s is closed; ignoring later frames", self.path
                        )
                    return
                writer = self._writer if self._writer is not None else self._open(image)
                self.frames_received += 1
                copies = self._copies(getattr(frame, "done_ts", None))
                if copies == 0:
                    return
                h, w = image.shape[:2]
                if (w, h) != self._size:
                    image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                for _ in range(copies):
                    writer.write(bgr)
                self.frames_written += copies
            finally:
                self._busy = False
                if self._close_pending:
                    self._release()

    def _copies(self, done_ts: float | None) -> int:
        """How many times to write this frame: once, or in realtime as many file frames as are
        due by its time (the lock is held)."""
        if not self.realtime or done_ts is None:
            return 1
        if self._start_ts is None:
            self._start_ts = done_ts
        # file frames due up to this moment (the epsilon absorbs float error in timestamps)
        due = int((done_ts - self._start_ts) * self.fps + 1e-6) + 1
        return max(0, due - self.frames_written)

    def close(self) -> None:
        """Finish the file so that every frame written can be read back. Idempotent."""
        with self._lock:
            if self._busy:
                # Only possible in a signal handler that interrupted __call__ on this thread:
                # releasing the writer under it would lose or miscount the frame, so __call__
                # finishes the close as it returns.
                self._close_pending = True
                return
            self._release()

    @property
    def closed(self) -> bool:
        """close() was called (the file may still be finishing in a pending close)."""
        return self._closed or self._close_pending

    def _open(self, image: np.ndarray) -> cv2.VideoWriter:
        h, w = image.shape[:2]
        size = (max(2, w - w % 2), max(2, h - h % 2))  # MPEG-4 and MJPG encode even sizes only
        writer = cv2.VideoWriter(
            str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, size
        )
        if not writer.isOpened():
            writer.release()
            raise RecorderError(
                f"OpenCV could not open {str(self.path)!r} for writing ({self.fourcc} at "
                f"{size[0]}x{size[1]}); check the folder is writable and the disk not full"
            )
        self._writer, self._size = writer, size
        logger.info("recording %dx%d at %.1f fps to %s", *size, self.fps, self.path)
        return writer

    def _release(self) -> None:
        """Close the file; the caller holds the lock."""
        self._closed = True
        self._close_pending = False
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
            logger.info("recorded %d frames to %s", self.frames_written, self.path)

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
