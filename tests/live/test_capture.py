"""The capture thread: newest frame only, pacing, and recovery from sources that stall or fail."""

import logging
import os
import threading
import time

import cv2
import numpy as np
import pytest

from realtime.live.capture import CaptureThread, fit_frame
from realtime.live.sources import FrameSource, ImageSource, SourceError, VideoFileSource

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
        # A slow consumer: at least three frames arrive meanwhile. (Waiting on the count, not a
        # fixed sleep: on a loaded machine the capture thread once put one frame in 50 ms.)
        wait_for(lambda last=last: capture.slot.peek()[0] >= last + 3)
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
    wait_for(lambda: capture.state in ("stalled", "retrying"))
    count, held = capture.slot.peek()
    assert held.index == 19 and number_of(held.image) == 19
    time.sleep(0.05)
    assert capture.slot.peek()[0] == count  # nothing new while it reconnects; the last stays
    wait_for(lambda: capture.state == "ok" and capture.reads > 40)
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
    wait_for(lambda: capture.state == "ok" and capture.reopens == 1, timeout=15.0)
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


# --- issue 11, item 10: say it on status, then a holding picture -------------------------------


def still(path, colour) -> ImageSource:
    """A holding picture: a still PNG of one colour, written here and opened."""
    cv2.imwrite(str(path), np.full((SIZE[1], SIZE[0], 3), colour[::-1], np.uint8))  # BGR on disk
    source = ImageSource(path)
    source.open()
    return source


BLUE = (20, 40, 230)


def is_blue(image) -> bool:
    return bool(np.abs(image.astype(int) - BLUE).max() <= 2)


def test_source_fps_drops_to_zero_and_the_state_says_stalled_when_frames_stop(captures):
    """Issue 11: with the frames stopped, status fps stayed at its last value for ever."""
    source = FakeSource(script={30: "block"}, period=0.01, block_for=30.0)
    capture, _ = start(captures, source, stall_timeout=0.5)
    wait_for(lambda: capture.reads >= 20)
    assert capture.state == "ok" and 20 <= capture.source_fps <= 110
    wait_for(lambda: capture.state == "stalled", timeout=5.0)
    assert "stalled for 0.5 s" in capture.last_error
    wait_for(lambda: capture.source_fps == 0.0, timeout=3.0)  # the rate's own stale limit
    assert capture.reads == 30


def test_a_video_file_truncated_mid_show_falls_back_to_the_holding_picture_and_back(
    tmp_path, captures
):
    """Issue 11: a video file truncated to 0 bytes mid-show retried for ever, the last frame
    frozen. Now: stalled, then the holding picture after hold_after, and the file again once it
    is back (the source retried all along)."""
    path = tmp_path / "show.avi"
    # Noise, 4 MB: more than FFmpeg buffers, so the truncation is seen (a tiny file is read once).
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    holding = still(tmp_path / "holding.png", BLUE)
    capture, events = start(
        captures,
        VideoFileSource(path),
        fps=50.0,
        backoff=(0.05, 0.2),
        holding=holding,
        hold_after=0.5,
    )
    wait_for(lambda: capture.reads >= 10)
    assert capture.state == "ok" and not is_blue(capture.slot.peek()[1].image)
    os.truncate(path, 0)
    truncated = time.monotonic()
    wait_for(lambda: capture.state == "holding", timeout=5.0)
    held_after = time.monotonic() - truncated
    count = capture.slot.peek()[0]
    wait_for(lambda: capture.slot.peek()[0] > count + 5)  # the holding picture moves on
    assert is_blue(capture.slot.peek()[1].image)
    assert capture.source_fps == 0.0 and "is empty (0 bytes)" in capture.last_error
    assert 0.5 <= held_after < 3.0
    kinds = [k for k, _ in events]
    assert "holding" in kinds and "back" not in kinds
    assert any("has given no frame for" in m and "holding.png" in m for _, m in events)
    path.write_bytes(data)  # the file is put back: the source retried meanwhile takes over
    wait_for(lambda: capture.state == "ok", timeout=5.0)
    wait_for(lambda: not is_blue(capture.slot.peek()[1].image))
    assert [k for k, _ in events][-1] == "back"
    wait_for(lambda: capture.source_fps > 0)


class LateCamera(FakeSource):
    """A camera that enumerates late at boot: opening fails until `plugged` is set."""

    def __init__(self):
        super().__init__(period=0.005)
        self.plugged = threading.Event()

    def open(self):
        self.opens += 1
        if not self.plugged.is_set():
            raise SourceError("camera 0 could not be opened: no camera at index 0")
        self._open = True


def test_start_without_the_camera_shows_the_holding_picture_and_takes_the_camera_when_it_comes(
    tmp_path, captures
):
    """Issue 11: at start with no camera, the gallery preset exited at once."""
    camera = LateCamera()
    capture, events = start(
        captures, camera, holding=still(tmp_path / "h.png", BLUE), backoff=(0.05, 0.1)
    )
    wait_for(lambda: capture.state == "holding")
    wait_for(lambda: capture.slot.peek()[0] > 3)
    assert is_blue(capture.slot.peek()[1].image) and capture.reads == 0
    assert "no camera at index 0" in capture.last_error
    assert any("could not be opened; showing the holding picture" in m for _, m in events)
    wait_for(lambda: camera.opens >= 3)  # retried meanwhile
    camera.plugged.set()
    wait_for(lambda: capture.state == "ok" and capture.reads > 5)
    frame = capture.slot.peek()[1]
    assert not is_blue(frame.image) and number_of(frame.image) >= 5
    assert [k for k, _ in events][-1] == "back"


def test_without_a_holding_picture_the_last_frame_holds_and_the_state_says_retrying(captures):
    source = FakeSource(script={10: "raise"}, open_failures=100)
    capture, events = start(
        captures, source, backoff=(0.05, 0.1), hold_after=0.1, stall_timeout=2.0
    )  # a long stall limit: a busy machine's slow first read must not count as the fault
    wait_for(lambda: capture.state == "retrying")
    count, held = capture.slot.peek()
    time.sleep(0.3)
    assert capture.slot.peek()[0] == count and number_of(held.image) == 9  # frozen, but said
    assert "holding" not in [k for k, _ in events]


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
