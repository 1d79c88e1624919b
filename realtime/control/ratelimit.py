"""What a remote sender may cost: token buckets, capped per-sender tables and capped log lines.

Shared by the OSC server and the audience web server, whose senders are strangers on a network:
each has a rate (`TokenBucket`), the table of senders is bounded (`Senders`), and each kind of
log line is shown a few times a period and the rest summed up (`Quota`). None of these take a
lock: each is used from one thread (the OSC server thread, the web server's event loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TokenBucket:
    """A token bucket: `rate` tokens a second up to `burst`."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def whole(self, now: float) -> int:
        """How many whole tokens there are now (refilled)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(min(self.tokens, 1e9))

    def take(self, now: float, n: int = 1) -> bool:
        if self.whole(now) < n:
            return False
        self.tokens -= n
        return True

    def wait(self, now: float, n: int = 1) -> float:
        """Seconds until `n` tokens are there (0 when they are now)."""
        self.whole(now)
        if self.tokens >= n:
            return 0.0
        return (n - self.tokens) / self.rate if self.rate > 0 else math.inf


class Senders(Generic[T]):
    """Per-sender state, at most `cap` senders: the oldest is forgotten past that, so a flood of
    forged or fresh addresses costs bounded memory."""

    def __init__(self, cap: int, make: Callable[[str, float], T]) -> None:
        self._cap, self._make = cap, make
        self._table: dict[str, T] = {}

    def get(self, sender: str, now: float) -> T:
        """The state of `sender`, made with `make(sender, now)` the first time."""
        state = self._table.get(sender)
        if state is None:
            if len(self._table) >= self._cap:
                del self._table[next(iter(self._table))]
            state = self._table[sender] = self._make(sender, now)
        return state

    def __len__(self) -> int:
        return len(self._table)


class Quota:
    """At most `burst` reports a `period`; the rest are counted and summed up at its end."""

    def __init__(
        self, what: str, burst: int, period: float, level: int, status: bool, source: str = "OSC"
    ) -> None:
        self.what, self.burst, self.period, self.level, self.status = (
            what, burst, period, level, status
        )  # fmt: skip
        self.source = source  # who the summary line speaks for: "OSC", "audience"
        self._start, self._count, self.suppressed = -math.inf, 0, 0

    def take(self, now: float) -> bool:
        if now - self._start >= self.period:
            self._start, self._count = now, 0
        if self._count < self.burst:
            self._count += 1
            return True
        self.suppressed += 1
        return False

    def summary(self, now: float) -> str | None:
        """The line summing up what the period left out, once it is over; None if nothing."""
        if not self.suppressed or now - self._start < self.period:
            return None
        n, self.suppressed = self.suppressed, 0
        self._start, self._count = now, 0
        return (
            f"{self.source}: ... and {n:,} more like it ({self.what}) in the last {self.period:g} s"
        )
