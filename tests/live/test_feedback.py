"""Temporal feedback: flow-warped previous output, zoom and rotation, blend and reset."""

import cv2
import numpy as np
import pytest
import torch

from realtime.live.feedback import Feedback, FeedbackConfig, FeedbackError

W, H = 192, 144
SHIFT = 6  # px the scene moves right between the two frames


def textured(shift: int = 0) -> np.ndarray:
    """A smooth random texture (good for optical flow), moved `shift` px to the right."""
    rng = np.random.default_rng(7)
    coarse = rng.random((H // 8 + 2, W // 8 + 2, 3)).astype(np.float32)
    big = cv2.resize(coarse, (W + 32, H + 16), interpolation=cv2.INTER_CUBIC)
    image = (np.clip(big, 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(image[8 : 8 + H, 16 - shift : 16 - shift + W])


def to_t(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)


def blob(cx: float, cy: float, radius: float = 5.0) -> torch.Tensor:
    """A dark picture with one bright Gaussian blob: the 'dreamed' detail to follow."""
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    spot = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))
    return spot.expand(1, 3, H, W).clone()  # (1, 3, H, W)


def centroid(image_t: torch.Tensor) -> tuple[float, float]:
    weight = image_t[0].mean(0)
    weight = torch.where(weight > 0.2, weight, torch.zeros_like(weight))  # ignore the faint rest
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    total = weight.sum()
    return float((xs * weight).sum() / total), float((ys * weight).sum() / total)


def two_frames(feedback: Feedback, marker: torch.Tensor, **kwargs) -> torch.Tensor:
    """Frame 1, then the marker as its dream, then frame 2 (the scene moved SHIFT px right)."""
    first, second = textured(0), textured(SHIFT)
    first_t = to_t(first).to(feedback.device)
    assert torch.equal(feedback.apply(first_t, first, 1.0, **kwargs), first_t)
    feedback.remember(marker)
    return feedback.apply(to_t(second).to(feedback.device), second, 1.0, **kwargs)


def test_flow_moves_the_dream_with_the_scene():
    marker = blob(96, 72)
    moved = two_frames(Feedback("cpu"), marker, flow=True)
    x, y = centroid(moved)
    assert x == pytest.approx(96 + SHIFT, abs=1.5)
    assert y == pytest.approx(72, abs=1.0)


def test_without_flow_the_dream_stays_put():
    marker = blob(96, 72)
    still = two_frames(Feedback("cpu"), marker, flow=False)
    assert torch.allclose(still, marker)
    assert centroid(still) == pytest.approx((96, 72), abs=0.01)


def test_amount_blends_camera_and_feedback():
    frame = textured()
    feedback = Feedback("cpu")
    feedback.apply(to_t(frame), frame, 0.5)
    previous = torch.full((1, 3, H, W), 0.25)
    feedback.remember(previous)
    out = feedback.apply(to_t(frame), frame, 0.3, flow=False)
    assert torch.allclose(out, 0.7 * to_t(frame) + 0.3 * previous, atol=1e-6)
    assert torch.equal(feedback.apply(to_t(frame), frame, 0.0), to_t(frame))


def test_zoom_grows_a_centred_pattern():
    frame = textured()
    feedback = Feedback("cpu")
    feedback.apply(to_t(frame), frame, 1.0)
    square = torch.zeros(1, 3, H, W)
    square[..., H // 2 - 10 : H // 2 + 10, W // 2 - 10 : W // 2 + 10] = 1.0
    feedback.remember(square)
    zoomed = feedback.apply(to_t(frame), frame, 1.0, flow=False, zoom=1.5)
    area = lambda t: float((t[0].mean(0) > 0.5).sum())  # noqa: E731
    assert area(zoomed) == pytest.approx(area(square) * 1.5**2, rel=0.1)
    assert centroid(zoomed) == pytest.approx(centroid(square), abs=0.6)
    shrunk = feedback.apply(to_t(frame), frame, 1.0, flow=False, zoom=0.8)
    assert area(shrunk) < area(square)


def test_rotation_is_counter_clockwise():
    frame = textured()
    feedback = Feedback("cpu")
    feedback.apply(to_t(frame), frame, 1.0)
    cx, cy = (W - 1) / 2, (H - 1) / 2  # the centre, in pixel-centre coordinates
    feedback.remember(blob(cx + 30, cy))  # right of centre
    turned = feedback.apply(to_t(frame), frame, 1.0, flow=False, rotate=90.0)
    x, y = centroid(turned)
    # A quarter turn counter-clockwise on screen puts it above the centre (y grows downward).
    assert x == pytest.approx(cx, abs=0.5) and y == pytest.approx(cy - 30, abs=0.5)


def test_zoom_composes_with_flow():
    marker = blob(96, 72)
    out = two_frames(Feedback("cpu"), marker, flow=True, zoom=1.25)
    x, y = centroid(out)
    # The feedback is zoomed about the centre (pixel 95.5), then carried 6 px by the flow.
    centre = (W - 1) / 2
    assert x == pytest.approx(centre + 1.25 * (96 - centre) + SHIFT, abs=1.5)
    assert y == pytest.approx(72, abs=1.0)


def test_reset_and_size_change_return_the_camera():
    frame = textured()
    feedback = Feedback("cpu")
    feedback.apply(to_t(frame), frame, 0.8)
    feedback.remember(torch.ones(1, 3, H, W))
    assert not torch.equal(feedback.apply(to_t(frame), frame, 0.8), to_t(frame))
    feedback.reset()
    assert torch.equal(feedback.apply(to_t(frame), frame, 0.8), to_t(frame))
    feedback.remember(torch.ones(1, 3, H, W))
    small = np.ascontiguousarray(frame[: H // 2, : W // 2])
    assert torch.equal(feedback.apply(to_t(small), small, 0.8), to_t(small))


def test_remember_copies_the_output():
    frame = textured()
    feedback = Feedback("cpu")
    feedback.apply(to_t(frame), frame, 1.0)
    output = torch.full((1, 3, H, W), 0.5)
    feedback.remember(output)
    output.zero_()  # the dream loop reusing its buffer must not change the feedback
    assert torch.allclose(
        feedback.apply(to_t(frame), frame, 1.0, flow=False), torch.full_like(output, 0.5)
    )


def test_bad_input_is_rejected_clearly():
    frame = textured()
    feedback = Feedback("cpu")
    with pytest.raises(FeedbackError, match="amount: expected 0..1"):
        feedback.apply(to_t(frame), frame, 1.5)
    with pytest.raises(FeedbackError, match="zoom"):
        feedback.apply(to_t(frame), frame, 0.5, zoom=0.0)
    with pytest.raises(FeedbackError, match=r"camera_np as \(144, 192, 3\) uint8"):
        feedback.apply(to_t(frame), frame[:10], 0.5)
    with pytest.raises(FeedbackError, match="shape"):
        feedback.remember(torch.zeros(3, H, W))
    with pytest.raises(FeedbackError, match="flow_width"):
        FeedbackConfig(flow_width=4)
    with pytest.raises(ValueError):  # FeedbackError is a ValueError: config loading reports it
        FeedbackConfig(amount=-0.1)


@pytest.mark.cuda
def test_flow_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    marker = blob(96, 72)
    on_cpu = two_frames(Feedback("cpu"), marker, flow=True, zoom=1.1, rotate=2.0)
    on_gpu = two_frames(Feedback("cuda"), marker.cuda(), flow=True, zoom=1.1, rotate=2.0)
    assert on_gpu.is_cuda
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-3)
