"""The video recorder: every frame written can be read back, from any thread, and errors are clear."""

import signal
import threading
import time

import cv2
import numpy as np
import pytest

from realtime.live.recorder import RecorderError, VideoRecorder
from realtime.live.slot import Output

STEP = 12  # grey level per frame number, far apart enough to survive compression


def grey(i: int, size=(64, 48)) -> np.ndarray:
    return np.full((size[1], size[0], 3), (STEP * i) % 256, np.uint8)


def read_back(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_every_frame_is_read_back(tmp_path, name):
    path = tmp_path / name
    recorder = VideoRecorder(path, fps=25.0)
    assert not path.exists()  # opened lazily, on the first frame
    for i in range(12):
        recorder(grey(i))
    recorder.close()
    frames = read_back(path)
    assert recorder.frames_written == len(frames) == 12
    assert all(f.shape == (48, 64, 3) for f in frames)
    assert [round(f.mean() / STEP) for f in frames] == list(range(12))
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)


def test_colours_are_written_as_rgb(tmp_path):
    path = tmp_path / "red.avi"
    with VideoRecorder(path) as recorder:
        red = np.zeros((48, 64, 3), np.uint8)
        red[..., 0] = 255  # red in RGB
        recorder(red)
    (frame,) = read_back(path)
    b, g, r = frame.reshape(-1, 3).mean(0)  # OpenCV reads BGR
    assert r > 200 and g < 50 and b < 50


def test_other_sizes_are_resized_and_odd_sizes_made_even(tmp_path):
    path = tmp_path / "sizes.mp4"
    recorder = VideoRecorder(path)
    recorder(grey(1, (65, 49)))
    assert recorder.size == (64, 48)
    recorder(grey(2, (130, 98)))
    recorder(grey(3, (20, 10)))
    recorder.close()
    frames = read_back(path)
    assert len(frames) == recorder.frames_written == 3
    assert all(f.shape == (48, 64, 3) for f in frames)


def test_accepts_the_dream_loops_output(tmp_path):
    path = tmp_path / "loop.avi"
    recorder = VideoRecorder(path)
    camera = grey(0)
    recorder(Output(dream=grey(5), camera=camera, index=0, capture_ts=0.0, done_ts=0.0))
    recorder.close()
    (frame,) = read_back(path)
    assert round(frame.mean() / STEP) == 5


def test_frames_from_many_threads_all_land(tmp_path):
    path = tmp_path / "threads.avi"
    recorder = VideoRecorder(path)

    def write(k):
        for i in range(10):
            recorder(grey(k * 10 + i))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.close()
    assert recorder.frames_written == len(read_back(path)) == 40


def test_close_is_idempotent_and_later_frames_are_ignored(tmp_path, caplog):
    path = tmp_path / "closed.mp4"
    recorder = VideoRecorder(path)
    recorder(grey(1))
    recorder.close()
    recorder.close()
    recorder(grey(2))
    recorder(grey(3))
    assert recorder.frames_written == 1
    assert len(read_back(path)) == 1
    assert sum("ignoring later frames" in m for m in caplog.messages) == 1
    VideoRecorder(tmp_path / "never.mp4").close()  # closing before any frame is fine too
    assert not (tmp_path / "never.mp4").exists()


def test_close_from_a_signal_handler_mid_write(tmp_path):
    """A handler that runs on the writing thread must neither deadlock nor lose frames."""
    path = tmp_path / "signal.mp4"
    recorder = VideoRecorder(path)
    previous = signal.signal(signal.SIGALRM, lambda *_: recorder.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        deadline = time.monotonic() + 5.0
        i = 0
        while not recorder.closed and time.monotonic() < deadline:
            recorder(grey(i, (320, 240)))  # big enough that the signal often lands inside
            i += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert recorder.closed
    assert recorder.frames_written > 0
    assert len(read_back(path)) == recorder.frames_written


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(RecorderError, match="folder .*does not exist"):
        VideoRecorder(tmp_path / "missing" / "out.mp4")
    with pytest.raises(RecorderError, match=r"expected a file ending in \.mp4.*\.avi.*'\.gif'"):
        VideoRecorder(tmp_path / "out.gif")
    with pytest.raises(RecorderError, match="fps > 0"):
        VideoRecorder(tmp_path / "out.mp4", fps=0)
    (tmp_path / "taken.mp4").mkdir()  # a folder where the file should go: OpenCV cannot open it
    recorder = VideoRecorder(tmp_path / "taken.mp4")
    with pytest.raises(RecorderError, match="could not open .*writable"):
        recorder(grey(0))
    with pytest.raises(RecorderError, match=r"\(H, W, 3\) uint8 RGB frame"):
        VideoRecorder(tmp_path / "x.avi")(np.zeros((4, 4), np.uint8))


def test_realtime_recording_plays_at_the_pace_it_was_dreamed(tmp_path):
    """Dreamed at 10 fps into a 30 fps file: each frame fills three file frames, so the clip
    lasts as long as the dream did; frames faster than the file rate are left out."""
    from realtime.live.slot import Output

    path = tmp_path / "paced.mp4"
    rec = VideoRecorder(path, fps=30.0, realtime=True)
    shades = []
    for i in range(10):  # 10 frames, 0.1 s apart: 0.9 s of dreaming
        image = np.full((48, 64, 3), 20 * i, np.uint8)
        shades.append(20 * i)
        rec(Output(dream=image, camera=image, index=i, capture_ts=0.0, done_ts=100.0 + 0.1 * i))
    for i in range(5):  # then 5 frames within one file frame: only the first is due
        image = np.full((48, 64, 3), 250, np.uint8)
        rec(
            Output(
                dream=image, camera=image, index=10 + i, capture_ts=0.0, done_ts=101.0 + 0.001 * i
            )
        )
    rec.close()
    cap = cv2.VideoCapture(str(path))
    got = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        got.append(int(frame.mean()))
    cap.release()
    assert len(got) == rec.frames_written == 31  # int(1.0 s * 30) + 1
    assert rec.frames_received == 15
    assert [round(g / 20) * 20 for g in got[1:4]] == [20, 20, 20]  # frame 1 held 0.1 s
    assert abs(len(got) / 30.0 - 1.0) < 0.05  # the clip lasts as long as the dream did
