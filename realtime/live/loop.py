"""The dream loop: one thread that turns the newest camera frame into the next dreamed frame."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import torch

from realtime.control.params import NAMES, LiveParams, Snapshot
from realtime.engine.device import is_unrecoverable, serial_cpu
from realtime.engine.models import DreamModel, ModelError, load_model
from realtime.engine.step import Dreamer
from realtime.engine.strategy import make_dreamer
from realtime.live.attract import AttractMode
from realtime.live.pipeline import FramePipeline, Pending
from realtime.live.rate import RateMeter
from realtime.live.slot import Frame, LatestSlot, Output

logger = logging.getLogger(__name__)

Callback = Callable[[Output], None]
DreamerFactory = Callable[[DreamModel, torch.device], Dreamer]


# A run of failed frames this long falls back to the last parameters that worked; as long again
# after that, and the process gives up (exit non-zero, so a service manager restarts it). 30
# frames is a second at 30 fps: long enough not to trip on a passing fault, short enough that
# the picture is not frozen for long.
FALLBACK_AFTER = 30
GIVE_UP_AFTER = 2 * FALLBACK_AFTER
# Not restored by the fall-back: the model (a load, not a fix) and the pause.
NOT_RESTORED = ("model", "paused")
LOADER_JOIN_S = 10.0  # how long stop() waits for a model still loading in the background


class LoopError(RuntimeError):
    """The dream loop could not start."""


class DreamLoop:
    """Owns the dream thread: snapshot params, run the frame pipeline, publish, and survive.

    One dream thread at a time: `recover()` (the watchdog's action) starts a new one only when
    the old one has ended; a thread that is alive but stuck cannot be replaced safely (both would
    write the same buffers), so the loop declares itself failed and `on_fatal` ends the process
    with a non-zero code for the service manager to restart. So do an unrecoverable CUDA error
    and a run of failed frames that the fall-back to the last working parameters did not cure.

    start()/stop()/recover()/stats() may be called from any thread; everything else runs on the
    dream thread. Autocast state is per thread, so the dream happens inside it.
    """

    def __init__(
        self,
        frames: LatestSlot[Frame],
        params: LiveParams,
        model: DreamModel,
        device: torch.device,
        callbacks: list[Callback] | None = None,
        max_frames: int | None = None,
        weights: str | None = None,
        attract: AttractMode | None = None,
        dreamer_factory: DreamerFactory = make_dreamer,
        flow_width: int = 160,
        on_fatal: Callable[[str], None] | None = None,
        download: bool = True,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Args:
        frames: the capture thread's latest-frame slot.
        params: the live parameters; one snapshot is taken per frame.
        model: the network to start with.
        device: where the dream runs.
        callbacks: called with each Output on the dream thread (recorder, snapshots, stats).
        max_frames: stop after this many outputs (None: run until stop()).
        weights: weights file for the starting model (also used if it is switched back to).
        attract: deepens the dream when the camera sees no motion (None: off).
        dreamer_factory: makes the dreamer for a model (the CUDA graphs where it can; the
            benchmark passes its naive reference here).
        flow_width: width in pixels at which the optical flow is computed.
        on_fatal: called once, with the reason, when the loop cannot go on (any thread).
        download: a model switched to live may download its weights; False refuses the switch
            when they are not on disk.
        on_error: told a fault the operator should see on status (a model that failed to load).
        """
        self.frames = frames
        self.params = params
        self.device = device
        self.callbacks = list(callbacks or [])
        self.max_frames = max_frames
        self.weights = {model.name: weights} if weights else {}
        self.on_fatal = on_fatal
        self.on_error = on_error
        self.download = download
        self.outputs: LatestSlot[Output] = LatestSlot()
        self.meter = RateMeter()
        self.done = threading.Event()  # set when max_frames is reached or the thread ends
        self.fatal: str | None = None  # why the loop gave up, once it has
        self.errors = 0
        self.heartbeat = 0  # bumps every pass of the loop, frame or not: the watchdog's pulse
        self.restarts = 0
        self._make_dreamer = dreamer_factory
        self.pipeline = FramePipeline(
            model, self._new_dreamer(model), device, flow_width=flow_width, attract=attract
        )
        self._failed_in_a_row = 0
        self._fell_back = False
        self._good: tuple[int, dict[str, object]] | None = None  # (version, state) that worked
        self._last_frame = 0
        self._index = 0
        self._switch: LatestSlot[tuple[DreamModel, Dreamer] | Exception] = LatestSlot()
        self._switching: str | None = None
        # Guards _loaders: stop() joins them while the dream thread may be adding one.
        self._lock = threading.Lock()
        self._loaders: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread = self._new_thread()

    # --- any thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def recover(self) -> None:
        """The watchdog saw no heartbeat: restart the dream thread if it has ended, else give up.

        A thread that is still alive is stuck inside a call that does not return (a driver, a
        device); starting a second one beside it would have two threads writing the same
        buffers, and abandoning it leaks whatever it holds. The process ends instead.
        """
        if self._stop.is_set() or self.fatal is not None:
            return
        if self._thread.is_alive():
            self.fail(
                f"the dream thread has been stuck for over the watchdog's timeout "
                f"(frame {self._last_frame}, heartbeat {self.heartbeat}); ending the process "
                f"so the service manager restarts it"
            )
            return
        self.restarts += 1
        logger.error("the dream thread had ended; starting a new one (restart %d)", self.restarts)
        self.done.clear()
        self._thread = self._new_thread()
        self._thread.start()

    def fail(self, reason: str) -> None:
        """Give up: log why once, stop, and tell `on_fatal` (the app exits non-zero)."""
        if self.fatal is not None:
            return
        self.fatal = reason
        logger.critical("dream loop failed: %s", reason)
        self._stop.set()
        self.done.set()
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dream thread and any model still loading; waits up to `timeout` for each."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("the dream thread did not stop within %.0f s", timeout)
        with self._lock:
            loaders = list(self._loaders)
        for loader in loaders:
            loader.join(min(timeout, LOADER_JOIN_S))
            if loader.is_alive():
                logger.error("a model load did not finish within %.0f s; leaving it", timeout)

    @property
    def model(self) -> DreamModel:
        return self.pipeline.model

    @property
    def alive_threads(self) -> int:
        """Dream threads of this loop that are running (never more than one)."""
        return int(self._thread.is_alive())

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.meter.read())
        out["errors"] = self.errors
        out["capture_drops"] = self.frames.drops
        return out

    def silence_allowed(self, normal: float, warming: float) -> float:
        """Seconds without a heartbeat the watchdog should allow now: `warming` while a frame
        dreams at a size new to the model (a GPU tunes kernels and captures graphs then),
        else `normal`."""
        return warming if self.pipeline.warming else normal

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="dream-loop", daemon=True)

    def _beat(self) -> None:
        self.heartbeat += 1

    def _new_dreamer(self, model: DreamModel) -> Dreamer:
        dreamer = self._make_dreamer(model, self.device)
        if hasattr(dreamer, "on_progress"):  # long graph captures keep the heartbeat going
            dreamer.on_progress = self._beat
            dreamer.class_recipe = self.params.target_recipe  # class graphs planned ahead too
        return dreamer

    # --- dream thread --------------------------------------------------------------------

    def _run(self) -> None:
        if self.device.type == "cpu":
            # The dream's torch team spins on every core between its ops; OpenCV's own pool (the
            # flow, the composing, the capture's resizing) woke and spun beside it. Run inline,
            # the bench's loop was faster in 9 of 12 runs paired in one process, by 2.0 fps on
            # ~22 (2026-11-22). Process-wide: so are the cores the dream owns.
            cv2.setNumThreads(1)
        pending: Pending | None = None
        try:
            while not self._stop.is_set():
                self._beat()
                if pending is not None and self.frames.count == self._last_frame:
                    pending = self._publish(pending)  # no new frame waiting: no reason to hold it
                if self._reached_max():
                    break
                count, frame = self.frames.get(self._last_frame, timeout=0.1)
                if frame is None or count == self._last_frame:
                    continue
                self._last_frame = count
                snap = self.params.snapshot()
                if snap.paused:
                    time.sleep(0.01)
                    continue
                started = self._start(frame, snap)
                if pending is not None:
                    pending = self._publish(pending)  # frame N, read back while N+1 dreams
                if started is not None and self.pipeline.overlaps:
                    pending = started
                elif started is not None:
                    self._publish(started)
                if self._reached_max():
                    break
            if pending is not None and not self._stop.is_set() and not self._reached_max():
                self._publish(pending)
        except BaseException:
            logger.exception("the dream thread ended on an unexpected error")
            raise
        finally:
            self.done.set()

    def _reached_max(self) -> bool:
        return self.max_frames is not None and self._index >= self.max_frames

    def _start(self, frame: Frame, snap: Snapshot) -> Pending | None:
        """Begin a frame; a failure is counted and handled here (None: nothing to publish)."""
        try:
            if self._poll_model_switch(snap):
                snap = self.params.snapshot()  # the swap changed the layer list, maybe the layer
            pending = self.pipeline.start(frame, snap)
        except torch.cuda.OutOfMemoryError as err:
            self.errors += 1
            self.pipeline.shrink(frame, err)
            return None
        except (RuntimeError, ValueError) as err:
            self._failed(frame, err)
            return None
        self._succeeded(snap)
        return pending

    def _publish(self, pending: Pending) -> None:
        """Wait for a started frame's picture and hand it to the display and the callbacks."""
        try:
            image = self.pipeline.finish(pending)
        except RuntimeError as err:
            self._failed(pending.frame, err)
            return None
        done = time.monotonic()
        frame, snap = pending.frame, pending.snap
        out = Output(
            dream=image,
            camera=frame.image,
            index=self._index,
            capture_ts=frame.timestamp,
            done_ts=done,
            layer=snap.layer,
            target=snap.target_name,
        )
        self._index += 1
        self.meter.tick(done - frame.timestamp, done - pending.started, done)
        self.outputs.put(out)
        for callback in self.callbacks:
            try:
                callback(out)
            except Exception as err:  # noqa: BLE001 - a broken recorder or stats hook must not stop the show
                logger.error("per-frame callback %r failed: %s", callback, err)
        return None

    def process(self, frame: Frame, snap: Snapshot) -> Output:
        """Dream one frame and publish it, on the calling thread (tests, tools).

        Raises what the frame raised (the thread logs and counts it instead).
        """
        if self._poll_model_switch(snap):
            snap = self.params.snapshot()
        self._publish(self.pipeline.start(frame, snap))
        return self.outputs.peek()[1]

    def _succeeded(self, snap: Snapshot) -> None:
        self._failed_in_a_row = 0
        self._fell_back = False
        if self._good is None or self._good[0] != snap.version:
            self._good = (snap.version, self.params.state())

    def _failed(self, frame: Frame, err: Exception) -> None:
        """A failing frame is logged and skipped; the show goes on with the next one. A run of
        them falls back to the parameters that last worked, then gives up."""
        self.errors += 1
        self._failed_in_a_row += 1
        if is_unrecoverable(err):
            self.fail(f"unrecoverable device error, the GPU needs a fresh process: {err}")
            return
        if self.errors <= 5 or self.errors % 100 == 0:
            logger.error(
                "frame %d failed and was skipped (%d so far): %s", frame.index, self.errors, err
            )
        if self._failed_in_a_row >= GIVE_UP_AFTER:
            self.fail(f"{self._failed_in_a_row} frames in a row failed, the last with: {err}")
        elif self._failed_in_a_row >= FALLBACK_AFTER and not self._fell_back:
            self._fell_back = True
            self._fall_back(err)

    def _fall_back(self, err: Exception) -> None:
        if self._good is None:
            logger.error(
                "%d frames in a row failed (%s) and no parameters have worked yet",
                self._failed_in_a_row,
                err,
            )
            return
        values = {k: v for k, v in self._good[1].items() if k in NAMES and k not in NOT_RESTORED}
        try:
            self.params.update(values, glide=False)
        except ValueError as refused:
            logger.error("falling back failed: %s", refused)
            return
        logger.error(
            "%d frames in a row failed (last: %s); fell back to the last parameters that worked",
            self._failed_in_a_row,
            err,
        )

    def _poll_model_switch(self, snap: Snapshot) -> bool:
        """Start loading the model asked for in the background; swap it in once it is ready.

        One load at a time. The newest request wins: a model that finishes loading after
        another was asked for is dropped, and the newest one is loaded next (or none, if the
        request went back to the model dreaming).

        Returns:
            True when a load finished (swapped in, dropped or refused): the parameters changed.
        """
        count, loaded = self._switch.peek()
        if loaded is not None and count > 0 and self._switching is not None:
            name, self._switching = self._switching, None
            self._switch = LatestSlot()
            dreaming = self.pipeline.model.name
            wanted = self.params.get("model")
            if isinstance(loaded, Exception):
                why = f"could not switch to model {name}, keeping {dreaming}: {loaded}"
                logger.error("%s", why)
                if self.on_error is not None:
                    self.on_error(why)
                self.params.refuse_model(name)
            elif wanted != name:
                logger.info(
                    "model %s loaded, but %s has been asked for since; not switching to %s",
                    name,
                    wanted,
                    name,
                )
            else:
                self.pipeline.set_model(*loaded)
                self.params.set_layers(loaded[0].layers, name)
                logger.info("switched to model %s", name)
            return True
        if snap.model != self.pipeline.model.name and self._switching is None:
            self._switching = snap.model
            loader = threading.Thread(
                target=self._load, args=(snap.model, self._switch), name="model-load", daemon=True
            )
            with self._lock:
                self._loaders = [t for t in self._loaders if t.is_alive()] + [loader]
            loader.start()
            logger.info(
                "loading model %s in the background; dreaming on with %s",
                snap.model,
                self.pipeline.model.name,
            )
        return False

    def _load(self, name: str, slot: LatestSlot) -> None:
        """A model-load thread: the model and its dreamer (folding and its check) off the
        dream thread, on one CPU thread beside it (engine.device)."""
        serial_cpu()
        try:
            model, _ = load_model(
                name, device=self.device, weights=self.weights.get(name), download=self.download
            )
            slot.put((model, self._new_dreamer(model)))
        except (ModelError, OSError, RuntimeError) as err:
            slot.put(err)
