"""Hands each dreamed frame to an output (NDI, an ffmpeg stream) on the output's own thread,
newest frame only, so that a slow or failing output never slows the dream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from realtime.live.slot import LatestSlot

logger = logging.getLogger(__name__)

WAIT_S = 0.25  # the sender thread looks at its stop event at least this often
JOIN_S = 3.0  # stop() waits this long for the thread (a stream's ffmpeg is given 2 s to finish)
# A reopened output works again once it has sent this many frames over at least this long: an
# ffmpeg takes a second or more to start and find its address refused, and one that hangs on a
# connection takes no more frames once its pipe is full.
TRIAL_S = 3.0
TRIAL_FRAMES = 30


class OutputError(RuntimeError):
    """An output cannot start at all (a missing library, a malformed address): raised at start,
    with what to do about it."""


class OutputFault(RuntimeError):
    """An output failed while running (a refused connection, ffmpeg gone): logged once, counted,
    and the show goes on."""


class FrameSender:
    """A per-frame callback that sends the dream's frames out, from a daemon thread it owns.

    The dream thread calls the sender with each Output; that only puts the frame into a
    LatestSlot (never blocks). The sender thread takes the newest frame and sends it; frames
    replaced before it got to them are counted in `dropped`, as are frames that arrive while
    the output is failed.

    A subclass opens, sends and closes (all on the sender thread):
        _open(width, height): get ready for frames of this size; raise OutputFault if it cannot.
        _send(image): send one (H, W, 3) uint8 RGB frame; raise OutputFault if it failed.
        _note(message, *args): what a subclass logs when it opens.
        _close(): let go of whatever is open, also after a failed _open, and when nothing
            is; must not raise.
        _abort(): called by stop() on its own thread when a send is stuck: make it return.

    A fault is logged once (later faults of the same output at debug level), passed to
    `on_error` and shown in `state`; with `retry_s`, the output is opened again that long
    after a fault, and when it then sends TRIAL_FRAMES over TRIAL_S without a fault, one line
    says it works again. Nothing a subclass raises other than OutputFault is caught: that is a bug.

    Threads: __call__ from the dream thread; start(), stop() and stats() from any thread.
    """

    kind = "output"  # the name in logs and status: /dream/status/<kind>, <kind>_sent, ...

    def __init__(
        self,
        target: str,
        *,
        retry_s: float | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Args:
        target: what is sent to, as the operator wrote it (a source name, a URL), for messages.
        retry_s: seconds after a fault before the output is opened again; None: never.
        on_error: called with a fault's message the first time it fails (status out); must
            not block.
        """
        self.target = target
        self.retry_s = retry_s
        self.on_error = on_error
        self._slot: LatestSlot[object] = LatestSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Guards the counts, state and error, which the status thread reads while the sender
        # thread writes them.
        self._lock = threading.Lock()
        self._state = "starting"  # starting | sending | failed | stopped
        self.error = ""  # what made it fail last; "" while it works
        self.errors = 0  # times it went from working (or starting) to failed; retries not
        self.retries = 0  # faults while already failed (each retry that failed again)
        self.sent = 0  # frames sent
        self._unsent = 0  # frames taken from the slot but not sent (the output was failed)
        # Owned by the sender thread:
        self._open_size: tuple[int, int] | None = None  # (width, height) opened, None: closed
        self._retry_at = 0.0  # monotonic time from which a failed output may be opened again
        self._recovering_since: float | None = None  # reopened after a fault, on trial ...
        self._trial_sent = 0  # ... and the frames it has sent since

    # --- the dream thread ----------------------------------------------------------------

    def __call__(self, frame: object) -> None:
        """Offer a frame: an Output (its .dream is sent) or an (H, W, 3) uint8 RGB array."""
        self._slot.put(frame)

    # --- any thread ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """ "starting" (no frame yet), "sending", "failed" (see `error`) or "stopped"."""
        with self._lock:
            return self._state

    @property
    def dropped(self) -> int:
        """Frames not sent: replaced by a newer one before the thread took them, or taken
        while the output was failed."""
        with self._lock:
            return self._slot.drops + self._unsent

    def stats(self) -> dict[str, object]:
        """{kind: state, kind_sent: n, kind_dropped: n} for the status out."""
        with self._lock:
            return {
                self.kind: self._state,
                f"{self.kind}_sent": self.sent,
                f"{self.kind}_dropped": self._slot.drops + self._unsent,
            }

    def start(self) -> None:
        """Start the sender thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-out", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (the output is closed on it). Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(JOIN_S)
        if thread.is_alive():  # stuck in a send (an ffmpeg waiting for a caller): cut it short
            self._abort()
            thread.join(JOIN_S)
        if thread.is_alive():
            logger.warning(
                "%s output to %s did not stop within %.0f s; leaving it behind",
                self.kind,
                self.target,
                JOIN_S,
            )

    # --- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        seen = 0
        try:
            while not self._stop.is_set():
                count, frame = self._slot.get(seen, timeout=WAIT_S)
                if count == seen or frame is None:
                    continue
                seen = count
                self._handle(getattr(frame, "dream", frame))
        finally:  # also when a bug raised (its traceback is printed): the dream goes on
            self._shut()
            with self._lock:
                crashed = not self._stop.is_set()
                self._state = "failed" if crashed else "stopped"
                self.error = "its thread ended on an error (see the log)" if crashed else self.error
            if crashed:
                logger.error("%s output to %s ended on an error", self.kind, self.target)

    def _handle(self, image: np.ndarray) -> None:
        """Send one frame, opening the output first when it is closed (and may be retried)."""
        size = (image.shape[1], image.shape[0])
        if self._open_size is None:
            if time.monotonic() < self._retry_at:
                with self._lock:
                    self._unsent += 1
                return
            try:
                self._open(*size)
            except OutputFault as err:
                self._fault(str(err))
                return
            self._open_size = size
            if self._state == "failed":
                self._recovering_since, self._trial_sent = time.monotonic(), 0
        try:
            self._send(image)
        except OutputFault as err:
            self._fault(str(err))
            return
        with self._lock:
            self.sent += 1
            if self._state == "starting":
                self._state = "sending"
        self._trial_sent += 1
        if (
            self._recovering_since is not None
            and self._trial_sent >= TRIAL_FRAMES
            and time.monotonic() - self._recovering_since >= TRIAL_S
        ):
            self._recovering_since = None
            with self._lock:
                self._state, self.error = "sending", ""
            logger.info("%s output to %s works again", self.kind, self.target)

    def _fault(self, message: str) -> None:
        """Close the output, count and report the fault (logged once until it works again)."""
        self._shut()
        self._recovering_since = None
        if self._stop.is_set():  # stop() cut a stuck send short: not a fault of the show
            return
        with self._lock:
            first = self._state != "failed"
            self._state, self.error = "failed", message
            if first:
                self.errors += 1
            else:
                self.retries += 1
            self._unsent += 1
        if self.retry_s is None:
            self._retry_at = float("inf")
            again = "not retried"
        else:
            self._retry_at = time.monotonic() + self.retry_s
            again = f"retrying every {self.retry_s:g} s"
        if not first:
            logger.debug("%s output to %s still failing: %s", self.kind, self.target, message)
            return
        logger.error(
            "%s output to %s failed, the show goes on (%s): %s",
            self.kind,
            self.target,
            again,
            message,
        )
        if self.on_error is not None:
            self.on_error(f"{self.kind} output failed: {message}")

    def _note(self, message: str, *args: object) -> None:
        """Log how the output opened: at INFO, or at DEBUG while retrying after a fault (a
        fault is one log line, not one per retry)."""
        logger.log(logging.DEBUG if self._state == "failed" else logging.INFO, message, *args)

    def _shut(self) -> None:
        self._open_size = None
        self._close()

    # --- what a subclass does (on the sender thread) -------------------------------------

    def _open(self, width: int, height: int) -> None:
        raise NotImplementedError

    def _send(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        """Make a send that is stuck return now (called by stop(), from another thread)."""
