"""The watchdog restarts a part whose progress counter stops moving."""

from realtime.live.watchdog import Watchdog


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_restarts_a_stuck_part_and_leaves_a_working_one():
    clock = Clock()
    dog = Watchdog(clock=clock)
    stuck, working = {"n": 0, "restarts": 0}, {"n": 0, "restarts": 0}
    dog.watch(
        "stuck",
        lambda: stuck["n"],
        lambda: stuck.__setitem__("restarts", stuck["restarts"] + 1),
        timeout=3.0,
    )
    dog.watch(
        "working",
        lambda: working["n"],
        lambda: working.__setitem__("restarts", working["restarts"] + 1),
        timeout=3.0,
    )
    for _ in range(20):  # 10 s in half-second checks
        clock.t += 0.5
        working["n"] += 1
        dog.check()
    assert working["restarts"] == 0
    assert stuck["restarts"] == 3  # every 3 s of no progress


def test_a_failing_restart_is_retried():
    clock = Clock()
    dog = Watchdog(clock=clock)
    calls = []

    def restart() -> None:
        calls.append(clock.t)
        raise RuntimeError("camera still gone")

    dog.watch("camera", lambda: 0, restart, timeout=1.0)
    for _ in range(10):
        clock.t += 0.5
        dog.check()
    assert len(calls) >= 2
