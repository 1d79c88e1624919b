"""Runs a per-frame callback on a thread of its own, every frame in order, so that a slow one
(the recorder's video encoder) never holds up the dream thread."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

BACKLOG = 16  # frames waiting at most (half a second at 30 fps); past it the oldest is dropped


class OffThread:
    """A per-frame callback for DreamLoop that hands each frame to `callback` on a daemon thread.

    The dream thread's call only appends to a bounded backlog and returns. The worker thread
    calls `callback` with each frame in the order they came. When the callback falls more than
    `backlog` frames behind, the oldest waiting frame is dropped and counted in `dropped` (one
    log line when it starts): the dream never waits for it. A recorder that paces its file by
    each frame's done_ts keeps the clip's timing across a dropped frame.

    An exception from the callback is logged (the first in full, later ones counted) and the
    next frame is handed over as usual.

    Threads: __call__ from the dream thread; close() from any thread, once the dream loop has
    stopped (frames that come after are dropped and counted).
    """

    def __init__(self, callback: Callable[[Any], object], name: str, backlog: int = BACKLOG):
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {backlog}")
        self.callback = callback
        self.name = name
        self.backlog = backlog
        self.dropped = 0  # frames never handed over: the backlog was full, or after close()
        self.failed = 0  # frames whose callback raised
        self.handled = 0  # frames handed over (whatever the callback then did)
        self._waiting: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, frame: Any) -> None:
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            if len(self._waiting) >= self.backlog:
                self._waiting.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    logger.warning(
                        "%s falls behind the dream: dropping its oldest waiting frames (more "
                        "than %d waiting); the dream goes on at its pace",
                        self.name,
                        self.backlog,
                    )
            self._waiting.append(frame)
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Hand over every frame still waiting, then end the thread. Idempotent.

        Args:
            timeout: seconds to wait for the thread; None waits until the backlog is done.
        """
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("%s: still busy after %.1f s; leaving it", self.name, timeout or 0.0)
        elif self.dropped:
            logger.info("%s: %d frames dropped while it fell behind", self.name, self.dropped)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if not self._waiting:  # closing, and nothing left
                    return
                frame = self._waiting.popleft()
            try:
                self.callback(frame)
            except Exception:  # noqa: BLE001 - a broken frame must not end the thread
                self.failed += 1
                if self.failed == 1:
                    logger.exception("%s failed on a frame; going on with the next", self.name)
                else:
                    logger.debug("%s failed on a frame (%d so far)", self.name, self.failed)
            self.handled += 1
