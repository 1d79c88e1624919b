"""The capture thread: reads a frame source, keeps only its newest frame, and survives stalls."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from realtime.live.rate import RateMeter
from realtime.live.reader import TimedReader
from realtime.live.slot import Frame, LatestSlot
from realtime.live.sources import FrameSource, SourceError

logger = logging.getLogger(__name__)

DEFAULT_PACE_FPS = 30.0  # rate for non-live sources that have none of their own (still images)
POLL = 0.1  # seconds between checks of the stop flag while waiting on a blocked read
REOPEN_LINES = 3  # failed reopens in a row logged each; after that, one line a REOPEN_LINE_S
REOPEN_LINE_S = 60.0


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


class CaptureThread:
    """Owns one source and the daemon thread that reads it into a single-slot hand-off.

    The newest frame, fitted to `size`, is always in `slot` as a Frame (timestamped with
    time.monotonic() at read, numbered from 0). A source that fails, ends or delivers nothing
    for `stall_timeout` seconds is closed and reopened with exponential back-off; meanwhile the
    slot keeps its last frame, so the show goes on. With a `holding` source, once the source has
    given nothing for `hold_after` seconds (or could not be opened at start), the holding
    picture takes the slot while the source is retried, until it gives frames again. The thread
    closes the source when it stops.

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
        holding: FrameSource | None = None,
        hold_after: float = 10.0,
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
                "ended", "error", "reopen_failed", "holding" and "back"; it must return quickly.
            holding: the holding picture (the demo, a still), shown while the source gives
                nothing; None keeps the last frame, and start() fails if the source cannot open.
            hold_after: seconds without a frame from the source before the holding picture.
            fit: how frames of another shape are made `size`: crop, letterbox, or auto
                (see fit_mode; the holding picture is fitted by its own kind).
        """
        if len(size) != 2 or min(size) < 1:
            raise SourceError(f"expected size (width, height) in pixels, got {size!r}")
        if fps is not None and not fps > 0:
            raise SourceError(f"expected fps > 0 or None, got {fps!r}")
        if not stall_timeout > 0 or not 0 < backoff[0] <= backoff[1] or not hold_after >= 0:
            raise SourceError(
                f"expected stall_timeout > 0, 0 < backoff[0] <= backoff[1] and hold_after >= 0, "
                f"got {stall_timeout!r}, {backoff!r} and {hold_after!r}"
            )
        self.source = source
        self.size = (int(size[0]), int(size[1]))
        self.fit = fit_mode(fit, source)
        self._holding_fit = fit_mode(fit, holding) if holding is not None else fit
        self.fps = fps
        self.stall_timeout = stall_timeout
        self.backoff = backoff
        self.on_event = on_event
        self.holding = holding
        self.hold_after = hold_after
        self.slot: LatestSlot[Frame] = LatestSlot()
        self.meter = RateMeter()  # frames from the source itself (the holding picture's not)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Guards _state, _last_error, _reads and _reopens (written here, read by stats/HUD).
        self._lock = threading.Lock()
        self._state = "stopped"
        self._last_error: str | None = None
        self._reads = 0
        self._reopens = 0
        # Capture thread only: the frame number, when the source last gave a frame, and when
        # the next holding frame is due.
        self._index = 0
        self._last_good = time.monotonic()
        self._hold_due = 0.0

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
        """ok (frames come), stalled (they stopped: the last one holds while the source is
        reopened), retrying (it could not be reopened), holding (the holding picture shows while
        it is retried), or stopped."""
        with self._lock:
            return self._state

    @property
    def source_fps(self) -> float:
        """Frames a second from the source itself; 0 once they stop (held frames do not count)."""
        return self.meter.fps() if self.state == "ok" else 0.0

    @property
    def interval(self) -> float:
        """Seconds between frames when paced; 0 reads as fast as the source delivers."""
        if self.source.is_live:
            return 0.0
        return 1.0 / (self.fps or self.source.fps or DEFAULT_PACE_FPS)

    # -- owner thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the source if needed and start the thread.

        Raises:
            SourceError: the source cannot be opened and there is no holding picture, or it
                is a file (a camera or stream with a holding picture is retried meanwhile: one
                that enumerates late at boot just comes in).
        """
        if self._thread is not None:
            raise SourceError(f"capture of {self.source.name} was already started")
        if self.holding is not None and not self.holding.is_open:
            self.holding.open()
        state = "ok"
        if not self.source.is_open:
            try:
                self.source.open()
            except SourceError as err:
                if self.holding is None or not self.source.is_live:
                    raise  # a file that cannot be read at start is the operator's to fix
                state = "retrying"
                self._last_good = -math.inf  # nothing to hold: the holding picture at once
                self._set(last_error=f"could not be opened: {err}")
                logger.warning(
                    "%s; showing the holding picture (%s) and retrying it with back-off",
                    err,
                    self.holding.name,
                )
        self._set(state=state)
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
        reader = TimedReader(self.source)
        delay = self.backoff[0]
        due = time.monotonic()  # when the next paced read may start
        try:
            if not self.source.is_open:  # could not be opened at start: holding meanwhile
                delay = self._reopen(delay)
            while not self._stop.is_set():
                reader.request()
                problem = self._await(reader)
                if self._stop.is_set():
                    break
                if problem is None:
                    self._put(reader.result, reader.read_at, self.fit)
                    self.meter.tick(now=reader.read_at)
                    self._last_good = reader.read_at
                    with self._lock:
                        self._reads += 1
                        back = self._state != "ok"
                        self._state = "ok"
                    if back:
                        self._event("back", f"{self.source.name} is back", logging.INFO)
                        delay = self.backoff[0]
                    due = self._pace(due, reader.read_at)
                    continue
                kind, what = problem
                self._trouble("stalled", last_error=what)
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

    def _put(self, image: np.ndarray, read_at: float, fit: str) -> None:
        self.slot.put(Frame(fit_frame(image, self.size, fit), read_at, self._index))
        self._index += 1

    def _trouble(self, state: str, **fields: object) -> None:
        """Say what is wrong with the source: `state`, unless the holding picture shows."""
        with self._lock:
            if self._state != "holding":
                self._state = state
            for key, value in fields.items():
                setattr(self, f"_{key}", value)

    def _pause(self, seconds: float, ready: Callable[[float], bool] | None = None) -> bool:
        """Wait up to `seconds` for `ready` (a wait(timeout) -> bool; default: stop), showing
        the holding picture meanwhile once the source has given nothing for hold_after.

        Returns:
            True when `ready` came true in time (or stop was asked).
        """
        ready = ready or self._stop.wait
        end = time.monotonic() + seconds
        while True:
            wait = min(end - time.monotonic(), POLL, self._hold())
            if wait <= 0 and time.monotonic() >= end:
                return False
            if ready(max(wait, 0.0)) or self._stop.is_set():
                return True

    def _hold(self) -> float:
        """Put the next holding frame in the slot if one is due; returns the seconds until
        the one after (inf without a holding picture)."""
        if self.holding is None:
            return math.inf
        now = time.monotonic()
        hold_at = self._last_good + self.hold_after
        if now < hold_at:
            return hold_at - now
        if now < self._hold_due:
            return self._hold_due - now
        try:
            image = self.holding.read()
        except Exception as err:  # a broken holding picture must not end the capture either
            logger.error(
                "the holding picture %s failed (%s); holding the last frame instead",
                self.holding.name,
                err,
            )
            self.holding = None
            return math.inf
        if image is None:
            return POLL
        with self._lock:
            first, self._state = self._state != "holding", "holding"
        if first:
            gone = (
                "could not be opened"
                if math.isinf(self._last_good)
                else (f"has given no frame for {now - self._last_good:.0f} s")
            )
            self._event(
                "holding",
                f"{self.source.name} {gone}; showing the holding picture ({self.holding.name}) "
                f"while retrying it",
            )
        self._put(image, now, self._holding_fit)
        interval = 1.0 / (self.fps or self.holding.fps or DEFAULT_PACE_FPS)
        due = self._hold_due + interval
        self._hold_due = due if due > now else now + interval  # behind (or first): a new beat
        return self._hold_due - now

    def _await(self, reader: TimedReader) -> tuple[str, str] | None:
        """Wait for the read just requested.

        Returns None when a good frame came (or stop was asked), else (event kind, what went
        wrong). A read still running after stall_timeout counts as a stall.
        """
        deadline = time.monotonic() + self.stall_timeout
        while not self._pause(POLL, reader.wait):
            if self._stop.is_set():
                return None
            if time.monotonic() >= deadline:
                return "stalled", f"stalled for {self.stall_timeout:.1f} s"
        if self._stop.is_set():
            return None
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

    def _wait_out(self, reader: TimedReader) -> bool:
        """Before closing, let a blocked read return (closing under it could crash OpenCV).

        Returns False if stop was asked meanwhile.
        """
        started = time.monotonic()
        warned = started
        while not self._pause(POLL, reader.wait):
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
        failures, next_line = 0, 0.0
        while not self._pause(delay):
            delay = min(delay * 2, self.backoff[1])
            try:
                self.source.open()
            except Exception as err:  # any failure to open: keep trying, the show goes on
                self._trouble("retrying", last_error=f"could not be reopened: {err}")
                failures += 1
                # Weeks without the source must not fill the log: the first few, then a line
                # a minute.
                shown = failures <= REOPEN_LINES or time.monotonic() >= next_line
                if shown and failures > REOPEN_LINES:
                    next_line = time.monotonic() + REOPEN_LINE_S
                tries = f" ({failures} tries so far)" if failures > REOPEN_LINES else ""
                self._event(
                    "reopen_failed",
                    f"{self.source.name} could not be reopened ({err}); retrying in "
                    f"{delay:.1f} s{tries}",
                    logging.WARNING if shown else logging.DEBUG,
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
