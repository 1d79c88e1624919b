"""Temporal feedback: the dream detail follows the scene, distrusts inconsistent flow, clears on a cut;
the whole-frame cross-fade zooms and turns."""

import math

import cv2
import numpy as np
import pytest
import torch

from realtime.knobs import FeedbackConfig, KnobError
from realtime.live.feedback import Feedback, FeedbackError, flow_consistency

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


AMOUNT = 0.98  # the most feedback a setting allows (1 would freeze the picture)


def cfg(**kw) -> FeedbackConfig:
    return FeedbackConfig(**{"amount": AMOUNT, **kw})


def two_frames(feedback: Feedback, marker: torch.Tensor, **kw) -> torch.Tensor:
    """Frame 1 dreamed as frame 1 plus the marker, then frame 2 (the scene moved SHIFT px
    right): returns what the feedback carried into frame 2 (the input minus the camera)."""
    c = cfg(**kw)
    first, second = textured(0), textured(SHIFT)
    first_t = to_t(first).to(feedback.device)
    assert torch.equal(feedback.apply(first_t, first, c), first_t)
    if c.carry == "detail":
        feedback.remember(first_t + marker, first_t, c)
    else:
        feedback.remember(marker, first_t, c)
    second_t = to_t(second).to(feedback.device)
    out = feedback.apply(second_t, second, c)
    return out - second_t if c.carry == "detail" else out


def test_the_dream_detail_moves_with_the_scene():
    marker = blob(96, 72) * 0.5
    moved = two_frames(Feedback("cpu"), marker, flow=True, flow_check=False)
    x, y = centroid(moved * 2)
    assert x == pytest.approx(96 + SHIFT, abs=1.5)
    assert y == pytest.approx(72, abs=1.0)


def test_the_detail_is_added_to_the_new_frame_not_crossfaded():
    """The scene is always the camera's: no double exposure of the old frame."""
    first, second = textured(0), np.ascontiguousarray(textured(0)[::-1])  # another view
    feedback = Feedback("cpu")
    c = cfg(amount=0.8, flow=False, cut_threshold=0.0)
    feedback.apply(to_t(first), first, c)
    detail = torch.full((1, 3, H, W), 0.1)
    feedback.remember(to_t(first) + detail, to_t(first), c)
    out = feedback.apply(to_t(second), second, c)
    expected = (to_t(second) + 0.8 * detail).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_inconsistent_flow_takes_the_camera():
    """Something appears that was not in the last frame (an occlusion): its flow cannot agree
    forwards and backwards, and there the carried dream is dropped."""
    first = textured(0)
    second = textured(SHIFT).copy()
    rng = np.random.default_rng(3)
    second[40:100, 60:130] = rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)  # a new object
    feedback = Feedback("cpu")
    c = cfg(cut_threshold=0.0)
    feedback.apply(to_t(first), first, c)
    detail = torch.full((1, 3, H, W), 0.2)
    feedback.remember(to_t(first) + detail, to_t(first), c)
    carried = feedback.apply(to_t(second), second, c) - to_t(second)
    inside = carried[..., 55:85, 80:110].mean().item()  # the middle of the new object
    outside = carried[..., 110:140, 10:50].mean().item()  # still scene, moved by the flow
    assert inside < 0.05 and outside > 0.15, (inside, outside)
    assert feedback.trusted < 0.95
    unchecked = Feedback("cpu")
    c2 = cfg(cut_threshold=0.0, flow_check=False)
    unchecked.apply(to_t(first), first, c2)
    unchecked.remember(to_t(first) + detail, to_t(first), c2)
    all_in = unchecked.apply(to_t(second), second, c2) - to_t(second)
    assert all_in[..., 55:85, 80:110].mean().item() > 0.15  # without the check it is carried


def test_flow_consistency_trusts_agreeing_flows_only():
    """Backward flow b and forward flow f agree where b + f(p + b) = 0: a translation and its
    inverse agree wherever the sample stays in the frame; flows that disagree by more than the
    tolerance (0.5 px^2 plus 1% of their size) do not."""
    h, w = 30, 40
    back = np.zeros((h, w, 2), np.float32)
    back[..., 0] = -3.0  # each pixel came from 3 px to its left
    fwd = -back
    trusted = flow_consistency(back, fwd)
    assert trusted[:, 3:].all() and not trusted[:, :3].any()  # the left edge samples outside
    assert not flow_consistency(back, fwd + 1.0)[:, 3:].any()  # off by |(1, 1)|^2 = 2 > 0.5
    assert flow_consistency(back, fwd + 0.3)[:, 3:].all()  # off by 0.18 < 0.5


def test_a_scene_cut_clears_the_feedback():
    import skimage.data

    scene = np.ascontiguousarray(cv2.resize(skimage.data.coffee(), (W, H)))
    first = textured(0)
    feedback = Feedback("cpu")
    c = cfg()
    feedback.apply(to_t(first), first, c)
    feedback.remember(to_t(first) + 0.2, to_t(first), c)
    assert torch.equal(feedback.apply(to_t(scene), scene, c), to_t(scene))  # nothing carried
    assert feedback.cuts == 1
    moved = textured(SHIFT)  # within a shot there is no cut
    feedback.apply(to_t(first), first, c)
    feedback.remember(to_t(first) + 0.2, to_t(first), c)
    assert not torch.equal(feedback.apply(to_t(moved), moved, c), to_t(moved))
    assert feedback.cuts == 1


def test_without_flow_the_dream_stays_put():
    marker = blob(96, 72)
    still = two_frames(Feedback("cpu"), marker, carry="frame", flow=False)
    camera = to_t(textured(SHIFT))
    assert torch.allclose(still, torch.lerp(camera, marker, AMOUNT), atol=1e-6)
    assert centroid(still) == pytest.approx((96, 72), abs=0.1)


def test_the_frame_carry_blends_camera_and_feedback():
    frame = textured()
    feedback = Feedback("cpu")
    c = cfg(carry="frame", amount=0.3, flow=False)
    feedback.apply(to_t(frame), frame, c)
    previous = torch.full((1, 3, H, W), 0.25)
    feedback.remember(previous, to_t(frame), c)
    out = feedback.apply(to_t(frame), frame, c)
    assert torch.allclose(out, 0.7 * to_t(frame) + 0.3 * previous, atol=1e-6)
    assert torch.equal(feedback.apply(to_t(frame), frame, cfg(amount=0.0)), to_t(frame))


def test_zoom_grows_a_centred_pattern():
    frame = textured()
    feedback = Feedback("cpu")
    c = cfg(carry="frame", flow=False, zoom=1.1)
    feedback.apply(to_t(frame), frame, c)
    square = torch.zeros(1, 3, H, W)
    square[..., H // 2 - 20 : H // 2 + 20, W // 2 - 20 : W // 2 + 20] = 1.0
    feedback.remember(square, to_t(frame), c)
    zoomed = feedback.apply(to_t(frame), frame, c)
    area = lambda t: float((t[0].mean(0) > 0.5).sum())  # noqa: E731
    assert area(zoomed) == pytest.approx(area(square) * 1.1**2, rel=0.05)
    assert centroid(zoomed) == pytest.approx(centroid(square), abs=0.6)
    shrunk = feedback.apply(to_t(frame), frame, cfg(carry="frame", flow=False, zoom=0.9))
    assert area(shrunk) < area(square)


def test_rotation_is_counter_clockwise():
    frame = textured()
    feedback = Feedback("cpu")
    c = cfg(carry="frame", flow=False, rotate=5.0)
    feedback.apply(to_t(frame), frame, c)
    cx, cy = (W - 1) / 2, (H - 1) / 2  # the centre, in pixel-centre coordinates
    feedback.remember(blob(cx + 60, cy), to_t(frame), c)  # right of centre
    turned = feedback.apply(to_t(frame), frame, c)
    x, y = centroid(turned)
    # Counter-clockwise on screen moves it up (y grows downward): 60 px at 5 degrees.
    assert x == pytest.approx(cx + 60 * math.cos(math.radians(5)), abs=0.5)
    assert y == pytest.approx(cy - 60 * math.sin(math.radians(5)), abs=0.5)


def test_zoom_composes_with_flow():
    marker = blob(96, 72)
    out = two_frames(Feedback("cpu"), marker, carry="frame", flow=True, flow_check=False, zoom=1.1)
    x, y = centroid(out)
    # The feedback is zoomed about the centre (pixel 95.5), then carried 6 px by the flow.
    centre = (W - 1) / 2
    assert x == pytest.approx(centre + 1.1 * (96 - centre) + SHIFT, abs=1.5)
    assert y == pytest.approx(72, abs=1.0)


def test_reset_and_size_change_return_the_camera():
    frame = textured()
    feedback = Feedback("cpu")
    c = cfg(amount=0.8)
    feedback.apply(to_t(frame), frame, c)
    feedback.remember(to_t(frame) + 0.3, to_t(frame), c)
    assert not torch.equal(feedback.apply(to_t(frame), frame, c), to_t(frame))
    feedback.reset()
    assert torch.equal(feedback.apply(to_t(frame), frame, c), to_t(frame))
    feedback.remember(to_t(frame) + 0.3, to_t(frame), c)
    small = np.ascontiguousarray(frame[: H // 2, : W // 2])
    assert torch.equal(feedback.apply(to_t(small), small, c), to_t(small))


def test_remember_copies_what_it_keeps():
    frame = textured()
    feedback = Feedback("cpu")
    c = cfg(carry="frame", flow=False)
    feedback.apply(to_t(frame), frame, c)
    output = torch.full((1, 3, H, W), 0.5)
    feedback.remember(output, to_t(frame), c)
    output.zero_()  # the dream loop reusing its buffer must not change the feedback
    kept = torch.lerp(to_t(frame), torch.full_like(output, 0.5), AMOUNT)
    assert torch.allclose(feedback.apply(to_t(frame), frame, c), kept, atol=1e-6)


def test_bad_input_is_rejected_clearly():
    frame = textured()
    feedback = Feedback("cpu")
    with pytest.raises(KnobError, match=r"feedback.amount = 1.5 is out of range; valid: 0..0.98"):
        cfg(amount=1.5)
    with pytest.raises(KnobError, match="feedback.zoom"):
        cfg(zoom=0.0)
    with pytest.raises(FeedbackError, match=r"expected camera_np as \(H, W, 3\) uint8"):
        feedback.apply(to_t(frame), frame[..., 0], FeedbackConfig())
    with pytest.raises(FeedbackError, match="shape"):
        feedback.remember(torch.zeros(3, H, W), torch.zeros(3, H, W), FeedbackConfig())
    with pytest.raises(KnobError, match="flow_width"):
        FeedbackConfig(flow_width=4)


@pytest.mark.cuda
def test_flow_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    marker = blob(96, 72)
    kw = {"carry": "frame", "flow": True, "zoom": 1.1, "rotate": 2.0}
    on_cpu = two_frames(Feedback("cpu"), marker, **kw)
    on_gpu = two_frames(Feedback("cuda"), marker.cuda(), **kw)
    assert on_gpu.is_cuda
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-3)


def test_smoothing_averages_out_the_random_part_of_each_frames_change():
    """A dream whose every step is a consistent pattern plus fresh noise (as the jitter makes
    it): smoothed, the frames change far less from one to the next, and the pattern still grows."""
    frame = textured()
    cam = to_t(frame)
    rng = torch.Generator().manual_seed(0)
    pattern = torch.rand(1, 3, H, W, generator=rng) - 0.5

    def run(smooth: float) -> tuple[float, float]:
        feedback = Feedback("cpu")
        c = cfg(amount=0.9, smooth=smooth, flow=False)
        outs = []
        for _ in range(30):
            x = feedback.apply(cam, frame, c)
            noise = torch.rand(1, 3, H, W, generator=rng) - 0.5
            dreamed = (x + 0.01 * pattern + 0.02 * noise).clamp(0, 1)
            out = feedback.steady(x, dreamed, c)
            feedback.remember(out, cam, c)
            outs.append(out)
        flicker = float(
            torch.stack(
                [(b - a).square().mean() for a, b in zip(outs[-11:-1], outs[-10:], strict=True)]
            ).mean()
        )
        grown = float(((outs[-1] - cam) * pattern).mean() / pattern.square().mean())
        return flicker, grown

    rough, rough_grown = run(0.0)
    calm, calm_grown = run(0.9)
    assert calm < 0.25 * rough, (calm, rough)
    assert calm_grown > 0.05 and calm_grown > 0.5 * rough_grown, (calm_grown, rough_grown)


def test_no_feedback_means_no_smoothing_either():
    frame = textured()
    cam = to_t(frame)
    feedback = Feedback("cpu")
    c = cfg(amount=0.0, smooth=0.9)
    for _ in range(3):
        x = feedback.apply(cam, frame, c)
        assert torch.equal(x, cam)
        dreamed = (x + 0.1 * torch.rand(1, 3, H, W)).clamp(0, 1)
        assert torch.equal(feedback.steady(x, dreamed, c), dreamed)
        feedback.remember(dreamed, cam, c)
