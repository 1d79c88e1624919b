"""A watchdog: when a part stops producing for a few seconds, it is restarted."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class Watched:
    """One part to watch.

    Attributes:
        name: for the log line.
        progress: returns a counter that grows while the part works (e.g. a slot's count).
        restart: called on the watchdog thread when the counter has not moved for `timeout` s.
        timeout: seconds of no progress before a restart, or a function giving them (a part
            may allow itself longer while it warms up).
    """

    name: str
    progress: Callable[[], int]
    restart: Callable[[], None]
    timeout: float | Callable[[], float] = 5.0
    last_count: int = -1
    last_change: float = 0.0
    restarts: int = 0


class Watchdog:
    """Owns a daemon thread that checks each watched part every `interval` seconds."""

    def __init__(self, interval: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        # Guards `_parts`: parts may be added from any thread while the watchdog runs.
        self._lock = threading.Lock()
        self._parts: list[Watched] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def watch(
        self,
        name: str,
        progress: Callable[[], int],
        restart: Callable[[], None],
        timeout: float | Callable[[], float] = 5.0,
    ) -> Watched:
        part = Watched(name, progress, restart, timeout, last_change=self._clock())
        with self._lock:
            self._parts.append(part)
        return part

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def check(self) -> None:
        """One round of checks (the thread calls this; tests may too)."""
        now = self._clock()
        with self._lock:
            parts = list(self._parts)
        for part in parts:
            count = part.progress()
            if count != part.last_count:
                part.last_count, part.last_change = count, now
                continue
            timeout = part.timeout() if callable(part.timeout) else part.timeout
            if now - part.last_change < timeout:
                continue
            part.restarts += 1
            logger.error(
                "watchdog: %s produced nothing for %.1f s; restarting it (restart %d)",
                part.name,
                now - part.last_change,
                part.restarts,
            )
            part.last_change = now
            try:
                part.restart()
            except Exception as err:  # noqa: BLE001 - a failed restart is retried next timeout
                logger.error("watchdog: restarting %s failed: %s", part.name, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
