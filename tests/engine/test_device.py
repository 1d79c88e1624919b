"""Device choice: auto falls back to the CPU here; a missing accelerator is a clear error."""

import pytest
import torch

from realtime.engine.device import DeviceError, pick_device


def test_auto_picks_the_best_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto").type == expected
    assert pick_device().type == expected
    assert pick_device("CPU") == torch.device("cpu")


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu"):
        pick_device("cuda")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pick_device("cuda:1")


def test_missing_mps_is_a_clear_error():
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(DeviceError, match="MPS is not available.*--device auto or --device cpu"):
        pick_device("mps")


def test_unknown_device_lists_valid_names():
    with pytest.raises(
        DeviceError, match="unknown device 'tpu'; valid values are auto, cuda, mps, cpu"
    ):
        pick_device("tpu")


def test_cpu_threads_follow_the_environment(monkeypatch, caplog):
    from realtime.engine.device import THREADS_ENV, tune_cpu, usable_cores

    monkeypatch.setenv(THREADS_ENV, "1")
    assert tune_cpu() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "lots")
    with caplog.at_level("WARNING", logger="realtime.engine.device"):
        assert tune_cpu() == usable_cores()
    assert "not a positive integer" in caplog.text
    assert tune_cpu(1) == 1  # an explicit count wins
