"""A text progress bar that shares its stream with the log and estimates time from steady frames."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30  # characters of bar: fits an 80-column terminal with the figures
CLEAR = "\r\x1b[K"  # back to the line's start, erase to its end (ANSI, every terminal)
# Not a terminal (a log file, CI): a line at every tenth of the way, not one a frame.
PIPE_STEPS = 10


class Progress:
    """A one-line progress bar on a stream (stderr by default). Main thread only.

    On a terminal the bar redraws in place, and a log line written meanwhile to the same stream
    first clears the bar (it comes back at the next frame), so the two never run together.
    Elsewhere it writes whole lines, a tenth of the way apart. The time left is estimated from
    the frames after the first, which also pays for warm-up (cuDNN's search, graph captures,
    lazy loading) and would make the first estimate many times too long.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total if total and total > 0 else None
        self.label = label
        self.stream = stream or sys.stderr
        self.clock = clock
        self.t0 = clock()
        self.n = 0
        self._first_done: float | None = None  # when the first (warm-up) frame finished
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = False  # a bar is on the terminal's current line
        self._next_line = 0  # pipes: the frame count at which the next line is written
        self._filter = _ClearBar(self)
        self._handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is self.stream
        ]
        for handler in self._handlers:
            handler.addFilter(self._filter)

    def eta(self) -> float | None:
        """Seconds left, from the frames after the first; None until there is one to go on."""
        if self.total is None or self._first_done is None or self.n < 2:
            return None
        per_frame = (self.clock() - self._first_done) / (self.n - 1)
        return (self.total - self.n) * per_frame

    def text(self) -> str:
        """The bar as it is now (without the carriage return)."""
        elapsed = self.clock() - self.t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.label} {self.n} frames {rate:.2f} fps"
        done = int(WIDTH * self.n / self.total)
        eta = self.eta()
        left = "estimating time left" if eta is None else f"{eta:.0f} s left"
        if self.n >= self.total:
            left = f"{elapsed:.0f} s"
        return (
            f"{self.label} [{'#' * done}{'.' * (WIDTH - done)}] {self.n}/{self.total} "
            f"{rate:.2f} fps, {left}"
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._first_done is None:
            self._first_done = self.clock()
        if self._tty:
            self.stream.write(CLEAR + self.text())
            self._drawn = True
        elif self.n >= self._next_line or (self.total and self.n >= self.total):
            self.stream.write(self.text() + "\n")
            step = max(1, (self.total or PIPE_STEPS * 10) // PIPE_STEPS)
            self._next_line = self.n + step
        self.stream.flush()

    def clear(self) -> None:
        """Take the bar off the terminal's line (before a log line is written there)."""
        if self._drawn:
            self.stream.write(CLEAR)
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._filter)
        if self._drawn:  # leave the last bar on its own line
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class _ClearBar(logging.Filter):
    """Clears the bar before a record reaches a handler writing to the bar's stream."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True
