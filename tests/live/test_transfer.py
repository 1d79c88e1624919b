"""Frame transfers: exact round trips through buffers reused per size, reallocated on a change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.live.transfer import Downloader, TransferError, Uploader, to_image, to_tensor

CPU = torch.device("cpu")


def frames(h: int, w: int, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# Both read-backs: OpenCV's (the CPU's) and torch's (CUDA's and MPS's, run here on the CPU).
BOTH = pytest.mark.parametrize("opencv", [True, False], ids=["opencv", "torch"])


@BOTH
def test_upload_then_download_round_trips_every_value_exactly(opencv):
    up, down = Uploader(CPU), Downloader(CPU, opencv=opencv)
    image = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)  # every byte value
    image = np.ascontiguousarray(np.concatenate([image, image[::-1, :, ::-1]], axis=1))
    t = up(image)
    assert t.shape == (1, 3, 16, 32) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0
    np.testing.assert_array_equal(down(t), image)


@BOTH
def test_upload_matches_the_plain_conversion_and_download_matches_to_image(opencv):
    up, down = Uploader(CPU), Downloader(CPU, opencv=opencv)
    image = frames(24, 40, 1)[0]
    torch.testing.assert_close(up(image), to_tensor(image, CPU), rtol=0, atol=0)
    t = torch.rand(1, 3, 24, 40) * 1.2 - 0.1  # out of range values clamp as in to_image
    np.testing.assert_array_equal(down(t), to_image(t))


def test_buffers_are_reused_within_a_size_and_reallocated_on_a_change():
    up, down = Uploader(CPU), Downloader(CPU, opencv=False)
    ptrs = set()
    for image in frames(30, 50, 4):
        t = up(image)
        ptrs.add(t.data_ptr())
        np.testing.assert_array_equal(down(t), image)
    assert len(ptrs) == 1 and up.allocations == 1 and down.allocations == 1
    bigger = frames(36, 64, 1)[0]
    t = up(bigger)
    assert t.shape == (1, 3, 36, 64) and up.allocations == 2
    np.testing.assert_array_equal(down(t), bigger)
    assert down.allocations == 2


@BOTH
def test_downloaded_frames_are_not_overwritten_by_the_next_frame(opencv):
    up, down = Uploader(CPU), Downloader(CPU, opencv=opencv)
    first, second = frames(20, 20, 2, seed=5)
    out_first = down(up(first))
    out_second = down(up(second))
    np.testing.assert_array_equal(out_first, first)  # still the first frame
    np.testing.assert_array_equal(out_second, second)
    assert not np.shares_memory(out_first, out_second)


def test_upload_reads_the_frame_not_a_stale_copy():
    up = Uploader(CPU)
    image = frames(8, 8, 1)[0]
    up(image)
    image[:] = 7
    assert torch.all(up(image) == 7 / 255.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        "not an image",
    ],
)
def test_upload_refuses_what_is_not_an_rgb_uint8_frame(bad):
    with pytest.raises(TransferError, match=r"expected an \(H, W, 3\) uint8 RGB array"):
        Uploader(CPU)(bad)


@BOTH
def test_download_refuses_a_wrong_shape_or_dtype(opencv):
    down = Downloader(CPU, opencv=opencv)
    with pytest.raises(TransferError, match=r"expected a \(1, 3, H, W\) float tensor"):
        down(torch.zeros(3, 8, 8))
    with pytest.raises(TransferError, match=r"expected a \(1, 3, H, W\) float tensor"):
        down(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_composed_read_back_matches_the_torch_composition():
    """The CPU's host composition: the frame plus the small dream's detail enlarged bilinearly
    (half-pixel centres), saturated, as the device composes it (to rounding)."""
    base = frames(36, 64, 1, seed=3)[0]
    detail = (torch.rand(1, 3, 18, 32, generator=torch.Generator().manual_seed(1)) - 0.5) * 0.8
    got = Downloader(CPU).finish(Downloader(CPU).start_composed(base, detail))
    big = torch.nn.functional.interpolate(detail, size=(36, 64), mode="bilinear")
    want = to_image((to_tensor(base, CPU) + big).clamp(0, 1))
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # rounding only
    assert (got == 255).any() and (got == 0).any()  # both ends saturate instead of wrapping
    with pytest.raises(TransferError, match="composes on the CPU"):
        Downloader(CPU, opencv=False).start_composed(base, detail)


def test_opencv_read_back_is_refused_off_the_cpu():
    with pytest.raises(TransferError, match="OpenCV converts on the CPU"):
        Downloader(torch.device("meta"), opencv=True)
