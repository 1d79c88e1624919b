"""Frames per second and latency, smoothed, and 0 once frames stop coming."""

from __future__ import annotations

import threading
import time

# A rate is "no frames" (0 fps) once the last frame is this many of its own intervals old, and
# at least STALE_S: a frame late by a hiccup keeps the rate, a stopped source does not.
STALE_INTERVALS = 3.0
STALE_S = 1.0


class RateMeter:
    """Frames per second and latency, smoothed; one thread ticks, any thread reads.

    The rate drops to 0 when ticks stop (a stalled camera, a truncated file): a status that
    held its last value would say all is well while the picture is frozen.
    """

    def __init__(self, smoothing: float = 0.9) -> None:
        self._smoothing = smoothing  # weight of the past in the moving averages (0.9: ~10 frames)
        # Guards the fields below.
        self._lock = threading.Lock()
        self._last: float | None = None
        self._fps = 0.0
        self.latency_ms = 0.0
        self.dream_ms = 0.0
        self.frames = 0

    def tick(self, latency_s: float = 0.0, dream_s: float = 0.0, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            a = self._smoothing if self.frames else 0.0
            if self._stale(now):  # after a stop the rate starts afresh, not from the gap
                self._fps = 0.0
            elif self._last is not None and now > self._last:
                rate = 1.0 / (now - self._last)
                self._fps = a * self._fps + (1 - a) * rate if self._fps else rate
            self._last = now
            self.latency_ms = a * self.latency_ms + (1 - a) * latency_s * 1000.0
            self.dream_ms = a * self.dream_ms + (1 - a) * dream_s * 1000.0
            self.frames += 1

    def fps(self, now: float | None = None) -> float:
        """The smoothed rate; 0 when no tick came for STALE_INTERVALS intervals (>= STALE_S)."""
        return float(self.read(now)["fps"])

    def read(self, now: float | None = None) -> dict[str, float | int]:
        now = time.monotonic() if now is None else now
        with self._lock:
            return {
                "fps": 0.0 if self._stale(now) else self._fps,
                "latency_ms": self.latency_ms,
                "dream_ms": self.dream_ms,
                "frames": self.frames,
            }

    def _stale(self, now: float) -> bool:
        """No tick for too long; the lock must be held."""
        if self._last is None or not self._fps:
            return False
        return now - self._last > max(STALE_S, STALE_INTERVALS / self._fps)
