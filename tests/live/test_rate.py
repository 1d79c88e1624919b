"""The rate meter: smoothed, and 0 once frames stop (a frozen picture must not show its old fps)."""

import pytest

from realtime.live.rate import STALE_S, RateMeter


def test_fps_is_the_rate_of_ticks_and_drops_to_zero_when_they_stop():
    meter = RateMeter()
    t = 100.0
    for _ in range(50):
        meter.tick(0.02, 0.01, now=t)
        t += 0.1  # 10 fps
    last = t - 0.1
    assert meter.fps(now=last) == pytest.approx(10.0)
    assert meter.read(now=last)["latency_ms"] == pytest.approx(20.0)
    assert meter.fps(now=last + 0.25) == pytest.approx(10.0)  # one late frame: still 10
    assert meter.fps(now=last + STALE_S + 0.01) == 0.0  # stopped: 0, not the last value
    assert meter.read(now=last + 60)["fps"] == 0.0 and meter.read()["frames"] == 50


def test_a_slow_rate_is_stale_only_after_three_of_its_own_intervals():
    meter = RateMeter()
    for i in range(10):
        meter.tick(now=100.0 + 2.0 * i)  # 0.5 fps
    assert meter.fps(now=118.0 + 5.0) == pytest.approx(0.5)
    assert meter.fps(now=118.0 + 6.5) == 0.0


def test_after_a_stop_the_rate_starts_afresh():
    meter = RateMeter()
    for i in range(20):
        meter.tick(now=100.0 + 0.1 * i)
    meter.tick(now=200.0)  # the first frame after a long stop: not a rate of 1/98 s
    assert meter.fps(now=200.0) == 0.0
    meter.tick(now=200.1)
    assert meter.fps(now=200.1) == pytest.approx(10.0)
