"""OffThread: a slow per-frame callback (the recorder) runs beside the dream, never in its way."""

from __future__ import annotations

import logging
import threading

import pytest

from realtime.live.offthread import OffThread


class Gate:
    """A callback that records each frame and the thread it ran on, and blocks while shut."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.seen: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, frame: int) -> None:
        self.entered.set()
        assert self.open.wait(10.0), "the test never opened the gate"
        self.seen.append(frame)
        self.threads.add(threading.current_thread().name)


def test_the_caller_returns_while_the_callback_is_still_busy_and_order_is_kept():
    gate = Gate()
    worker = OffThread(gate, "recorder", backlog=8)
    worker(0)
    assert gate.entered.wait(5.0)  # frame 0 is being handled, and blocks there
    for i in range(1, 6):
        worker(i)  # returns at once although the callback is stuck
    assert gate.seen == []
    gate.open.set()
    worker.close()
    assert gate.seen == [0, 1, 2, 3, 4, 5]  # every frame, in order
    assert gate.threads == {"recorder"} and threading.current_thread().name not in gate.threads
    assert worker.handled == 6 and worker.dropped == 0


def test_a_callback_that_falls_behind_loses_its_oldest_waiting_frames(caplog):
    gate = Gate()
    worker = OffThread(gate, "recorder", backlog=4)
    worker(0)
    assert gate.entered.wait(5.0)
    with caplog.at_level(logging.WARNING):
        for i in range(1, 11):  # 10 more while it is stuck on frame 0: 4 may wait
            worker(i)
    assert worker.dropped == 6
    assert sum("falls behind the dream" in r.getMessage() for r in caplog.records) == 1
    gate.open.set()
    worker.close()
    assert gate.seen == [0, 7, 8, 9, 10]  # the newest waited; the dream never did


def test_close_hands_over_what_waits_and_later_frames_are_counted_not_handled():
    seen = []
    worker = OffThread(seen.append, "recorder")
    for i in range(10):
        worker(i)
    worker.close()
    assert seen == list(range(10))
    worker(10)
    worker.close()  # again: nothing happens
    assert seen == list(range(10)) and worker.dropped == 1


def test_a_failing_frame_is_logged_once_and_the_next_frames_go_on(caplog):
    seen = []

    def callback(frame: int) -> None:
        if frame % 2:
            raise ValueError(f"bad frame {frame}")
        seen.append(frame)

    worker = OffThread(callback, "recorder")
    with caplog.at_level(logging.DEBUG):
        for i in range(6):
            worker(i)
        worker.close()
    assert seen == [0, 2, 4] and worker.failed == 3 and worker.handled == 6
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "bad frame 1" in (errors[0].exc_text or "")


def test_a_backlog_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        OffThread(print, "x", backlog=0)
