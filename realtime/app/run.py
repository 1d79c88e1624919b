"""The live installation: wires capture, dream loop, display, OSC, recording and logging together."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from realtime.app.audience import check_audience, start_audience
from realtime.app.logs import StatsLogger
from realtime.control.config import Config
from realtime.control.params import LiveParams
from realtime.control.status import MAX_PENDING_ERRORS
from realtime.engine.device import cpu_ticks, pick_device, serial_cpu, steal_note, steal_share
from realtime.engine.models import MODEL_NAMES, load_model
from realtime.knobs import parse_size
from realtime.live.attract import AttractMode
from realtime.live.capture import CaptureThread
from realtime.live.loop import DreamLoop
from realtime.live.offthread import OffThread
from realtime.live.recorder import VideoRecorder
from realtime.live.sender import FrameSender
from realtime.live.sources import VideoFileSource, holding_source, make_source
from realtime.live.watchdog import Watchdog

if TYPE_CHECKING:
    from realtime.control.status import StatusSender

logger = logging.getLogger(__name__)


# Exit code when the dream loop gives up (a stuck dream thread, a GPU error that needs a fresh
# process, frames failing for good): EX_SOFTWARE from sysexits.h; systemd's Restart=always (or
# on-failure) starts the installation again.
EXIT_FAILED = 70


class AppError(RuntimeError):
    """The installation could not start."""


def display_available() -> bool:
    """Whether a window can be opened: an X or Wayland display on Linux; always elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def window_size(dream: tuple[int, int], min_width: int = 960) -> tuple[int, int]:
    """The window's size: the dream's, scaled up to at least `min_width` (the shader scales)."""
    w, h = dream
    return dream if w >= min_width else (min_width, round(min_width * h / w))


@dataclass
class Parts:
    """The running pieces, so shutdown can stop each one (any thread may read it)."""

    stop: threading.Event = field(default_factory=threading.Event)
    stoppers: list = field(default_factory=list)  # (name, callable) in the order to call them
    exit_code: int = 0  # what the process returns; set by fail()
    status: StatusSender | None = None  # status out, once started (set by start_status)
    unsent: list = field(default_factory=list)  # errors reported before status out started
    # Guards status and unsent: the dream thread reports while the main thread starts status.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def report(self, text: str) -> None:
        """Send an error line to the status target (kept until it starts: a fault at start is
        sent too). Any thread; never blocks."""
        with self._lock:
            if self.status is None:
                self.unsent = [*self.unsent[-(MAX_PENDING_ERRORS - 1) :], text]
                return
            status = self.status
        status.error(text)

    def start_status(self, status: StatusSender) -> None:
        """Status out is running: send what was reported before, and the rest as it comes."""
        with self._lock:
            self.status, unsent, self.unsent = status, self.unsent, []
        for text in unsent:
            status.error(text)

    def fail(self, reason: str, grace: float) -> None:
        """A part cannot go on: stop everything (recordings finalised) and exit non-zero. If
        the shutdown itself hangs (a driver call that never returns), end the process hard
        after `grace` seconds. Any thread may call it."""
        self.exit_code = EXIT_FAILED
        self.stop.set()

        def hard_exit() -> None:
            logger.critical(
                "shutdown took longer than %.0f s after: %s; exiting now", grace, reason
            )
            logging.shutdown()
            os._exit(EXIT_FAILED)

        timer = threading.Timer(grace, hard_exit)
        timer.daemon = True
        timer.start()

    def add(self, name: str, fn) -> None:
        self.stoppers.append((name, fn))

    def shutdown(self) -> None:
        """Stop everything, newest first; a part that fails to stop is logged, the rest still stop."""
        for name, fn in reversed(self.stoppers):
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - shutdown must reach every part
                logger.error("stopping %s failed: %s", name, err)
        self.stoppers.clear()


def run(
    cfg: Config, headless: bool = False, frames: int | None = None, snapshot: str | None = None
) -> int:
    """Run the installation until the window closes, `frames` outputs are made, or a signal.

    Args:
        snapshot: a snapshot PNG whose parameters to start from (saved by /dream/snapshot or S).

    Returns:
        The process exit code.
    """
    parts = Parts()
    outputs = _outputs(cfg, parts)  # before the model loads: a missing NDI library ends it now
    size = parse_size(cfg.capture.size)
    check_audience(cfg.audience)  # a bad setting stops the start before the model loads
    midi_port = None
    if cfg.midi.port:  # checked before the model loads: a missing extra or port fails at once
        from realtime.control.midi import find_midi

        midi_port = find_midi(cfg.midi.port, cfg.midi.bindings)
    device = pick_device(cfg.model.device)
    serial_cpu()  # torch's parallel team is the dream thread's alone (engine.device)
    model, _reason = load_model(  # load_model logs which model it chose and why
        None if cfg.model.name == "auto" else cfg.model.name,
        device=device,
        weights=cfg.model.weights or None,
    )
    params = LiveParams.from_config(cfg, model.layers, MODEL_NAMES, model.name)
    if not cfg.model.layer:
        params.set("layer", model.default_layer)
    if snapshot:
        from realtime.control.presets import apply_snapshot

        apply_snapshot(snapshot, params, glide=False)
    snap = params.snapshot()
    logger.info(
        "dreaming on %s at %dx%d, layer %s, target %s",
        device,
        size[0],
        size[1],
        snap.layer,
        snap.target_name,
    )

    summary = None  # (start time, CPU ticks, loop, recorder, outputs) of a headless run
    _install_signal_handlers(parts.stop)
    try:
        source = make_source(cfg.capture.source, size)  # a spec of no known form: refused here
        # A video file plays at its own rate; stills and the demo at the configured pace.
        pace = None if isinstance(source, VideoFileSource) else cfg.capture.fps
        capture = CaptureThread(
            source,
            size,
            fps=pace,
            stall_timeout=cfg.capture.stall_timeout,
            holding=holding_source(cfg.capture.holding, size),
            hold_after=cfg.capture.hold_after,
            fit=cfg.capture.fit,
        )
        capture.start()  # with a holding picture, a camera that is not there yet is retried
        parts.add("capture", capture.stop)

        callbacks = []
        recorder = _recorder(cfg, parts) if cfg.record.path else None
        if recorder is not None:
            # Encoding takes milliseconds a frame, more with the repeats a slow dream needs to
            # keep the clip's pace: on its own thread, never on the dream's.
            writer = OffThread(recorder, "recorder")
            callbacks.append(writer)
            parts.add("recorder", lambda: (writer.close(timeout=30.0), recorder.close()))
        snapshots = _snapshot_saver(cfg, params, parts)
        callbacks.append(snapshots)
        for output in outputs:  # each takes frames off the dream thread into its own
            output.start()
            parts.add(f"{output.kind} output", output.stop)
            callbacks.append(output)

        loop = DreamLoop(
            capture.slot,
            params,
            model,
            device,
            callbacks=callbacks,
            max_frames=frames,
            weights=cfg.model.weights or None,
            attract=AttractMode(cfg.attract) if cfg.attract.enabled else None,
            flow_width=cfg.feedback.flow_width,
            on_fatal=lambda reason: parts.fail(reason, cfg.watchdog.exit_grace),
            download=cfg.model.live_download,
            on_error=parts.report,
        )

        def stats() -> dict[str, object]:
            out = loop.stats()
            out["source"] = capture.state
            out["source_fps"] = capture.source_fps
            # every fault counts: frames, the recording, snapshots (loop.stats has the frames')
            out["errors"] = int(out["errors"]) + snapshots.errors
            if recorder is not None:
                out["recording"] = recorder.state
                out["errors"] += recorder.errors
            for output in outputs:
                out.update(output.stats())
                out["errors"] += output.errors
            return out

        loop.start()
        parts.add("dream loop", loop.stop)
        watchdog = Watchdog()
        # The loop's heartbeat moves every pass, frame or not: it stops only if the thread hangs
        # (then recover() ends the process: the loop's on_fatal) or has ended (then it restarts).
        # A frame at a dream size new to the model may take far longer on a GPU (kernel tuning,
        # graph capture: 25 s for the first frame on an H100), and is allowed warmup_timeout.
        wd = cfg.watchdog
        watchdog.watch(
            "dream loop",
            lambda: loop.heartbeat,
            loop.recover,
            timeout=lambda: loop.silence_allowed(wd.dream_timeout, wd.warmup_timeout),
        )
        watchdog.start()
        parts.add("watchdog", watchdog.stop)
        audience = start_audience(cfg.audience, params, parts)
        midi = None
        if midi_port is not None:
            from realtime.control.midi import open_midi

            midi, close_midi = open_midi(params, *midi_port)
            parts.add("midi", close_midi)
        _start_osc(cfg, params, stats, parts, None if audience is None else audience[0], midi)
        stats_log = StatsLogger(stats, cfg.log.stats_interval)
        stats_log.start()
        parts.add("stats log", stats_log.stop)

        if headless:
            started, ticks = time.monotonic(), cpu_ticks()
            # Woken by the last frame itself, so the summary's time ends with it.
            while not parts.stop.is_set() and not loop.done.wait(0.2):
                pass
            summary = (started, ticks, loop, recorder, outputs)
        else:
            from realtime.present.display import DreamWindow

            window = DreamWindow(
                loop.outputs,
                params,
                cfg.display,
                stats=stats,
                on_close=parts.stop.set,
                size=window_size(size),
                audience=None if audience is None else audience[1],
                midi=midi,
            )
            # --frames ends a windowed run too: the loop's done event closes the window.
            threading.Thread(
                target=lambda: loop.done.wait() and parts.stop.set(),
                name="frames-done",
                daemon=True,
            ).start()
            window.run(parts.stop)
    finally:
        parts.stop.set()
        parts.shutdown()
    if headless and summary is not None:
        _summarise(*summary)
    if parts.exit_code:
        logger.critical(
            "exiting with code %d so the service manager restarts the installation", parts.exit_code
        )
    return parts.exit_code


def _summarise(
    started: float,
    ticks: tuple[int, int] | None,
    loop: DreamLoop,
    recorder: VideoRecorder | None,
    outputs: list[FrameSender],
) -> None:
    """One line at the end of a headless run: frames, frame rate (and how much of the CPU a
    virtual machine's host took meanwhile, where that was much), where the clip is, what the
    outputs sent. `started` and `ticks`: time.monotonic() and cpu_ticks() when the run began."""
    frames = loop.stats()["frames"]
    seconds = max(time.monotonic() - started, 1e-9)
    taken = steal_note(steal_share(ticks, cpu_ticks()))
    taken = f"; {taken}" if taken else ""
    clip = ""
    if recorder is not None and recorder.paths:
        files = recorder.paths
        where = str(files[0].resolve())
        if len(files) > 1:
            where += f" .. {files[-1].name} ({len(files)} segments)"
        clip = (
            f"; the clip is {where} ({recorder.frames_written} frames at {recorder.fps:g} fps: "
            f"it plays at the pace it was dreamed)"
        )
    elif recorder is not None:
        clip = "; nothing was recorded"
    if recorder is not None and recorder.error:
        clip += f"; the recording stopped early: {recorder.error}"
    for output in outputs:
        clip += f"; {output.kind} sent {output.sent} frames ({output.dropped} dropped)"
        if output.error:
            clip += f", failed: {output.error}"
    fps = frames / seconds
    logger.info("dreamed %d frames in %.1f s (%.1f fps%s)%s", frames, seconds, fps, taken, clip)


def _outputs(cfg: Config, parts: Parts) -> list[FrameSender]:
    """The NDI and stream outputs the config asks for, not started yet.

    Raises:
        OutputError: NDI output without the NDI library (with how to install it).
    """
    outputs: list[FrameSender] = []
    if cfg.output.ndi:
        from realtime.live.ndi import NdiOutput

        outputs.append(NdiOutput(cfg.output.ndi, fps=cfg.capture.fps, on_error=parts.report))
    if cfg.output.stream:
        from realtime.live.stream import StreamOutput

        outputs.append(
            StreamOutput(
                cfg.output.stream,
                fps=cfg.capture.fps,
                retry_s=cfg.output.retry_seconds,
                on_error=parts.report,
            )
        )
    return outputs


def _recorder(cfg: Config, parts: Parts) -> VideoRecorder:
    """The live recording: paced as dreamed, in segments, stopped (not the show) by a disk fault."""
    recorder = VideoRecorder(
        cfg.record.path,
        fps=cfg.record.fps,
        realtime=True,  # the clip plays at the pace it was dreamed, whatever the frame rate
        segment_seconds=cfg.record.segment_seconds,
        min_free_mb=cfg.record.min_free_mb,
        on_error=parts.report,
    )
    if recorder.requested.suffix.lower() in (".mp4", ".m4v", ".mov"):  # the index is at the end
        seconds = cfg.record.segment_seconds
        segment = f"{seconds:g} s segment" if seconds else "file"
        logger.warning(
            "recording to %s: a kill or a power cut leaves its open %s unreadable; .mkv is "
            "readable up to its last seconds",
            recorder.requested.suffix,
            segment,
        )
    return recorder


def _snapshot_saver(cfg: Config, params: LiveParams, parts: Parts):
    from realtime.live.snapshots import SnapshotSaver

    return SnapshotSaver(
        params,
        cfg.record.snapshot_dir,
        min_interval=cfg.record.snapshot_interval,
        budget_mb=cfg.record.snapshot_budget_mb,
        min_free_mb=cfg.record.min_free_mb,
        on_error=parts.report,
    )


def _start_osc(
    cfg: Config, params: LiveParams, stats, parts: Parts, audience=None, midi=None
) -> None:
    """Start the OSC server and status sender; a busy port is logged and the show goes on without.

    A bad osc.host or osc.allow never gets here: the configuration refuses it at start."""
    if not cfg.osc.enabled:
        return
    from realtime.control.osc import OscServer, StatusSender

    status = None
    if cfg.osc.status_to:
        status = StatusSender(
            params, stats, cfg.osc.status_to, hz=cfg.osc.status_hz, audience=audience
        )
        status.start()
        parts.add("status", status.stop)
        parts.start_status(status)
    if (
        not cfg.osc.allow
        and not ipaddress.ip_address(
            "127.0.0.1" if cfg.osc.host == "localhost" else cfg.osc.host
        ).is_loopback
    ):
        logger.warning(
            "OSC on %s takes orders from anyone who can reach this machine; set osc.allow to the "
            "control machines (and see the README on untrusted networks)",
            cfg.osc.host,
        )
    try:
        server = OscServer(
            params,
            host=cfg.osc.host,
            port=cfg.osc.port,
            allow=cfg.osc.allow,
            status=status,
            snapshot_dir=cfg.record.snapshot_dir,
            audience=audience,
            midi=midi,
        )
        server.start()
    except OSError as err:
        logger.error(
            "OSC disabled: %s (listening on %s:%d; free the port or pass --osc-port)",
            err,
            cfg.osc.host,
            cfg.osc.port,
        )
        return
    parts.add("osc", server.stop)
    logger.info("OSC listening on %s:%d", cfg.osc.host, server.address[1])


def _install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM ask for a clean stop (recording finalised, camera released)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame) -> None:
        logger.info("%s received; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
