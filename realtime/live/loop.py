"""The dream loop: one thread that turns the newest camera frame into the next dreamed frame."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from realtime.control.params import LiveParams, Snapshot
from realtime.engine.dream import DreamConfig, Dreamer
from realtime.engine.fastpath import make_dreamer
from realtime.engine.models import DreamModel, ModelError, load_model
from realtime.engine.objectives import ObjectiveError, build
from realtime.live.attract import AttractMode
from realtime.live.feedback import Feedback
from realtime.live.slot import Frame, LatestSlot, Output
from realtime.live.transfer import Downloader, Uploader

logger = logging.getLogger(__name__)

Callback = Callable[[Output], None]
DreamerFactory = Callable[[DreamModel, torch.device], Dreamer]


class LoopError(RuntimeError):
    """The dream loop could not start."""


class RateMeter:
    """Frames per second and latency, smoothed; the loop thread writes, any thread reads."""

    def __init__(self, smoothing: float = 0.9) -> None:
        self._smoothing = smoothing  # weight of the past in the moving averages (0.9: ~10 frames)
        # Guards the fields below.
        self._lock = threading.Lock()
        self._last: float | None = None
        self.fps = 0.0
        self.latency_ms = 0.0
        self.dream_ms = 0.0
        self.frames = 0

    def tick(self, latency_s: float, dream_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            a = self._smoothing if self.frames else 0.0
            if self._last is not None and now > self._last:
                rate = 1.0 / (now - self._last)
                self.fps = a * self.fps + (1 - a) * rate if self.fps else rate
            self._last = now
            self.latency_ms = a * self.latency_ms + (1 - a) * latency_s * 1000.0
            self.dream_ms = a * self.dream_ms + (1 - a) * dream_s * 1000.0
            self.frames += 1

    def read(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "fps": self.fps,
                "latency_ms": self.latency_ms,
                "dream_ms": self.dream_ms,
                "frames": self.frames,
            }


class DreamLoop:
    """Owns the dream thread: snapshot params, upload, feedback, dream, publish.

    start()/stop()/stats() may be called from any thread; everything else runs on the
    dream thread. Autocast state is per thread, so the dream happens inside it.
    """

    def __init__(
        self,
        frames: LatestSlot[Frame],
        params: LiveParams,
        model: DreamModel,
        device: torch.device,
        base: DreamConfig | None = None,
        callbacks: list[Callback] | None = None,
        max_frames: int | None = None,
        weights: str | None = None,
        attract: AttractMode | None = None,
        dreamer_factory: DreamerFactory = make_dreamer,
        flow_width: int = 160,
    ) -> None:
        """Args:
        frames: the capture thread's latest-frame slot.
        params: the live parameters; one snapshot is taken per frame.
        model: the network to start with.
        device: where the dream runs.
        base: dream settings that are not live (gradient normalisation, ...).
        callbacks: called with each Output on the dream thread (recorder, snapshots, stats).
        max_frames: stop after this many outputs (None: run until stop()).
        weights: weights file for the starting model (also used if it is switched back to).
        attract: deepens the dream when the camera sees no motion (None: off).
        dreamer_factory: makes the dreamer for a model (the CUDA fast path where it can; the
            benchmark passes its naive reference here).
        flow_width: width in pixels at which the optical flow is computed (config feedback.flow_width).
        """
        self.frames = frames
        self.params = params
        self.device = device
        self.base = base or DreamConfig()
        self.callbacks = list(callbacks or [])
        self.max_frames = max_frames
        self.weights = {model.name: weights} if weights else {}
        self.attract = attract
        self.scale = 1.0  # dream size relative to the frame; lowered after CUDA out-of-memory
        self.outputs: LatestSlot[Output] = LatestSlot()
        self.meter = RateMeter()
        self.done = threading.Event()  # set when max_frames is reached or the thread ends
        self.errors = 0
        self.heartbeat = 0  # bumps every pass of the loop, frame or not: the watchdog's pulse
        self._model = model
        self._make_dreamer = dreamer_factory
        self._dreamer = dreamer_factory(model, device)
        self._feedback = Feedback(device, flow_width=flow_width)
        self._upload = Uploader(device)  # reused (pinned on CUDA) buffers, one set per frame size
        self._download = Downloader(device)
        self._objective_key: tuple | None = None
        self._objective = None
        self._reset_seen = 0
        self._last_frame = 0
        self._index = 0
        self._switch: LatestSlot[tuple[DreamModel, Dreamer] | Exception] = LatestSlot()
        self._switching: str | None = None
        self._stop = threading.Event()
        self._generation = 0  # a restarted loop bumps this; an abandoned thread sees it and ends
        self._thread = self._new_thread()

    # --- any thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def restart(self) -> None:
        """Abandon the current dream thread (it may be stuck) and start a fresh one.

        Called by the watchdog. The old thread ends by itself if it ever returns.
        """
        self._generation += 1
        self._thread = self._new_thread()
        self._thread.start()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._run, args=(self._generation,), name="dream-loop", daemon=True
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def model(self) -> DreamModel:
        return self._model

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.meter.read())
        out["errors"] = self.errors
        out["capture_drops"] = self.frames.drops
        return out

    # --- dream thread --------------------------------------------------------------------

    def _run(self, generation: int) -> None:
        try:
            while not self._stop.is_set() and generation == self._generation:
                self.heartbeat += 1
                count, frame = self.frames.get(self._last_frame, timeout=0.1)
                if frame is None or count == self._last_frame:
                    continue
                snap = self.params.snapshot()
                if snap.paused:
                    self._last_frame = count
                    time.sleep(0.01)
                    continue
                self._last_frame = count
                try:
                    self.process(frame, snap)
                except torch.cuda.OutOfMemoryError as err:
                    self._shrink(frame, err)
                except (RuntimeError, ValueError) as err:
                    # A failing frame is logged and skipped; the show goes on with the next one.
                    self.errors += 1
                    if self.errors <= 5 or self.errors % 100 == 0:
                        logger.error(
                            "frame %d failed and was skipped (%d so far): %s",
                            frame.index,
                            self.errors,
                            err,
                        )
                if self.max_frames is not None and self._index >= self.max_frames:
                    break
        finally:
            if generation == self._generation:
                self.done.set()

    def _shrink(self, frame: Frame, err: Exception) -> None:
        """After CUDA out-of-memory: dream at 3/4 of the size from now on, and say so."""
        self.errors += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        old = self.scale
        self.scale = max(0.25, self.scale * 0.75)  # 0.25: below that the dream is a blur
        h, w = frame.image.shape[:2]
        logger.error(
            "out of GPU memory dreaming at %dx%d (%s); dreaming at %dx%d from now on",
            round(w * old),
            round(h * old),
            str(err).splitlines()[0],
            round(w * self.scale),
            round(h * self.scale),
        )

    def process(self, frame: Frame, snap: Snapshot) -> Output:
        """Dream one frame and publish it. Runs on the dream thread (or a test's thread)."""
        if self._poll_model_switch(snap):
            snap = self.params.snapshot()  # the swap changed the layer list and maybe the layer
        if self.attract is not None:
            snap = self.attract.modulate(snap, frame.image)
        if snap.reset_count != self._reset_seen:
            self._reset_seen = snap.reset_count
            self._feedback.reset()
        t0 = time.monotonic()
        camera_t = self._upload(frame.image)  # (1, 3, H, W), valid until the next upload
        x = self._feedback.apply(
            camera_t, frame.image, snap.feedback, flow=snap.flow, zoom=snap.zoom, rotate=snap.rotate
        )  # (1, 3, H, W)
        if snap.steps > 0:
            x = self._dream(x, snap)
        self._feedback.remember(x)
        image = self._download(x)  # (H, W, 3) uint8: the frame's one read-back
        done = time.monotonic()
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
        self.meter.tick(done - frame.timestamp, done - t0, done)
        self.outputs.put(out)
        for callback in self.callbacks:
            try:
                callback(out)
            except Exception as err:  # noqa: BLE001 - a broken recorder or stats hook must not stop the show
                logger.error("per-frame callback %r failed: %s", callback, err)
        return out

    def _dream(self, x: torch.Tensor, snap: Snapshot) -> torch.Tensor:
        """Dream x (1, 3, H, W), at a reduced size after an out-of-memory error."""
        objective, cfg = self._objective_for(snap), self._config_for(snap)
        if self.scale >= 1.0:
            return self._dreamer.dream(x, objective, cfg)
        h, w = x.shape[-2:]
        small = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        dreamed = self._dreamer.dream(small, objective, cfg)
        # Carry only the added detail up, so the picture itself stays sharp.
        detail = F.interpolate(dreamed - small, size=(h, w), mode="bilinear", align_corners=False)
        return (x + detail).clamp_(0, 1)

    def _objective_for(self, snap: Snapshot):
        key = (self._model.name, snap.layer, snap.target)
        if key != self._objective_key:
            try:
                self._objective = build(self._model, layer=snap.layer, target=snap.target)
            except ObjectiveError as err:
                same_model = self._objective_key is not None and self._objective_key[0] == key[0]
                if not same_model:
                    raise  # an objective of another model's layers cannot be kept
                logger.error("objective refused, keeping %r: %s", self._objective, err)
            self._objective_key = key
        return self._objective

    def _config_for(self, snap: Snapshot) -> DreamConfig:
        return replace(
            self.base,
            steps=snap.steps,
            octaves=snap.octaves,
            octave_scale=snap.octave_scale,
            step_size=snap.step_size,
            jitter=snap.jitter,
        )

    def _poll_model_switch(self, snap: Snapshot) -> bool:
        """Start loading a newly asked-for model in the background; swap it in once it is ready.

        Returns:
            True when a load finished (swapped in or refused) and the parameters changed.
        """
        count, loaded = self._switch.peek()
        if loaded is not None and count > 0 and self._switching is not None:
            name, self._switching = self._switching, None
            if isinstance(loaded, Exception):
                logger.error(
                    "could not switch to model %s, keeping %s: %s", name, self._model.name, loaded
                )
                self.params.set_layers(self._model.layers, self._model.name)
            else:
                self._model, self._dreamer = loaded
                self._objective_key = None
                self.params.set_layers(self._model.layers, self._model.name)
                logger.info("switched to model %s", self._model.name)
            self._switch = LatestSlot()
            return True
        if snap.model != self._model.name and self._switching is None:
            self._switching = snap.model
            slot = self._switch
            threading.Thread(
                target=self._load, args=(snap.model, slot), name="model-load", daemon=True
            ).start()
            logger.info(
                "loading model %s in the background; dreaming on with %s",
                snap.model,
                self._model.name,
            )
        return False

    def _load(self, name: str, slot: LatestSlot) -> None:
        try:
            model, _ = load_model(name, device=self.device, weights=self.weights.get(name))
            # The dreamer too (BatchNorm folding and its check) is built here, off the dream thread.
            slot.put((model, self._make_dreamer(model, self.device)))
        except (ModelError, OSError, RuntimeError) as err:
            slot.put(err)
