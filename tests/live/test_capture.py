"""The capture thread: newest frame only, pacing, and recovery from sources that stall or fail."""

import logging
import threading
import time

import cv2
import numpy as np
import pytest

from realtime.live.capture import CaptureThread, fit_frame
from realtime.live.sources import FrameSource, SourceError, VideoFileSource

SIZE = (8, 6)  # (w, h): tiny frames, the fake sources make them at this size


def numbered(i: int) -> np.ndarray:
    """A frame that carries its number i in its first pixel (high byte, low byte)."""
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    image[0, 0, :2] = divmod(i, 256)
    return image


def number_of(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) * 256 + int(image[0, 0, 1])


class FakeSource(FrameSource):
    """A live source that misbehaves on cue.

    script maps a read number (counted over the source's life) to what that read does:
    "none" returns None, "raise" raises, "block" blocks until `release` is set (or `block_for`
    seconds pass) and then returns None. open_failures makes that many reopen attempts fail.
    """

    is_live = True

    def __init__(self, script=None, period=0.002, block_for=60.0, open_failures=0):
        self.name = "fake"
        self.script = dict(script or {})
        self.period = period  # seconds per good read, so the fake does not spin a core
        self.block_for = block_for
        self.open_failures = open_failures
        self.release = threading.Event()
        self.opens = self.closes = self.calls = self.good = 0
        self._open = False

    @property
    def is_open(self):
        return self._open

    def open(self):
        self.opens += 1
        if self.opens > 1 and self.open_failures > 0:
            self.open_failures -= 1
            raise SourceError("fake device unplugged")
        self._open = True

    def close(self):
        self.closes += 1
        self._open = False

    def read(self):
        if not self._open:
            raise SourceError("read while closed")
        action = self.script.get(self.calls)
        self.calls += 1
        if action == "none":
            return None
        if action == "raise":
            raise OSError("fake device error")
        if action == "block":
            self.release.wait(self.block_for)
            return None
        time.sleep(self.period)
        self.good += 1
        return numbered(self.good - 1)


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@pytest.fixture
def captures():
    """Captures made by a test; stopped afterwards even when the test fails."""
    made = []
    yield made
    for capture in made:
        if isinstance(capture.source, FakeSource):
            capture.source.release.set()  # let any blocked fake read return
        capture.stop()


def start(captures, source, **kwargs):
    events = []
    kwargs.setdefault("backoff", (0.1, 0.4))
    kwargs.setdefault("stall_timeout", 0.3)
    capture = CaptureThread(source, SIZE, on_event=lambda k, m: events.append((k, m)), **kwargs)
    captures.append(capture)
    capture.start()
    return capture, events


def test_slow_consumer_gets_only_the_newest_frame(captures):
    capture, _ = start(captures, FakeSource(period=0.001))
    taken, last = [], 0
    for _ in range(5):
        time.sleep(0.05)  # a slow consumer: many frames arrive meanwhile
        last, frame = capture.slot.get(after=last, timeout=1.0)
        assert frame.index == last - 1  # the newest one put, not the oldest waiting
        assert number_of(frame.image) == frame.index  # and its picture is that frame's
        taken.append(frame.index)
    capture.stop()
    assert capture.state == "stopped"
    gaps = np.diff(taken)
    assert (gaps > 1).all()  # frames in between were skipped, not queued
    count, newest = capture.slot.peek()
    unread = 1 if count > last else 0
    assert capture.drops == count - len(taken) - unread > 0
    assert capture.reads == count


@pytest.mark.parametrize("failure", ["none", "raise", "block"])
def test_failing_source_is_reopened_and_keeps_the_last_frame(captures, failure, caplog):
    caplog.set_level(logging.INFO, logger="realtime.live.capture")
    source = FakeSource(script={20: failure}, period=0.005, block_for=0.6)
    capture, events = start(captures, source)
    wait_for(lambda: capture.state == "reconnecting")
    count, held = capture.slot.peek()
    assert held.index == 19 and number_of(held.image) == 19
    time.sleep(0.05)
    assert capture.slot.peek()[0] == count  # nothing new while it reconnects; the last stays
    wait_for(lambda: capture.state == "running" and capture.reads > 40)
    assert capture.reopens == 1 and source.opens == 2 and source.closes >= 1
    kinds = [k for k, _ in events]
    expected = {"none": "ended", "raise": "error", "block": "stalled"}[failure]
    assert kinds == [expected, "back"]
    assert events[1][1] == "fake is back"
    if failure == "block":
        assert events[0][1] == "fake stalled for 0.3 s; reopening in 0.1 s"
        assert "stalled" in capture.last_error
    if failure == "raise":
        assert "fake device error" in capture.last_error
    assert any(m == "fake is back" for m in caplog.messages)
    # Frame numbers go on from where they were, and the pictures are the new reads.
    _, frame = capture.slot.get(after=count, timeout=1.0)
    assert frame.index > 19 and number_of(frame.image) > 19


def test_reopen_backs_off_exponentially(captures):
    source = FakeSource(script={5: "raise"}, open_failures=3)
    capture, events = start(captures, source)
    wait_for(lambda: capture.state == "running" and capture.reopens == 1, timeout=5.0)
    messages = [m for _, m in events]
    assert messages[0] == "fake failed: fake device error; reopening in 0.1 s"
    retries = [m.rsplit("retrying in ", 1)[1] for m in messages if "retrying" in m]
    assert retries == ["0.2 s", "0.4 s", "0.4 s"]  # doubling, capped at backoff[1]
    assert messages[-1] == "fake is back"
    assert source.opens == 5


def test_source_that_ends_is_reopened(tmp_path, captures):
    path = tmp_path / "three.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, SIZE)
    for i in range(3):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 60 * i, np.uint8))
    writer.release()
    source = VideoFileSource(path, loop=False)
    capture, events = start(captures, source, fps=200.0, backoff=(0.02, 0.02))
    wait_for(lambda: capture.reads >= 7)
    assert capture.reopens >= 2
    assert [k for k, _ in events][:2] == ["ended", "back"]


def test_paced_sources_do_not_spin(captures):
    source = FakeSource(period=0.0)
    source.is_live = False  # like a file: paced to fps instead of read flat out
    capture, _ = start(captures, source, fps=20.0)
    time.sleep(0.5)
    assert 4 <= capture.reads <= 14  # about 10 at 20 fps, with room for a busy machine
    assert capture.interval == pytest.approx(0.05)


def test_live_sources_are_never_paced():
    # Pacing a camera would only add latency: it is read as fast as it delivers.
    assert CaptureThread(FakeSource(), SIZE, fps=5.0).interval == 0.0


def test_stop_does_not_hang_on_a_blocked_read(captures):
    source = FakeSource(script={3: "block"}, block_for=30.0)
    capture, _ = start(captures, source, stall_timeout=10.0)
    wait_for(lambda: source.calls > 3)
    began = time.monotonic()
    capture.stop(timeout=2.0)
    assert time.monotonic() - began < 1.0
    assert capture.state == "stopped"
    assert source.closes == 0  # never closed under a read that is still running
    source.release.set()


def test_start_fails_clearly_when_the_source_cannot_open(captures):
    source = FakeSource()
    source.opens = 1  # the next open counts as a reopen, which fails
    source.open_failures = 1
    capture = CaptureThread(source, SIZE)
    with pytest.raises(SourceError, match="unplugged"):
        capture.start()
    assert capture.state == "stopped"


def test_frames_are_fitted_to_size(captures):
    wide = np.zeros((90, 160, 3), np.uint8)  # 16:9
    wide[:, :20] = 255  # bright bands at the far left and right get cropped off for 4:3
    wide[:, -20:] = 255
    wide[40:50, 75:85] = (0, 200, 0)
    fitted = fit_frame(wide, (40, 30))
    assert fitted.shape == (30, 40, 3)
    assert fitted[:, 0].max() == 0 and fitted[:, -1].max() == 0
    assert tuple(fitted[15, 20]) == (0, 200, 0)
    tall = fit_frame(np.zeros((200, 100, 3), np.uint8), (64, 48))
    assert tall.shape == (48, 64, 3)
    same = np.zeros((30, 40, 3), np.uint8)
    assert fit_frame(same, (40, 30)) is same


def test_bad_arguments_are_rejected():
    with pytest.raises(SourceError, match="fps"):
        CaptureThread(FakeSource(), SIZE, fps=0)
    with pytest.raises(SourceError, match="backoff"):
        CaptureThread(FakeSource(), SIZE, backoff=(2.0, 1.0))


def test_a_still_portrait_is_letterboxed_whole_not_cropped_through_the_head(tmp_path):
    from realtime.live.sources import ImageSource

    portrait = np.full((200, 100, 3), 128, np.uint8)  # (H, W, 3) a 1:2 portrait, grey
    portrait[:20, 40:60] = (255, 0, 0)  # the head, at the very top
    portrait[-20:, 40:60] = (0, 0, 255)  # the feet, at the very bottom
    path = tmp_path / "portrait.png"
    cv2.imwrite(str(path), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))

    def first_frame(fit: str) -> np.ndarray:
        capture = CaptureThread(ImageSource(path), (64, 36), fit=fit)  # a 16:9 dream
        capture.start()
        try:
            _, frame = capture.slot.get(timeout=3.0)
            return frame.image
        finally:
            capture.stop()

    boxed = first_frame("auto")  # a still: letterboxed
    assert boxed.shape == (36, 64, 3)
    assert boxed[:, :20].max() == 0 and boxed[:, -20:].max() == 0  # black bars at the sides
    assert boxed[1, 32, 0] > 200 and boxed[-2, 32, 2] > 200  # head and feet both there
    cropped = first_frame("crop")  # the other choice fills the frame and loses both
    assert cropped[:, 0].min() > 100
    assert cropped[..., 0].max() < 200 and cropped[..., 2].max() < 200
