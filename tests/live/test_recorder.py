"""The video recorder: every frame written can be read back, from any thread, and errors are clear;
a kill or a full disk keeps what was written, a fault stops the recording once, never the show."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.knobs import VIDEO_SUFFIXES
from realtime.live.recorder import FOURCC_BY_SUFFIX, RecorderError, VideoRecorder
from realtime.live.slot import Output
from tests._tmpfs import small_disk

ROOT = Path(__file__).resolve().parents[2]

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


@pytest.mark.parametrize("name", ["out.mkv", "out.mp4", "out.avi"])
def test_every_frame_is_read_back(tmp_path, name):
    path = tmp_path / name
    recorder = VideoRecorder(path, fps=25.0)
    assert path.stat().st_size == 0  # the name is claimed at start, opened on the first frame
    assert recorder.state == "ready"
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
    with pytest.raises(RecorderError, match=r"expected a file ending in \.mkv.*\.avi.*'\.gif'"):
        VideoRecorder(tmp_path / "out.gif")
    with pytest.raises(RecorderError, match="fps > 0"):
        VideoRecorder(tmp_path / "out.mp4", fps=0)
    with pytest.raises(RecorderError, match="segment_seconds >= 0"):
        VideoRecorder(tmp_path / "out.mp4", segment_seconds=-1)
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


def noisy(i: int, size=(320, 240)) -> np.ndarray:
    """A frame that compresses badly, so a few MB of disk fill within a few dozen frames."""
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_suffixes_are_the_ones_the_config_accepts():
    assert set(FOURCC_BY_SUFFIX) == set(VIDEO_SUFFIXES)


def test_an_existing_file_is_never_overwritten(tmp_path, caplog):
    (tmp_path / "show.mkv").write_bytes(b"yesterday")
    (tmp_path / "show-1.mkv").write_bytes(b"the day before")
    with caplog.at_level(logging.INFO, logger="realtime.live.recorder"):
        with VideoRecorder(tmp_path / "show.mkv") as rec:
            for i in range(3):
                rec(grey(i))
    assert (tmp_path / "show.mkv").read_bytes() == b"yesterday"
    assert (tmp_path / "show-1.mkv").read_bytes() == b"the day before"
    assert rec.paths == [tmp_path / "show-2.mkv"]
    assert len(read_back(rec.paths[0])) == 3
    assert sum("never overwrites" in m for m in caplog.messages) == 1


def test_overwrite_replaces_only_the_named_file(tmp_path):
    (tmp_path / "render.mkv").write_bytes(b"the last render")
    (tmp_path / "render-1.mkv").write_bytes(b"not ours")
    with VideoRecorder(tmp_path / "render.mkv", fps=2.0, overwrite=True, segment_seconds=1) as rec:
        for i in range(3):
            rec(grey(i))
    assert [p.name for p in rec.paths] == ["render.mkv", "render-2.mkv"]
    assert [len(read_back(p)) for p in rec.paths] == [2, 1]
    assert (tmp_path / "render-1.mkv").read_bytes() == b"not ours"


def test_segments_are_new_numbered_files_holding_every_frame(tmp_path):
    rec = VideoRecorder(tmp_path / "seg.mkv", fps=10.0, segment_seconds=1.0)
    for i in range(25):
        rec(grey(i))
    rec.close()
    assert [p.name for p in rec.paths] == ["seg.mkv", "seg-1.mkv", "seg-2.mkv"]
    clips = [read_back(p) for p in rec.paths]
    assert [len(c) for c in clips] == [10, 10, 5]
    shades = [f.mean() for c in clips for f in c]
    assert all(abs(s - (STEP * i) % 256) < 4 for i, s in enumerate(shades))


# A recorder in a child process, killed with SIGKILL while it writes at 640x360 and 30 fps: a
# moving textured picture (the live case) or a black one (the smallest frames, the most of them
# in FFmpeg's buffer). It prints the frames the encoder has taken after each frame.
KILLED_CHILD = """
import sys, time
import cv2, numpy as np
from realtime.live.recorder import VideoRecorder
rec = VideoRecorder(sys.argv[1], fps=30.0, segment_seconds=float(sys.argv[2]))
texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (360, 700, 3), np.uint8), (0, 0), 3)
if sys.argv[3] == "black":
    texture[:] = 0
for i in range(900):  # 30 s at most; the test kills it long before
    rec(np.ascontiguousarray(texture[:, i % 60 : i % 60 + 640]))
    print(rec.frames_written, flush=True)
    time.sleep(1 / 30)
"""


def record_then_kill(
    path: Path, seconds: float, segment_seconds: float = 0.0, picture: str = "moving"
) -> int:
    """Run KILLED_CHILD until it has written `seconds` of video, SIGKILL it; frames written."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), str(segment_seconds), picture],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    written, deadline = 0, time.monotonic() + 60
    try:
        while written < seconds * 30 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            written = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert written >= seconds * 30, "the child stopped writing early"
    return written


def test_a_matroska_recording_killed_by_sigkill_reads_back_to_within_a_second(tmp_path):
    path = tmp_path / "killed.mkv"
    written = record_then_kill(path, seconds=3.0)
    frames = read_back(path)
    # measured: 78 of 90 (what FFmpeg's 256 KB write buffer held was lost)
    assert written - 30 <= len(frames) <= written
    assert frames[0].shape == (360, 640, 3)


def test_a_black_matroska_recording_killed_by_sigkill_loses_at_most_its_buffer(tmp_path):
    """The worst picture: a black 640x360 MJPG frame is 1.6 KB, so the 256 KB buffer holds
    ~160 frames (5.4 s at 30 fps; 2.6 s at 960x540)."""
    path = tmp_path / "black.mkv"
    written = record_then_kill(path, seconds=7.0, picture="black")
    frames = read_back(path)
    assert written - 6 * 30 <= len(frames) <= written and len(frames) > 0
    assert all(f.max() < 16 for f in frames)


def test_an_mp4_killed_by_sigkill_loses_only_its_open_segment(tmp_path):
    path = tmp_path / "killed.mp4"
    written = record_then_kill(path, seconds=2.5, segment_seconds=1.0)
    closed = [path, tmp_path / "killed-1.mp4"]  # two whole seconds, closed before the kill
    assert [len(read_back(p)) for p in closed] == [30, 30]
    assert written >= 75 and (tmp_path / "killed-2.mp4").exists()  # the open one: unreadable


def test_a_full_disk_stops_the_recording_once_and_keeps_what_was_written(tmp_path, caplog):
    """A real 2 MB tmpfs filled by the recording itself (min_free_mb 0: no early stop)."""
    with small_disk(tmp_path / "disk", 2048) as disk:
        reports = []
        rec = VideoRecorder(disk / "full.mkv", fps=30.0, on_error=reports.append)
        with caplog.at_level(logging.INFO):
            for i in range(300):  # ~10 s of frames, the disk is full after a few dozen
                rec(noisy(i % 50))
            rec.close()
        assert rec.state == "stopped" and rec.errors == 1 and "failed" in rec.error
        assert len(reports) == 1 and len(errors_logged(caplog)) == 1
        assert rec.dropped > 0 and rec.frames_written + rec.dropped >= 299
        assert any("stopped early" in m for m in caplog.messages)  # the last line says so
        frames = read_back(rec.paths[0])
        assert rec.frames_written - 30 <= len(frames) <= rec.frames_written  # within 1 s


def test_low_free_space_stops_the_recording_cleanly_before_the_disk_is_full(
    tmp_path, caplog, monkeypatch
):
    import realtime.live.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "CHECK_S", 0.0)  # look every frame: they come fast here
    with small_disk(tmp_path / "disk", 6144) as disk:
        reports = []
        rec = VideoRecorder(disk / "low.mkv", min_free_mb=2.0, on_error=reports.append)
        with caplog.at_level(logging.ERROR):
            for i in range(300):
                rec(noisy(i % 50))
        assert rec.state == "stopped" and "record.min_free_mb" in rec.error
        assert len(reports) == 1 and len(errors_logged(caplog)) == 1
        assert rec.dropped > 0
        # closed while there was room: every frame the encoder took is in the file
        assert len(read_back(rec.paths[0])) == rec.frames_written > 0


def test_a_read_only_folder_is_one_error_at_start_and_no_file(tmp_path, caplog):
    with small_disk(tmp_path / "ro", 1024, readonly=True) as folder:
        reports = []
        with caplog.at_level(logging.ERROR):
            rec = VideoRecorder(folder / "show.mkv", on_error=reports.append)
            assert rec.state == "stopped" and "Read-only" in rec.error
            for i in range(175):
                rec(grey(i))
            rec.close()
        assert rec.dropped == 175 and rec.frames_written == 0 and rec.paths == []
        assert len(reports) == 1 and len(errors_logged(caplog)) == 1
        assert list(folder.iterdir()) == []


class Disk:
    """os.statvfs with a chosen free space (MB), for a disk that fills without a tmpfs."""

    def __init__(self, free_mb: float) -> None:
        self.free_mb = free_mb

    def __call__(self, folder: str) -> os.statvfs_result:
        blocks = int(self.free_mb * 256)  # 4 KiB blocks
        return os.statvfs_result((4096, 4096, 10**6, blocks, blocks, 10**6, 10**5, 10**5, 0, 255))


def test_too_little_space_at_start_records_nothing_and_says_so_once(tmp_path, caplog):
    reports = []
    with caplog.at_level(logging.ERROR):
        rec = VideoRecorder(
            tmp_path / "x.mkv", min_free_mb=500, statvfs=Disk(120), on_error=reports.append
        )
        for i in range(50):
            rec(grey(i))
        rec.close()
    assert rec.state == "stopped" and "only 120 MB free" in rec.error and "500 MB" in rec.error
    assert len(errors_logged(caplog)) == 1 and len(reports) == 1
    assert list(tmp_path.iterdir()) == []


def test_space_running_out_mid_recording_stops_it(tmp_path, monkeypatch):
    import realtime.live.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "CHECK_S", 0.0)
    disk = Disk(1000)
    rec = VideoRecorder(tmp_path / "x.mkv", min_free_mb=500, statvfs=disk)
    for i in range(20):
        if i == 12:
            disk.free_mb = 499  # another program filled the disk
        rec(grey(i))
    assert rec.state == "stopped" and rec.frames_written == 13 and rec.dropped == 7  # seen after 12
    rec.close()
    assert len(read_back(rec.paths[0])) == 13


class FailingWriter:
    """A real cv2.VideoWriter whose writes fail after `ok` frames, as on a disk that went bad."""

    def __init__(self, ok: int, opened: bool = True) -> None:
        self.ok, self.opened, self.inner = ok, opened, None

    def __call__(self, path, fourcc, fps, size):
        if self.opened:
            self.inner = cv2.VideoWriter(path, fourcc, fps, size)
        return self

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def write(self, image) -> bool:
        if self.ok <= 0:
            return False
        self.ok -= 1
        self.inner.write(image)
        return True

    def release(self) -> None:
        if self.inner is not None:
            self.inner.release()


def test_a_failing_write_stops_the_recording_once(tmp_path, caplog):
    reports = []
    rec = VideoRecorder(tmp_path / "x.mkv", open_writer=FailingWriter(8), on_error=reports.append)
    with caplog.at_level(logging.ERROR):
        for i in range(100):
            rec(grey(i))
        rec.close()
    assert rec.frames_written == 8 and rec.dropped == 91 and rec.errors == 1
    assert len(errors_logged(caplog)) == 1 and len(reports) == 1
    assert len(read_back(rec.paths[0])) == 8


def test_a_writer_that_cannot_open_is_one_error_not_one_per_frame(tmp_path, caplog):
    rec = VideoRecorder(tmp_path / "x.mkv", open_writer=FailingWriter(0, opened=False))
    with caplog.at_level(logging.ERROR):
        for i in range(175):
            rec(grey(i))
        rec.close()
    assert rec.state == "stopped" and "could not open" in rec.error
    assert len(errors_logged(caplog)) == 1 and rec.dropped == 175
    assert list(tmp_path.iterdir()) == []  # no empty file left behind


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_recording_resumes_into_a_new_file_once_space_is_freed(tmp_path, caplog, monkeypatch):
    """Space runs out at 3 a.m.; a technician frees some: the recording comes back by itself,
    in a new file, without a restart, and the show's status says recording again."""
    import realtime.live.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "CHECK_S", 0.0)
    disk, clock = Disk(1000), Clock()
    rec = VideoRecorder(tmp_path / "x.mkv", min_free_mb=500, statvfs=disk, clock=clock)
    with caplog.at_level(logging.INFO):
        for i in range(10):
            rec(grey(i))
        disk.free_mb = 100  # another program filled the disk
        for i in range(10, 20):
            rec(grey(i))
            clock.t += 10.0  # 100 s pass; the first retry (60 s) finds the disk still full
        assert rec.state == "stopped" and rec.resumes == 0
        assert len(errors_logged(caplog)) == 1  # a retry on a full disk is quiet
        disk.free_mb = 2000  # space freed
        rec(grey(20))  # the next retry is 120 s after the first: not yet
        assert rec.state == "stopped"
        clock.t += 120.0
        for i in range(21, 31):
            rec(grey(i))
        rec.close()
    assert rec.state == "closed" and rec.resumes == 1 and rec.errors == 1
    assert [p.name for p in rec.paths] == ["x.mkv", "x-1.mkv"]
    assert len(read_back(rec.paths[0])) == 11  # 0..10: the fall in space is seen after frame 10
    assert len(read_back(rec.paths[1])) == 10  # 21..30
    assert rec.dropped == 10  # 11..20
    assert any("recording resumes into" in m and "x-1.mkv" in m for m in caplog.messages)


def test_a_resumed_realtime_recording_does_not_fill_the_gap_with_copies(tmp_path, monkeypatch):
    """Realtime pacing restarts with the new file: ten minutes without recording are not ten
    minutes of one repeated frame."""
    import realtime.live.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "CHECK_S", 0.0)
    disk, clock = Disk(1000), Clock()
    rec = VideoRecorder(
        tmp_path / "x.mkv", fps=10.0, realtime=True, min_free_mb=500, statvfs=disk, clock=clock
    )
    t = 0.0
    for i in range(10):  # 1 s at 10 fps
        rec(Output(grey(i), grey(i), i, t, t, "l", "t"))
        t += 0.1
    disk.free_mb = 100
    rec(Output(grey(10), grey(10), 10, t, t, "l", "t"))
    disk.free_mb = 2000
    clock.t += 600.0
    t += 600.0  # ten minutes later
    for i in range(11, 21):
        rec(Output(grey(i), grey(i), i, t, t, "l", "t"))
        t += 0.1
    rec.close()
    assert rec.resumes == 1 and len(read_back(rec.paths[1])) == 10
