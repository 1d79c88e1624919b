"""Writes the dreamed output to video files, one frame per call, from any thread; a full disk or
a failing write stops the recording, never the show."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from realtime.live.disk import Statvfs, claim, space_problem

logger = logging.getLogger(__name__)

# Codec per container. Matroska needs no index at the end, so a file cut by SIGKILL, a power cut
# or a full disk reads back up to its last flushed frames, where an .mp4 reads back nothing. In it,
# MJPG: every frame stands alone and fills FFmpeg's 256 KB write buffer within seconds even on a
# black picture (a black 640x360 frame is 1.6 KB: at most 5.4 s are lost; a cut measured there
# lost 0.1-0.4 s of a moving picture; MPEG-4 Part 2 lost 2 s of it and all of a black one, as its
# small frames sit in the buffer). The price is size:
# ~0.9 MB/s at 640x360 against ~0.1 MB/s. 'mp4v' is the one MPEG-4 encoder every OpenCV build with
# FFmpeg has (H.264 needs an external one); MJPG in .avi is bigger but trivially seekable.
FOURCC_BY_SUFFIX = {".mkv": "MJPG", ".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v"}
CHECK_S = 1.0  # free space is looked at this often while recording (one statvfs call)
# After a fault, recording is tried again into a new file this long after, then twice as long
# each time it fails again, up to RESUME_MAX_S: a technician who frees space at 3 a.m. gets the
# recording back without a restart, and a disk that stays full costs a statvfs call a while.
RESUME_FIRST_S = 60.0
RESUME_MAX_S = 900.0

OpenWriter = Callable[[str, int, float, tuple[int, int]], cv2.VideoWriter]


class RecorderError(RuntimeError):
    """The recording was asked for something impossible: an unknown suffix, a missing folder,
    a frame that is not an RGB image. (A disk that fails is reported, not raised.)"""


class VideoRecorder:
    """A per-frame callback that appends each frame to a video file, or to a run of files.

    The file is opened on the first frame, at that frame's size (rounded down to even sizes,
    which the encoders need). Frames of another size are resized to it.

    With `realtime`, the file plays at the pace the frames were made: a frame carrying a
    `done_ts` (an Output) is written as many times as the file's frame rate has frames until the
    next one (and not at all when frames come faster than the file rate), so a clip dreamed at
    12 fps into a 30 fps file plays in real time instead of 2.5 times too fast. Without it, every
    frame is written once (an offline render keeps its input's timing).

    Files are never overwritten: the first is `path`, or `path-1`, `path-2`, ... when that
    exists, claimed exclusively when the recorder is made (so a read-only folder shows at
    start). With `segment_seconds`, each further segment takes the next free number.

    The disk is watched: free space before the first file and every CHECK_S while recording,
    and every frame's write (OpenCV 5 reports a failed write; older versions do not, and then
    only free space is watched). A fault is logged once, counted in `errors`, passed to
    `on_error`, and stops the recording: the file is closed with what it holds and later frames
    are dropped (counted). Nothing is raised for it, so the show goes on. RESUME_FIRST_S later
    (doubling up to RESUME_MAX_S while it keeps failing) the recording is tried again: once the
    disk has min_free_mb free, the next frame opens a new numbered file, and a warning says so.

    Threads: __call__ and close() may be called from any thread, close() also from a signal
    handler; after close() further frames are ignored. `on_error` is called on the thread that
    hit the fault, so it must not block (StatusSender.error only queues).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 30.0,
        realtime: bool = False,
        *,
        segment_seconds: float = 0.0,
        min_free_mb: float = 0.0,
        overwrite: bool = False,
        on_error: Callable[[str], None] | None = None,
        statvfs: Statvfs = os.statvfs,
        open_writer: OpenWriter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            path: .mkv, .avi, .mp4 (also .m4v, .mov) file to write; its folder must exist.
            fps: frame rate stored in the file.
            realtime: write frames at the pace their done_ts says (see the class docstring).
            segment_seconds: start a new file after this much video (file time); 0: one file.
            min_free_mb: stop recording when the folder's disk has less free space; 0: no check.
            overwrite: write the first file to `path` even if it exists (a render's output).
            on_error: called with each fault's message (status out).
            statvfs, open_writer, clock: stand-ins for os.statvfs, cv2.VideoWriter and
                time.monotonic (tests).

        Raises:
            RecorderError: unknown suffix, missing folder, fps not positive or segment_seconds
                negative.
        """
        self.requested = Path(path)
        self.path = self.requested  # the file being written (or next to be)
        self.fps = float(fps)
        suffix = self.requested.suffix.lower()
        if suffix not in FOURCC_BY_SUFFIX:
            raise RecorderError(
                f"cannot record to {str(self.requested)!r}: expected a file ending in "
                f"{', '.join(FOURCC_BY_SUFFIX)}, got {suffix or 'no suffix'!r}"
            )
        if not self.requested.parent.is_dir():
            raise RecorderError(
                f"cannot record to {str(self.requested)!r}: the folder "
                f"{str(self.requested.parent)!r} does not exist; create it or choose another path"
            )
        if not self.fps > 0:
            raise RecorderError(f"expected a recording fps > 0, got {fps}")
        if not segment_seconds >= 0:
            raise RecorderError(
                f"expected segment_seconds >= 0 (0: one file), got {segment_seconds}"
            )
        self.fourcc = FOURCC_BY_SUFFIX[suffix]
        # file frames per segment; 0 = one file
        self._segment_frames = max(1, round(segment_seconds * self.fps)) if segment_seconds else 0
        self.min_free_mb = float(min_free_mb)
        self.overwrite = overwrite
        self.on_error = on_error
        self._statvfs = statvfs
        self._open_writer = open_writer or _open_cv2_writer
        self._clock = clock
        # Guards the writer, the files and the counts: frames arrive from the dream thread,
        # close() comes from the main thread or a signal handler. Reentrant, because a signal
        # handler runs on whatever thread Python picks (the main one), possibly mid-__call__.
        self._lock = threading.RLock()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height) written
        self._closed = False
        self._busy = False  # a frame is being written (only True while the lock is held)
        self._close_pending = False  # close() came from a signal handler mid-write
        self._late_frames = 0  # frames that arrived after close(), ignored
        self.realtime = realtime
        self._start_ts: float | None = None  # done_ts of the first frame (realtime)
        self._pace_base = 0  # frames_written when pacing (re)started: a resume starts afresh
        self._number = 0  # the number of the file claimed last (show-N.mkv)
        self._claimed: Path | None = None  # claimed (created empty), not yet opened
        self._in_segment = 0  # file frames in the open file
        self._next_check = 0.0  # monotonic time of the next free-space check
        self.paths: list[Path] = []  # every file this recorder wrote into, in order
        self.frames_written = 0  # frames the encoder took, all files (repeats included)
        self.frames_received = 0  # frames handed in while recording
        self.dropped = 0  # frames handed in after a fault stopped the recording
        self.errors = 0  # faults (each stops the recording, so at most one so far)
        self.error = ""  # what stopped the recording; "" while all is well
        self.resumes = 0  # times recording started again after a fault
        self._resume_wait = RESUME_FIRST_S
        self._resume_at = 0.0  # clock time of the next try after a fault
        if self._space_ok():
            self._claim()

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the video, None before the first frame."""
        return self._size

    @property
    def state(self) -> str:
        """ "ready" (no frame yet), "recording", "stopped" (a fault: see `error`) or "closed"."""
        if self.error:
            return "stopped"
        if self._closed:
            return "closed"
        return "recording" if self._writer is not None else "ready"

    def __call__(self, frame: object) -> None:
        """Append one frame: (H, W, 3) uint8 RGB, or an object whose .dream is one (Output).

        Raises:
            RecorderError: the frame is not an RGB image.
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
                self._write(image, getattr(frame, "done_ts", None))
            finally:
                self._busy = False
                if self._close_pending:
                    self._release()

    def _write(self, image: np.ndarray, done_ts: float | None) -> None:
        """__call__'s work, the lock held."""
        if self._closed:
            self._late_frames += 1
            if self._late_frames == 1:
                logger.warning("recorder for %s is closed; ignoring later frames", self.path)
            return
        if self.error and not self._resume():
            self.dropped += 1
            return
        if self._writer is None and not self._open(image.shape[1], image.shape[0]):
            self.dropped += 1
            return
        self.frames_received += 1
        copies = self._copies(done_ts)
        if copies == 0:
            return
        h, w = image.shape[:2]
        if (w, h) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        for _ in range(copies):
            if self._segment_frames and self._in_segment >= self._segment_frames:
                if not self._next_segment():
                    return
            # OpenCV 5 returns False when FFmpeg could not write (a full disk, an I/O error);
            # 4.x returns None and says nothing.
            if self._writer.write(bgr) is False:  # type: ignore[union-attr]
                self._fault(
                    f"writing a frame to {str(self.path)!r} failed (disk full, removed or "
                    f"failing?) after {self.frames_written} frames"
                )
                return
            self.frames_written += 1
            self._in_segment += 1
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_S
            self._space_ok()

    def _copies(self, done_ts: float | None) -> int:
        """How many times to write this frame: once, or in realtime as many file frames as are
        due by its time (the lock is held)."""
        if not self.realtime or done_ts is None:
            return 1
        if self._start_ts is None:
            self._start_ts = done_ts
        # file frames due up to this moment (the epsilon absorbs float error in timestamps)
        due = int((done_ts - self._start_ts) * self.fps + 1e-6) + 1
        return max(0, due - (self.frames_written - self._pace_base))

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

    # --- the lock held -------------------------------------------------------------------

    def _space_ok(self) -> bool:
        """Whether the disk has min_free_mb free; a fault (the recording stops) when not."""
        if not self.min_free_mb:
            return True
        why = space_problem(self.requested.parent, self.min_free_mb, self._statvfs)
        if why is None:
            return True
        self._fault(why if why.startswith("cannot") else f"{why}; free some space or lower it")
        return False

    def _resume(self) -> bool:
        """After a fault, when its wait is over: record again (into a new file, on this frame)
        if the disk has room; else wait twice as long. Quiet while the disk is still short."""
        now = self._clock()
        if now < self._resume_at:
            return False
        self._resume_wait = min(RESUME_MAX_S, self._resume_wait * 2)
        self._resume_at = now + self._resume_wait  # the wait after this try, if it fails
        if self.min_free_mb and space_problem(
            self.requested.parent, self.min_free_mb, self._statvfs
        ):
            return False
        stopped, self.error = self.error, ""
        if not self._claim():  # a new fault: logged, error set again
            return False
        self.resumes += 1
        self._start_ts, self._pace_base = None, self.frames_written  # pace the new file afresh
        logger.warning("recording resumes into %s; it had stopped: %s", self.path, stopped)
        return True

    def _claim(self) -> bool:
        """Create the next file (never an existing one); a fault when the folder refuses."""
        first = not self.paths and self._claimed is None
        if self.overwrite and first:  # only the named file: later segments never replace it
            self._claimed = self.path = self.requested
            return True
        try:
            path, self._number = claim(self.requested, self._number + (0 if first else 1))
        except OSError as err:
            self._fault(f"cannot create a file in {str(self.requested.parent)!r}: {err}")
            return False
        if first and path != self.requested:
            logger.info(
                "%s exists and is kept; recording to %s (a recording never overwrites a file)",
                self.requested,
                path,
            )
        self._claimed = self.path = path
        return True

    def _open(self, width: int, height: int) -> bool:
        """Open the claimed file at this size (even sides); a fault when OpenCV cannot."""
        if self._claimed is None and not self._claim():
            return False
        path, self._claimed = self._claimed, None
        size = self._size or (max(2, width - width % 2), max(2, height - height % 2))
        writer = self._open_writer(str(path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, size)
        self.paths.append(path)
        if not writer.isOpened():
            writer.release()
            self._fault(
                f"OpenCV could not open {str(path)!r} for writing ({self.fourcc} at "
                f"{size[0]}x{size[1]}); check the folder is writable and the disk not full"
            )
            return False
        self._writer, self._size, self._in_segment = writer, size, 0
        logger.info("recording %dx%d at %.1f fps to %s", *size, self.fps, path)
        return True

    def _next_segment(self) -> bool:
        """Close the full segment and open the next file at the same size."""
        self._finish_file()
        return self._space_ok() and self._claim() and self._open(*self._size)  # type: ignore[misc]

    def _fault(self, message: str) -> None:
        """Stop recording: log, count and report the fault; keep what the file holds."""
        self.errors += 1
        self.error = message
        self._resume_at = self._clock() + self._resume_wait
        logger.error(
            "recording stopped, the show goes on (tried again in %.0f s): %s",
            self._resume_wait,
            message,
        )
        self._finish_file()
        if self.on_error is not None:
            self.on_error(f"recording stopped: {message}")

    def _finish_file(self) -> None:
        """Close the open file; remove a claimed or written file that holds nothing."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
        for path in (self._claimed, self.paths[-1] if self.paths else None):
            if path is not None and _is_empty(path):
                path.unlink(missing_ok=True)
                if path in self.paths:
                    self.paths.remove(path)
        self._claimed = None

    def _release(self) -> None:
        """Close the recording for good."""
        self._closed = True
        self._close_pending = False
        had_writer = self._writer is not None
        self._finish_file()
        if had_writer or self.paths:
            files = ", ".join(str(p) for p in self.paths) or "no file"
            stopped = f" (stopped early: {self.error})" if self.error else ""
            logger.info("recorded %d frames to %s%s", self.frames_written, files, stopped)

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_cv2_writer(path: str, fourcc: int, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    return cv2.VideoWriter(path, fourcc, fps, size)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
