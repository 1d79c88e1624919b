"""Attract mode engages on a still picture and releases on motion."""

import numpy as np

from realtime.control.params import LiveParams
from realtime.knobs import AttractConfig
from realtime.live.attract import AttractMode


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


STILL = np.random.default_rng(42).integers(0, 255, (90, 160, 3), dtype=np.uint8)


def frames(moving: bool, n: int, rng: np.random.Generator):
    still = STILL
    for _ in range(n):
        yield rng.integers(0, 255, (90, 160, 3), dtype=np.uint8) if moving else still


def test_engages_on_still_source_and_releases_on_motion():
    clock, rng = Clock(), np.random.default_rng(0)
    cfg = AttractConfig(enabled=True, idle_seconds=2.0, fade_seconds=1.0, feedback=0.95, zoom=1.01)
    attract = AttractMode(cfg, clock=clock)
    snap = LiveParams(["a", "b"], ["m"], "m", {"feedback": 0.5}).snapshot()

    for image in frames(False, 30, rng):  # 1 s of stillness: not yet
        clock.t += 1 / 30
        out = attract.modulate(snap, image)
    assert attract.level == 0.0 and out.feedback == snap.feedback

    for image in frames(False, 90, rng):  # 3 more seconds: idle after 2 s, fully faded 1 s later
        clock.t += 1 / 30
        out = attract.modulate(snap, image)
    assert attract.engaged and attract.level == 1.0
    assert out.feedback.amount == 0.95 and out.feedback.zoom == 1.01

    levels = []
    for image in frames(True, 15, rng):  # motion: fades back over fade_seconds
        clock.t += 1 / 30
        out = attract.modulate(snap, image)
        levels.append(attract.level)
    assert not attract.engaged
    assert levels == sorted(levels, reverse=True) and levels[-1] < 0.6
    for image in frames(True, 30, rng):
        clock.t += 1 / 30
        out = attract.modulate(snap, image)
    assert attract.level == 0.0 and out.feedback == snap.feedback


def test_disabled_never_engages():
    clock, rng = Clock(), np.random.default_rng(1)
    attract = AttractMode(AttractConfig(enabled=False, idle_seconds=0.1), clock=clock)
    for image in frames(False, 60, rng):
        clock.t += 0.1
        attract.update(image)
    assert attract.level == 0.0 and not attract.engaged
