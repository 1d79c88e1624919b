"""Stream output through a real ffmpeg: MPEG-TS over UDP on loopback read back by a second ffmpeg,
and a missing ffmpeg, a refused address and an ffmpeg killed mid-show each one log line."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from realtime.live.sender import OutputError
from realtime.live.stream import StreamOutput, ffmpeg_command
from tests._require import require

W, H = 160, 96


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    require(path is not None, "ffmpeg is not installed (scripts/install-system-deps.sh)")
    return path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def picture() -> np.ndarray:
    """Left half red, right half blue, with a smooth ramp down the picture: (H, W, 3) RGB."""
    image = np.empty((H, W, 3), np.uint8)
    image[:, : W // 2] = (200, 30, 30)
    image[:, W // 2 :] = (30, 30, 200)
    image[..., 1] = np.linspace(20, 120, H, dtype=np.uint8)[:, None]
    return image


def feed(out: StreamOutput, seconds: float, until=lambda: False) -> int:
    """Offer frames at 30 fps for `seconds` or until `until()`; returns how many."""
    image = picture()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and not until():
        out(image)
        n += 1
        time.sleep(1 / 30)
    return n


def read_back(ffmpeg: str, url: str, out: StreamOutput, path: Path, frames: int = 10) -> int:
    """Read `frames` frames from `url` with a second ffmpeg into `path` (raw RGB) while feeding
    `out`; returns the reader's exit code. The reader starts once the stream's ffmpeg runs (an
    SRT caller finds the listener then), and is tried a second time if it could not connect."""
    cmd = [
        *(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"),
        *("-probesize", "200000", "-analyzeduration", "1000000"),  # start within a second
        *("-i", url, "-frames:v", str(frames)),
        *("-f", "rawvideo", "-pix_fmt", "rgb24", "-y", str(path)),
    ]
    feed(out, 10.0, until=lambda: out.sent > 0)
    for _ in range(2):
        feed(out, 0.5)
        reader = subprocess.Popen(cmd)
        try:
            feed(out, 10.0, until=lambda r=reader: r.poll() is not None)
        finally:
            if reader.poll() is None:
                reader.kill()
            reader.wait(10)
        if reader.returncode == 0:
            break
    return reader.returncode


@pytest.mark.parametrize(
    ("send", "receive"),
    [
        ("udp://127.0.0.1:{port}", "udp://127.0.0.1:{port}?timeout=8000000"),
        # as TouchDesigner's Video Stream In TOP takes it: the dream listens, TD calls
        ("srt://127.0.0.1:{port}?mode=listener", "srt://127.0.0.1:{port}?mode=caller"),
    ],
    ids=["udp", "srt"],
)
def test_a_stream_is_read_back_by_ffmpeg_with_its_size_and_pixels(ffmpeg, tmp_path, send, receive):
    port = free_port()
    received = tmp_path / "received.rgb"
    out = StreamOutput(send.format(port=port), fps=30, retry_s=1.0)
    out.start()
    try:
        code = read_back(ffmpeg, receive.format(port=port), out, received)
        # Errors while the reader read, not after: once an SRT caller has its frames and hangs
        # up, the listener's next write fails ("Input/output error"), and the output counts that
        # as an outage and retries (as it should when TouchDesigner goes away). Under load that
        # once landed before the stop below.
        errors_while_read = out.errors
    finally:
        out.stop()
    assert code == 0
    data = received.read_bytes()
    assert len(data) == 10 * W * H * 3  # ten frames of the dream's size
    frames = np.frombuffer(data, np.uint8).reshape(10, H, W, 3)
    assert np.abs(frames[-1].astype(int) - picture()).mean() < 8  # H.264 at its default quality
    assert out.sent >= 10 and errors_while_read == 0 and out.state == "stopped"


def test_a_missing_ffmpeg_is_one_log_line_and_not_retried(caplog):
    out = StreamOutput("udp://127.0.0.1:9", ffmpeg="no-such-ffmpeg-here", retry_s=0.1)
    out.start()
    try:
        with caplog.at_level(logging.DEBUG):
            feed(out, 0.5)
    finally:
        out.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "'no-such-ffmpeg-here' is not installed" in errors[0]
    assert "apt-get install ffmpeg" in errors[0]
    assert out.errors == 1 and out.retries == 0 and out.sent == 0 and out.dropped > 5


def test_a_refused_address_is_one_log_line_and_retried(ffmpeg, caplog):
    port = free_port(socket.SOCK_STREAM)  # nothing listens there: the RTSP connection is refused
    reported = []
    out = StreamOutput(f"rtsp://127.0.0.1:{port}/dream", retry_s=0.3, on_error=reported.append)
    out.start()
    try:
        with caplog.at_level(logging.INFO):
            feed(out, 8.0, until=lambda: out.retries >= 1)
    finally:
        out.stop()
    assert out.errors == 1 and out.retries >= 1  # ffmpeg was started again, refused again
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Connection refused" in errors[0], errors
    assert len(reported) == 1 and "stream output failed" in reported[0]
    assert sum("streaming" in r.getMessage() for r in caplog.records) == 1  # not per retry


def test_ffmpeg_killed_mid_show_is_one_log_line_and_it_streams_again(ffmpeg, caplog):
    out = StreamOutput(f"udp://127.0.0.1:{free_port()}", retry_s=0.3)
    out.start()
    try:
        with caplog.at_level(logging.INFO):
            assert feed(out, 10.0, until=lambda: out.sent >= 5) and out.state == "sending"
            first = out.pid
            os.kill(first, signal.SIGKILL)
            feed(out, 10.0, until=lambda: out.state == "failed")
            assert "exit code -9" in out.error
            sent = out.sent
            feed(out, 10.0, until=lambda: out.state == "sending" and out.sent > sent + 5)
    finally:
        out.stop()
    assert out.pid is None and out.sent > sent and out.pid != first
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_odd_sizes_are_padded_and_devices_get_raw_frames():
    cmd = ffmpeg_command("udp://10.0.0.5:5000", (641, 360), 30.0)
    assert "pad=ceil(iw/2)*2:ceil(ih/2)*2" in cmd and "libx264" in cmd
    assert cmd[-1] == "udp://10.0.0.5:5000?pkt_size=1316" and cmd[-3:-1] == ["-f", "mpegts"]
    device = ffmpeg_command("/dev/video7", (640, 360), 30.0)
    assert device[-3:] == ["-f", "v4l2", "/dev/video7"] and "libx264" not in device
    assert ffmpeg_command("rtsp://h:8554/x", (640, 360), 30.0)[-4:-1] == [
        "rtsp",
        "-rtsp_transport",
        "tcp",
    ]


@pytest.mark.parametrize("url", ["http://h:80/x", "udp://nohost", "udp:/127.0.0.1:5", "dream"])
def test_a_bad_url_is_refused_at_start_with_the_valid_forms(url):
    with pytest.raises(OutputError, match=r"udp://127.0.0.1:5000 .* /dev/videoN"):
        StreamOutput(url)


def test_stop_ends_an_ffmpeg_that_waits_for_a_caller_that_never_comes(ffmpeg, caplog):
    out = StreamOutput(f"srt://127.0.0.1:{free_port()}?mode=listener", retry_s=1.0)
    out.start()
    feed(out, 10.0, until=lambda: out.pid is not None and out.sent > 0)
    feed(out, 1.0)  # ffmpeg listens, its pipe fills, the sender thread's write blocks
    pid = out.pid
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        out.stop()
    assert time.monotonic() - started < 7.0  # two JOIN_S at most
    assert out.state == "stopped" and out.pid is None
    with pytest.raises(ProcessLookupError):  # no ffmpeg left behind, listening for ever
        os.kill(pid, 0)
    assert not caplog.records  # stopping is not a fault
