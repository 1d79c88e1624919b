"""Attract mode: when nobody moves in front of the camera, the dream deepens; motion brings it back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np

from realtime.control.params import Snapshot
from realtime.knobs import AttractConfig

logger = logging.getLogger(__name__)

MOTION_WIDTH = 64  # px: motion is measured on a tiny grey copy; enough to see a person, cheap


class AttractMode:
    """Watches camera frames for motion and deepens the dream in an empty room.

    Call `modulate` once per frame from the dream thread only. `level` goes from 0
    (live picture) to 1 (full attract) over `fade_seconds`, after `idle_seconds` of
    stillness, and back to 0 as soon as motion returns.
    """

    def __init__(self, config: AttractConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._prev: np.ndarray | None = None  # previous tiny grey frame, float32 in [0, 1]
        self._still_since: float | None = None
        self._last_t: float | None = None
        self.level = 0.0  # 0 live .. 1 attract
        self.motion = 0.0  # last measured mean absolute difference, 0..1
        self.engaged = False

    def measure(self, image: np.ndarray) -> float:
        """Mean absolute difference (0..1) between this frame and the previous one."""
        h, w = image.shape[:2]
        small = cv2.resize(
            image, (MOTION_WIDTH, max(1, round(MOTION_WIDTH * h / w))), interpolation=cv2.INTER_AREA
        )
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        if self._prev is None or self._prev.shape != grey.shape:
            self._prev = grey
            return 1.0  # no history yet: treat as motion so nothing engages at start
        motion = float(np.abs(grey - self._prev).mean())
        self._prev = grey
        return motion

    def update(self, image: np.ndarray) -> float:
        """Feed one camera frame; returns the attract level 0..1."""
        cfg = self.config
        now = self._clock()
        dt = 0.0 if self._last_t is None else now - self._last_t
        self._last_t = now
        if not cfg.enabled:
            self.level = 0.0
            return 0.0
        self.motion = self.measure(image)
        if self.motion >= cfg.motion_threshold:
            self._still_since = None
        elif self._still_since is None:
            self._still_since = now
        idle = self._still_since is not None and now - self._still_since >= cfg.idle_seconds
        rate = dt / cfg.fade_seconds if cfg.fade_seconds > 0 else 1.0
        self.level = min(1.0, self.level + rate) if idle else max(0.0, self.level - rate)
        if idle and not self.engaged:
            self.engaged = True
            logger.info("attract mode: no motion for %.0f s, deepening the dream", cfg.idle_seconds)
        elif not idle and self.engaged:
            self.engaged = False
            logger.info("attract mode: motion returned, fading back to the live picture")
        return self.level

    def modulate(self, snap: Snapshot, image: np.ndarray) -> Snapshot:
        """The snapshot with feedback and zoom moved toward the attract values by the level."""
        level = self.update(image)
        if level <= 0.0:
            return snap
        cfg, fb = self.config, snap.feedback
        deeper = replace(
            fb,
            amount=fb.amount + (cfg.feedback - fb.amount) * level,
            zoom=fb.zoom + (cfg.zoom - fb.zoom) * level,
        )
        return replace(snap, feedback=deeper)
