"""The sender thread behind every output: newest frame only, drops counted, a fault logged once,
retried, and the dream thread never waits for it."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from realtime.live.sender import FrameSender, OutputFault
from realtime.live.slot import Output
from tests.control.test_osc import wait_for


class Gate(FrameSender):
    """An output whose sends wait for the test to open a gate, and fail while `broken` is set."""

    kind = "gate"

    def __init__(self, **kwargs) -> None:
        super().__init__("the gate", **kwargs)
        self.gate = threading.Event()
        self.broken = threading.Event()
        self.images: list[np.ndarray] = []
        self.attempts = 0
        self.opened = 0
        self.closed = 0

    def _open(self, width: int, height: int) -> None:
        self.attempts += 1
        if self.broken.is_set():
            raise OutputFault("the gate is broken")
        self.opened += 1

    def _send(self, image: np.ndarray) -> None:
        self.gate.wait(5)
        if self.broken.is_set():
            raise OutputFault("the gate broke")
        self.images.append(image)

    def _close(self) -> None:
        self.closed += 1


def frame(i: int) -> Output:
    image = np.full((4, 6, 3), i, np.uint8)
    return Output(image, image, i, 0.0, 0.0)


@pytest.fixture
def gate():
    out = Gate()
    out.start()
    yield out
    out.gate.set()
    out.stop()


def test_a_stuck_output_never_blocks_the_dream_and_sends_the_newest_frame(gate):
    gate(frame(0))
    assert wait_for(lambda: gate.opened == 1)  # the thread holds frame 0, stuck in _send
    started = time.monotonic()
    for i in range(1, 101):
        gate(frame(i))
    assert time.monotonic() - started < 0.5  # 100 frames offered while the output is stuck
    gate.gate.set()
    assert wait_for(lambda: gate.sent == 2)
    assert [int(im[0, 0, 0]) for im in gate.images] == [0, 100]  # then only the newest
    assert gate.dropped == 99
    assert gate.stats() == {"gate": "sending", "gate_sent": 2, "gate_dropped": 99}


def test_a_fault_is_one_log_line_then_retried_and_said_to_work_again(caplog):
    reported = []
    out = Gate(retry_s=0.2, on_error=reported.append)
    out.gate.set()
    out.broken.set()
    out.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="realtime.live.sender"):
            deadline = time.monotonic() + 1.0
            i = 0
            while time.monotonic() < deadline:  # faults and retries for a second
                out(frame(i))
                i += 1
                time.sleep(0.02)
            assert out.state == "failed" and out.error == "the gate is broken"
            assert out.errors == 1 and out.retries >= 2  # one outage, retried every 0.2 s
            assert out.attempts == out.retries + 1
            assert out.sent == 0 and out.dropped == i
            out.broken.clear()
            deadline = time.monotonic() + 6.0  # TRIAL_FRAMES over TRIAL_S: works again
            while time.monotonic() < deadline and out.state != "sending":
                out(frame(i))
                i += 1
                time.sleep(0.02)
    finally:
        out.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "the show goes on" in errors[0].getMessage()
    assert reported == ["gate output failed: the gate is broken"]
    assert out.state == "stopped" and out.error == ""  # it worked again, then stop() ended it
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert out.sent > 0 and out.closed >= out.attempts


def test_without_retry_a_failed_output_stays_failed(gate):
    gate.gate.set()
    gate(frame(0))
    assert wait_for(lambda: gate.sent == 1)
    gate.broken.set()
    gate(frame(1))
    assert wait_for(lambda: gate.state == "failed")
    gate.broken.clear()
    for i in range(2, 5):
        gate(frame(i))
        time.sleep(0.05)
    assert wait_for(lambda: gate.dropped == 4)
    assert gate.state == "failed" and gate.opened == 1 and gate.sent == 1


def test_stop_joins_and_closes(gate):
    gate.gate.set()
    gate(frame(0))
    assert wait_for(lambda: gate.sent == 1)
    gate.stop()
    assert gate.state == "stopped" and gate.closed == 1
    gate.stop()  # idempotent


class Buggy(Gate):
    def _send(self, image: np.ndarray) -> None:
        raise ZeroDivisionError("a bug in the output")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_bug_in_an_output_ends_its_thread_as_failed_not_the_show(caplog):
    out = Buggy()
    out.start()
    try:
        out(frame(0))
        assert wait_for(lambda: out.state == "failed")
        for i in range(1, 50):  # the dream thread still hands frames in, never blocked
            out(frame(i))
    finally:
        out.stop()
    assert out.state == "failed" and "ended on an error" in caplog.text
    assert out.closed == 1 and out.dropped == 48
