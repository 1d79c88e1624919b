"""A single-slot "latest value" hand-off between threads, with a frame counter.

The capture thread, the dream loop and the display each publish into one of
these. A writer never blocks on a reader and a slow reader never builds a
backlog: it simply gets the newest value the next time it looks. Values that
were overwritten before anyone read them are counted as drops.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    """One picture and where it came from.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        timestamp: time.monotonic() when the picture was captured, so latency
            can be measured end to end.
        index: frame number given by the producer, counting from 0.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    timestamp: float
    index: int


class LatestSlot(Generic[T]):
    """Holds only the newest value; any thread may call any method."""

    def __init__(self) -> None:
        # The condition's lock guards _value, _count, _read_count and drops.
        self._cond = threading.Condition()
        self._value: T | None = None
        self._count = 0  # number of values ever put
        self._read_count = 0  # the count of the last value a reader took
        self.drops = 0  # values overwritten before any reader took them

    def put(self, value: T) -> int:
        """Publish a value, replacing the previous one. Returns its counter."""
        with self._cond:
            if self._count > self._read_count:
                self.drops += 1
            self._value = value
            self._count += 1
            self._cond.notify_all()
            return self._count

    @property
    def count(self) -> int:
        """How many values have been put so far."""
        with self._cond:
            return self._count

    def peek(self) -> tuple[int, T | None]:
        """The newest value and its counter, without waiting (value is None before the first put)."""
        with self._cond:
            return self._count, self._value

    def get(self, after: int = 0, timeout: float | None = None) -> tuple[int, T | None]:
        """Wait for a value newer than counter `after`.

        Args:
            after: the counter the caller already has; 0 takes any value.
            timeout: seconds to wait at most; None waits for ever.

        Returns:
            (counter, value); on timeout the current counter and value, which
            may be the one the caller already had (or None if nothing was put).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._count <= after:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._count > after:
                self._read_count = self._count
            return self._count, self._value


@dataclass(frozen=True)
class Output:
    """One dreamed frame as the dream loop publishes it to the display and the callbacks.

    Attributes:
        dream: (H, W, 3) uint8 RGB, the dreamed picture.
        camera: (H, W, 3) uint8 RGB, the camera frame it was dreamed from (for the display's crossfade).
        index: output frame number, counting from 0.
        capture_ts: time.monotonic() when the camera frame was captured.
        done_ts: time.monotonic() when the dream finished (latency = done_ts - capture_ts).
        layer: the layer it was dreamed at.
        target: the class target's name, or "none".
    """

    dream: np.ndarray  # (H, W, 3) uint8 RGB
    camera: np.ndarray  # (H, W, 3) uint8 RGB
    index: int
    capture_ts: float
    done_ts: float
    layer: str = ""
    target: str = "none"
