"""Shared fixtures: sample pictures from scikit-image and the bundled EfficientNet-Lite0."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
import torchvision


def to_tensor(image: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1], optionally resized to (h, w)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(0.0, 1.0)


@pytest.fixture(scope="session")
def chelsea_rgb() -> np.ndarray:
    """scikit-image's cat picture, (300, 451, 3) uint8 RGB."""
    return skimage.data.chelsea()


@pytest.fixture(scope="session")
def coffee_rgb() -> np.ndarray:
    """scikit-image's cup of espresso, (400, 600, 3) uint8 RGB."""
    return skimage.data.coffee()


@pytest.fixture(scope="session")
def chelsea_224(chelsea_rgb: np.ndarray) -> torch.Tensor:
    return to_tensor(chelsea_rgb, (224, 224))


@pytest.fixture(scope="session")
def coffee_224(coffee_rgb: np.ndarray) -> torch.Tensor:
    return to_tensor(coffee_rgb, (224, 224))


@pytest.fixture(scope="session")
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in index order (torchvision metadata, offline)."""
    return list(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"])


@pytest.fixture(scope="session")
def lite0():
    """The bundled EfficientNet-Lite0 on the CPU, loaded once for the whole session."""
    from realtime.engine.models import load_model

    model, _ = load_model("efficientnet_lite0")
    return model


@pytest.fixture
def restore_threads():
    """Puts torch's intra-op thread count back after the test: it is per-thread state that
    tests which set it would otherwise leave to the tests after them."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
