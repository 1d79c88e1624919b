"""The per-frame code: a smaller dream adds its detail to the full-size frame, feedback included."""

from __future__ import annotations

import numpy as np
import torch

from realtime.control.params import LiveParams
from realtime.engine.step import Dreamer, activation, resize
from realtime.knobs import DreamConfig, FeedbackConfig
from realtime.live.pipeline import FramePipeline
from realtime.live.slot import Frame
from realtime.live.sources import DemoSource
from realtime.live.transfer import to_tensor


class Recording(Dreamer):
    """Records the size of every image it is asked to dream."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.sizes: list[tuple[int, int]] = []

    def dream(self, img, objective, cfg, generator=None, frame=0):
        self.sizes.append(tuple(img.shape[-2:]))
        return super().dream(img, objective, cfg, generator, frame)


def frames(n: int, size=(224, 128)) -> list[np.ndarray]:
    demo = DemoSource(size)
    demo.open()
    return [demo.frame_at(i * 2) for i in range(n)]


def snapshot(lite0, scale: float, amount: float = 0.9):
    base = {
        "dream": DreamConfig(steps=3, octaves=1, scale=scale, step_size=0.03),
        "feedback": FeedbackConfig(amount=amount),
    }
    params = LiveParams(lite0.layers, ["efficientnet_lite0"], "efficientnet_lite0", base=base)
    params.set("layer", "block6")
    return params.snapshot()


def test_a_smaller_dream_adds_its_detail_to_the_full_size_frame(lite0):
    images = frames(4)
    dreamer = Recording(lite0)
    pipeline = FramePipeline(
        lite0, dreamer, torch.device("cpu"), generator=torch.Generator().manual_seed(0)
    )
    snap = snapshot(lite0, 0.5)
    outs = [pipeline.process(Frame(im, 0.0, i), snap) for i, im in enumerate(images)]
    assert set(dreamer.sizes) == {(64, 112)}  # the dream (and the feedback) at half size
    assert all(o.shape == (128, 224, 3) for o in outs)  # the picture at full size
    full = FramePipeline(
        lite0, Dreamer(lite0), torch.device("cpu"), generator=torch.Generator().manual_seed(0)
    )
    whole = [full.process(Frame(im, 0.0, i), snapshot(lite0, 1.0)) for i, im in enumerate(images)]

    def grain(out: np.ndarray, image: np.ndarray) -> float:
        d = out.astype(np.float32) - image.astype(np.float32)
        return float(np.abs(np.diff(d, axis=0)).mean() / (np.abs(d).mean() + 1e-6))

    # dreamed at half size, the detail is smoother than a full-size dream's: the picture itself
    # keeps the camera's sharpness, and the dream still raises the layer where it dreamed
    assert grain(outs[-1], images[-1]) < 0.8 * grain(whole[-1], images[-1])
    half = (64, 112)
    cpu = torch.device("cpu")
    before = activation(lite0, "block6", resize(to_tensor(images[-1], cpu), half))
    after = activation(lite0, "block6", resize(to_tensor(outs[-1], cpu), half))
    assert after > 1.2 * before
