"""The capture thread: reads a frame source, keeps only its newest frame, and survives stalls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from realtime.live.slot import Frame, LatestSlot
from realtime.live.sources import FrameSource, SourceError

logger = logging.getLogger(__name__)

DEFAULT_PACE_FPS = 30.0  # rate for non-live sources that have none of their own (still images)
POLL = 0.1  # seconds between checks of the stop flag while waiting on a blocked read


def fit_frame(image: np.ndarray, size: tuple[int, int], fit: str = "crop") -> np.ndarray:
    """`image` (H, W, 3) made exactly `size` (w, h) without distorting it.

    Args:
        fit: "crop": fill the frame, trimming the longer side (centred), as a 16:9 camera feeds
            a 4:3 dream; "letterbox": the whole picture, scaled to fit, with black bars.
    """
    w, h = size
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    if fit == "letterbox":
        s = min(w / iw, h / ih)
        fw, fh = max(1, min(w, round(iw * s))), max(1, min(h, round(ih * s)))
        out = np.zeros((h, w, 3), np.uint8)  # (H, W, 3) black bars around the picture
        x, y = (w - fw) // 2, (h - fh) // 2
        out[y : y + fh, x : x + fw] = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA)
        return out
    if iw * h > ih * w:  # too wide: trim the sides
        cw = max(1, round(ih * w / h))
        x = (iw - cw) // 2
        image = image[:, x : x + cw]
    elif iw * h < ih * w:  # too tall: trim top and bottom
        ch = max(1, round(iw * h / w))
        y = (ih - ch) // 2
        image = image[y : y + ch]
    # INTER_AREA averages whole source pixels: no aliasing shimmer when shrinking.
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def fit_mode(fit: str, source: FrameSource) -> str:
    """capture.fit for a source: "auto" letterboxes a still picture (nothing of a portrait is
    cut away) and crops moving pictures (cameras, video: the frame stays filled)."""
    if fit == "auto":
        return "letterbox" if source.still else "crop"
    return fit


class _Reader:
    """Runs source.read() on its own daemon thread, so that a read which blocks can be timed out.

    Only the capture thread calls its methods.
    """

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self._wake = threading.Event()  # set: a read is requested (or stop)
        self._done = threading.Event()  # set: the requested read has finished
        self._done.set()
        self._quit = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.read_at = 0.0  # time.monotonic() when the last read returned
        self._thread = threading.Thread(target=self._run, name=f"read {source.name}", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A read is in progress."""
        return not self._done.is_set()

    def request(self) -> None:
        self.result, self.error = None, None
        self._done.clear()
        self._wake.set()

    def wait(self, timeout: float) -> bool:
        """True once the read has finished, False if it is still running after `timeout` s."""
        return self._done.wait(timeout)

    def quit(self) -> None:
        """Let the thread end; if a read is still blocked it ends when that read returns."""
        self._quit = True
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._quit:
                return
            try:
                self.result = self._source.read()
            except Exception as err:  # any failure of a source is reported, then it is reopened
                self.error = err
            self.read_at = time.monotonic()
            self._done.set()


class CaptureThread:
    """Owns one source and the daemon thread that reads it into a single-slot hand-off.

    The newest frame, fitted to `size`, is always in `slot` as a Frame (timestamped with
    time.monotonic() at read, numbered from 0). A source that fails, ends or delivers nothing
    for `stall_timeout` seconds is closed and reopened with exponential back-off; meanwhile the
    slot keeps its last frame, so the show goes on. The thread closes the source when it stops.

    Threads: start() and stop() from the owning (main) thread; `slot` and the read-only
    properties from any thread.
    """

    def __init__(
        self,
        source: FrameSource,
        size: tuple[int, int],
        fps: float | None = None,
        stall_timeout: float = 2.0,
        backoff: tuple[float, float] = (0.5, 8.0),
        on_event: Callable[[str, str], None] | None = None,
        fit: str = "auto",
    ) -> None:
        """
        Args:
            source: the frame source; opened by start() if it is not open yet.
            size: (width, height) of the frames put in the slot.
            fps: pace for files, stills and the demo; None takes the source's own rate (30 fps
                when it has none). Live sources (cameras, streams) are always read as fast as
                they deliver: pacing them would only add latency.
            stall_timeout: seconds without a good frame before the source counts as stalled.
            backoff: (first, longest) delay in seconds before a reopen; doubles each failure.
            on_event: called as on_event(kind, message) on the capture thread for "stalled",
                "ended", "error", "reopen_failed" and "back"; it must return quickly.
            fit: how frames of another shape are made `size`: crop, letterbox, or auto
                (see fit_mode).
        """
        if len(size) != 2 or min(size) < 1:
            raise SourceError(f"expected size (width, height) in pixels, got {size!r}")
        if fps is not None and not fps > 0:
            raise SourceError(f"expected fps > 0 or None, got {fps!r}")
        if not stall_timeout > 0 or not 0 < backoff[0] <= backoff[1]:
            raise SourceError(
                f"expected stall_timeout > 0 and 0 < backoff[0] <= backoff[1], "
                f"got {stall_timeout!r} and {backoff!r}"
            )
        self.source = source
        self.size = (int(size[0]), int(size[1]))
        self.fit = fit_mode(fit, source)
        self.fps = fps
        self.stall_timeout = stall_timeout
        self.backoff = backoff
        self.on_event = on_event
        self.slot: LatestSlot[Frame] = LatestSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Guards _state, _last_error, _reads and _reopens (written here, read by stats/HUD).
        self._lock = threading.Lock()
        self._state = "stopped"
        self._last_error: str | None = None
        self._reads = 0
        self._reopens = 0

    # -- read-only status, any thread --------------------------------------------------------

    @property
    def drops(self) -> int:
        """Frames overwritten in the slot before the consumer took them."""
        return self.slot.drops

    @property
    def reads(self) -> int:
        """Good frames read from the source so far."""
        with self._lock:
            return self._reads

    @property
    def reopens(self) -> int:
        """Times the source was closed and opened again."""
        with self._lock:
            return self._reopens

    @property
    def last_error(self) -> str | None:
        """The most recent failure, as text for the HUD; None if there was none."""
        with self._lock:
            return self._last_error

    @property
    def state(self) -> str:
        """ "running", "reconnecting" or "stopped"."""
        with self._lock:
            return self._state

    @property
    def interval(self) -> float:
        """Seconds between frames when paced; 0 reads as fast as the source delivers."""
        if self.source.is_live:
            return 0.0
        return 1.0 / (self.fps or self.source.fps or DEFAULT_PACE_FPS)

    # -- owner thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the source if needed (SourceError if it cannot be) and start the thread."""
        if self._thread is not None:
            raise SourceError(f"capture of {self.source.name} was already started")
        if not self.source.is_open:
            self.source.open()
        self._set(state="running")
        self._thread = threading.Thread(
            target=self._run, name=f"capture {self.source.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait up to `timeout` s for it; it closes the source on its way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning(
                    "capture of %s did not stop within %.1f s", self.source.name, timeout
                )

    # -- capture thread ----------------------------------------------------------------------

    def _set(self, **fields: object) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self, f"_{key}", value)

    def _event(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        logger.log(level, message)
        if self.on_event is not None:
            try:
                self.on_event(kind, message)
            except Exception:  # a broken listener must not end the capture
                logger.exception("on_event handler failed for %r", kind)

    def _run(self) -> None:
        reader = _Reader(self.source)
        delay = self.backoff[0]
        index = 0
        due = time.monotonic()  # when the next paced read may start
        try:
            while not self._stop.is_set():
                reader.request()
                problem = self._await(reader)
                if self._stop.is_set():
                    break
                if problem is None:
                    image = fit_frame(reader.result, self.size, self.fit)
                    self.slot.put(Frame(image, reader.read_at, index))
                    index += 1
                    with self._lock:
                        self._reads += 1
                        back = self._state == "reconnecting"
                        self._state = "running"
                    if back:
                        self._event("back", f"{self.source.name} is back", logging.INFO)
                        delay = self.backoff[0]
                    due = self._pace(due, reader.read_at)
                    continue
                kind, what = problem
                self._set(state="reconnecting", last_error=what)
                self._event(kind, f"{self.source.name} {what}; reopening in {delay:.1f} s")
                if not self._wait_out(reader):
                    break
                delay = self._reopen(delay)
                due = time.monotonic()
        finally:
            reader.quit()
            if not reader.busy:
                self._close_source()
            else:
                logger.warning("%s: a read is still blocked; leaving it open", self.source.name)
            self._set(state="stopped")

    def _await(self, reader: _Reader) -> tuple[str, str] | None:
        """Wait for the read just requested.

        Returns None when a good frame came (or stop was asked), else (event kind, what went
        wrong). A read still running after stall_timeout counts as a stall.
        """
        deadline = time.monotonic() + self.stall_timeout
        while not reader.wait(POLL):
            if self._stop.is_set():
                return None
            if time.monotonic() >= deadline:
                return "stalled", f"stalled for {self.stall_timeout:.1f} s"
        if reader.error is not None:
            return "error", f"failed: {reader.error}"
        frame = reader.result
        if frame is None:
            return "ended", "delivered no frame"
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
            shape = getattr(frame, "shape", type(frame).__name__)
            return "error", f"gave a frame of shape {shape}, expected (H, W, 3) uint8 RGB"
        if frame.dtype != np.uint8:
            return "error", f"gave a frame of dtype {frame.dtype}, expected uint8"
        return None

    def _wait_out(self, reader: _Reader) -> bool:
        """Before closing, let a blocked read return (closing under it could crash OpenCV).

        Returns False if stop was asked meanwhile.
        """
        started = time.monotonic()
        warned = started
        while not reader.wait(POLL):
            if self._stop.is_set():
                return False
            if time.monotonic() - warned > 10.0:  # remind every 10 s, not every poll
                warned = time.monotonic()
                logger.warning(
                    "%s: read still blocked after %.0f s; waiting for it to return",
                    self.source.name,
                    warned - started,
                )
        return not self._stop.is_set()

    def _reopen(self, delay: float) -> float:
        """Close, then open again after `delay`, doubling it up to backoff[1] on each failure.

        Returns the delay to use for the next failure.
        """
        self._close_source()
        while not self._stop.wait(delay):
            delay = min(delay * 2, self.backoff[1])
            try:
                self.source.open()
            except Exception as err:  # any failure to open: keep trying, the show goes on
                self._set(last_error=f"could not be reopened: {err}")
                self._event(
                    "reopen_failed",
                    f"{self.source.name} could not be reopened ({err}); retrying in {delay:.1f} s",
                )
                continue
            with self._lock:
                self._reopens += 1
            return delay
        return delay

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a broken device may fail too; log it and carry on
            logger.exception("closing %s failed", self.source.name)

    def _pace(self, due: float, now: float) -> float:
        """Sleep until the next frame is due; returns when the one after that is due."""
        interval = self.interval
        if interval <= 0:
            return now
        due += interval
        if due < now - interval:  # fell far behind (a slow read): restart the beat, no burst
            due = now
        self._stop.wait(max(0.0, due - time.monotonic()))
        return due
