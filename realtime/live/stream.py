"""Stream output: the dream piped into an ffmpeg process that encodes it with low latency and
sends it to udp://, srt://, rtsp://, rtmp:// or a v4l2loopback camera device."""

from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import threading

import cv2
import numpy as np

from realtime.knobs import KnobError, check_stream_url
from realtime.live.sender import FrameSender, OutputError, OutputFault

logger = logging.getLogger(__name__)

# The container each kind of address takes. MPEG-TS is what udp:// and srt:// receivers (the
# Video Stream In TOP, OBS's media source, ffplay, VLC) read; rtsp:// pushes to a server.
MUXERS = {"udp": ["-f", "mpegts"], "srt": ["-f", "mpegts"], "rtmp": ["-f", "flv"]}
RTSP = ["-f", "rtsp", "-rtsp_transport", "tcp"]
# A keyframe every second at the capture pace: a receiver that joins late shows a picture that
# soon. No B-frames (zerolatency): every frame is sent as soon as it is encoded.
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
NICE = 10  # ffmpeg runs at this niceness: on a busy CPU the stream drops frames, not the dream
CLOSE_S = 2.0  # ffmpeg's time to finish after its input ends, before it is killed
STDERR_LINES = 5  # ffmpeg's last lines kept to say why it stopped


def ffmpeg_command(
    url: str, size: tuple[int, int], fps: float, ffmpeg: str = "ffmpeg"
) -> list[str]:
    """The ffmpeg command line that reads raw RGB frames of `size` on stdin and sends them to
    `url`, each stamped with the time it arrived (frames come at the dream's pace, not `fps`).

    Raises:
        OutputError: `url` is not a stream address this output knows.
    """
    try:
        check_stream_url(url)
    except KnobError as err:
        raise OutputError(str(err)) from err
    w, h = size
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{w}x{h}"]
    cmd += ["-framerate", f"{fps:g}", "-use_wallclock_as_timestamps", "1", "-i", "pipe:0", "-an"]
    if w % 2 or h % 2:  # 4:2:0 needs even sides
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
    if url.startswith("/dev/"):  # v4l2loopback takes raw frames
        return [*cmd, "-pix_fmt", "yuv420p", "-f", "v4l2", url]
    # x264's own threads: a few on a big machine, one where the dream needs every core
    threads = max(1, min(4, (os.cpu_count() or 1) // 4))
    cmd += [*H264, "-g", str(max(1, round(fps))), "-threads", str(threads)]
    cmd += ["-vsync", "passthrough", "-flush_packets", "1"]  # -vsync: also ffmpeg 4.x's spelling
    scheme = url.partition("://")[0]
    if scheme == "udp" and "?" not in url:
        url += "?pkt_size=1316"  # 7 TS packets: one datagram under any network's MTU
    return [*cmd, *MUXERS.get(scheme, RTSP), url]


class StreamOutput(FrameSender):
    """Pipes every dreamed frame into ffmpeg, which encodes and sends it to `url`.

    ffmpeg starts on the first frame, at its size (later frames of another size are scaled to
    it). A missing ffmpeg, an address that refuses, or an ffmpeg that dies is a fault: one log
    line, the show goes on; ffmpeg is started again every `retry_s` (not when it is missing).
    The pipe's writes block only the sender thread, never the dream.

    Threads: as FrameSender; ffmpeg is started, fed and stopped on the sender thread, and its
    error output is read by a daemon thread per ffmpeg process, which ends with the process.
    """

    kind = "stream"

    def __init__(self, url: str, fps: float = 30.0, ffmpeg: str = "ffmpeg", **kwargs) -> None:
        """Args:
        url: udp://HOST:PORT, srt://HOST:PORT, rtsp://HOST:PORT/PATH, rtmp://HOST/APP/KEY or
            /dev/videoN.
        fps: the rate the stream declares, and one keyframe per this many frames.
        ffmpeg: the ffmpeg program (a name on PATH or a path).
        kwargs: FrameSender's retry_s and on_error.

        Raises:
            OutputError: a malformed url.
        """
        ffmpeg_command(url, (16, 16), fps, ffmpeg)  # refuses a bad url now, at start
        super().__init__(url, **kwargs)
        self.fps = float(fps)
        self.ffmpeg = ffmpeg
        self.size: tuple[int, int] | None = None  # (width, height) ffmpeg was started at
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._reader: threading.Thread | None = None  # reads the running ffmpeg's stderr

    @property
    def pid(self) -> int | None:
        """ffmpeg's process id while it runs (tests end it to show the show goes on)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def _open(self, width: int, height: int) -> None:
        program = shutil.which(self.ffmpeg)
        if program is None:
            self.retry_s = None  # it will not appear by itself
            raise OutputFault(
                f"{self.ffmpeg!r} is not installed: install ffmpeg (apt-get install ffmpeg, "
                "brew install ffmpeg) and start again"
            )
        self.size = (width, height)
        cmd = ffmpeg_command(self.target, self.size, self.fps, program)
        self._stderr.clear()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                bufsize=0,  # each frame goes straight into the pipe
            )
        except OSError as err:
            raise OutputFault(f"ffmpeg could not start: {err}") from err
        self._proc = proc
        if hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
            except OSError as err:  # it has already ended: the first write says why
                logger.debug("could not lower ffmpeg's priority: %s", err)
        self._reader = threading.Thread(
            target=self._read_stderr, args=(proc,), name="stream-ffmpeg-log", daemon=True
        )
        self._reader.start()
        self._note("streaming %dx%d to %s through ffmpeg", width, height, self.target)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        """Keep ffmpeg's last lines (the reason it stopped); ends when ffmpeg does."""
        with proc.stderr:  # type: ignore[union-attr]
            for raw in proc.stderr:  # type: ignore[union-attr]
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self._stderr.append(line)
                    logger.debug("ffmpeg: %s", line)

    def _send(self, image: np.ndarray) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise OutputFault(self._why_stopped())
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        try:
            proc.stdin.write(np.ascontiguousarray(image).data)  # type: ignore[union-attr]
        except OSError as err:  # BrokenPipeError: it is gone or going; its reason is in stderr
            raise OutputFault(self._why_stopped()) from err

    def _why_stopped(self) -> str:
        """What ffmpeg said before it stopped (waiting a moment for it to end and say it)."""
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=CLOSE_S)
            except subprocess.TimeoutExpired:
                pass  # still running with its input gone: _close kills it
        if self._reader is not None:
            self._reader.join(CLOSE_S)
        said = " / ".join(self._stderr) or "nothing"
        ended = f"exit code {code}" if code is not None else "its input closed"
        return f"ffmpeg stopped ({ended}); it said: {said}"

    def _abort(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # the stuck write fails with a broken pipe

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError as err:  # its end of the pipe is already gone
            logger.debug("closing ffmpeg's input: %s", err)
        try:
            proc.wait(timeout=CLOSE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
