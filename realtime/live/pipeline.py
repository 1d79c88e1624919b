"""One frame's work, the same live and offline: feedback, dream, read-back."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import torch
from torch.profiler import record_function

from realtime.control.params import Snapshot
from realtime.engine.models import DreamModel
from realtime.engine.objectives import Objective, ObjectiveError, build
from realtime.engine.step import Dreamer, resize
from realtime.live.attract import AttractMode
from realtime.live.feedback import Feedback
from realtime.live.slot import Frame
from realtime.live.transfer import Downloader, Readback, Uploader

logger = logging.getLogger(__name__)

MIN_SCALE = 0.25  # below a quarter of the frame the dream is a blur
# Labels on the phases of a frame, for torch.profiler (bench --profile); free when not profiling.
PHASES = ("upload", "feedback", "dream", "read-back")


@dataclass
class Pending:
    """A frame whose dream is queued (on CUDA, maybe still running) and whose read-back started."""

    frame: Frame
    snap: Snapshot
    readback: Readback
    started: float  # time.monotonic() when its work began


class FramePipeline:
    """The per-frame work of the live loop: attract mode, feedback, dream, read-back.

    `start(frame, snap)` does the frame's host work (optical flow, upload) and queues its device
    work (feedback warp, dream, read-back); `finish(pending)` waits for the picture. On CUDA the
    dream loop finishes frame N after starting frame N+1, so host and device work overlap; the
    offline render and the CPU run `process`, which is start then finish. Everything that makes
    the look lives here, so `render --live` shows exactly what the installation shows.

    One thread uses an instance (the dream thread, or the render's).
    """

    def __init__(
        self,
        model: DreamModel,
        dreamer: Dreamer,
        device: torch.device,
        flow_width: int = 160,
        attract: AttractMode | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Args:
        model: the network the objectives are built for.
        dreamer: runs the dream step (see realtime.engine.strategy.make_dreamer).
        device: where the frame is dreamed.
        flow_width: width in px at which the optical flow is computed.
        attract: deepens the dream when the camera sees no motion (None: off).
        generator: CPU generator for reproducible jitter (offline renders); None: torch's own.
        """
        self.model = model
        self.dreamer = dreamer
        self.device = device
        self.attract = attract
        self.generator = generator
        self.scale = 1.0  # dream size relative to the frame; lowered after CUDA out-of-memory
        self.feedback = Feedback(device, flow_width=flow_width)
        self._upload = Uploader(device)  # reused (pinned on CUDA) buffers, one set per frame size
        self._download = Downloader(device)
        self._objective_key: tuple | None = None
        self._objective: Objective | None = None
        self._reset_seen = 0
        self.dreamed = 0  # frames dreamed so far (octave_cycle picks the octave by it)
        # True while a frame dreams at a size this dreamer has not dreamed at before: on a GPU
        # such a frame tunes kernels and captures graphs (seconds), which the watchdog allows.
        self.warming = True  # start-up warms
        self._warm: set[tuple[int, int]] = set()  # dream sizes this dreamer has dreamed at

    @property
    def overlaps(self) -> bool:
        """Whether finishing a frame after starting the next one saves time (CUDA only)."""
        return self.device.type == "cuda"

    def set_model(self, model: DreamModel, dreamer: Dreamer) -> None:
        """Swap in another network (built off this thread) for the next frame."""
        self.model, self.dreamer = model, dreamer
        self._objective_key = None
        self._warm.clear()  # the old dreamer's sizes say nothing of the new one

    def start(self, frame: Frame, snap: Snapshot) -> Pending:
        """Queue one frame's work."""
        started = time.monotonic()
        if self.attract is not None:
            snap = self.attract.modulate(snap, frame.image)
        if snap.reset_count != self._reset_seen:
            self._reset_seen = snap.reset_count
            self.feedback.reset()
        with record_function("upload"):
            h, w = frame.image.shape[:2]
            scale = snap.dream.scale * self.scale  # the dream's size, after any OOM shrink
            small = (max(8, round(h * scale)), max(8, round(w * scale)))
            # Where the read-back converts with OpenCV (the CPU), a smaller dream is composed onto
            # the frame on the host too: only the small copy is uploaded, the full size never is.
            on_host = self._download.opencv and small != (h, w)
            if on_host:
                shrunk = cv2.resize(frame.image, small[::-1], interpolation=cv2.INTER_AREA)
                camera_small = self._upload(shrunk)  # (1, 3, h, w)
            else:
                camera_t = self._upload(frame.image)  # (1, 3, H, W), valid until the next upload
                camera_small = resize(camera_t, small)  # (1, 3, h, w); itself at full size
        with record_function("feedback"):
            x = self.feedback.apply(camera_small, frame.image, snap.feedback)  # (1, 3, h, w)
        if snap.dream.steps > 0:
            self.warming = small not in self._warm or self.dreamer.capturing_ahead
            with record_function("dream"):
                dreamed = self._dream(x, snap)
            self._warm.add(small)
            # On an H100 the frames after the first still took seconds while the planned graphs
            # were captured (each depth's first capture tunes its kernels): warm until done.
            self.warming = self.dreamer.capturing_ahead
            with record_function("feedback"):
                x = self.feedback.steady(x, dreamed, snap.feedback)
        with record_function("feedback"):
            self.feedback.remember(x, camera_small, snap.feedback)
        with record_function("read-back"):
            if on_host:  # the dream's detail on the full-size frame, kept sharp
                readback = self._download.start_composed(frame.image, x - camera_small)
            else:
                if x.shape[-2:] != (h, w):  # the same, on the device
                    x = (camera_t + resize(x - camera_small, (h, w))).clamp_(0.0, 1.0)
                readback = self._download.start(x)
        return Pending(frame, snap, readback, started)

    def finish(self, pending: Pending):
        """The dreamed picture, (H, W, 3) uint8 RGB (waits for its read-back)."""
        with record_function("read-back"):
            return self._download.finish(pending.readback)

    def process(self, frame: Frame, snap: Snapshot):
        """One frame, start to finish: the dreamed picture, (H, W, 3) uint8 RGB."""
        return self.finish(self.start(frame, snap))

    def shrink(self, frame: Frame, err: Exception) -> None:
        """After CUDA out-of-memory: dream at 3/4 of the size from now on, and say so."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        old = self.scale
        self.scale = max(MIN_SCALE, self.scale * 0.75)
        h, w = frame.image.shape[:2]
        logger.error(
            "out of GPU memory dreaming at %dx%d (%s); dreaming at %dx%d from now on",
            round(w * old),
            round(h * old),
            str(err).splitlines()[0],
            round(w * self.scale),
            round(h * self.scale),
        )

    def objective(self, snap: Snapshot) -> Objective:
        """The objective for the snapshot's layer and target, built only when they change.

        A refused objective keeps the last one of the same model (and says so); for a model
        just swapped in there is none to keep, and the error goes up.
        """
        key = (self.model.name, snap.layer, snap.targets, snap.layer_weight)
        if key != self._objective_key:
            try:
                targets = dict(snap.targets) or None
                self._objective = build(
                    self.model, layer=snap.layer, target=targets, layer_weight=snap.layer_weight
                )
            except ObjectiveError as err:
                same_model = self._objective_key is not None and self._objective_key[0] == key[0]
                if not same_model or self._objective is None:
                    raise  # an objective of another model's layers cannot be kept
                logger.error("objective refused, keeping %r: %s", self._objective, err)
            self._objective_key = key
        return self._objective

    def _dream(self, x: torch.Tensor, snap: Snapshot) -> torch.Tensor:
        """Dream x (1, 3, h, w), already at the dream's size."""
        self.dreamed += 1
        return self.dreamer.dream(x, self.objective(snap), snap.dream, self.generator, self.dreamed)
