"""Device choice: auto falls back to the CPU here; a missing accelerator is a clear error."""

import threading
from concurrent.futures import ThreadPoolExecutor

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


def test_cpu_threads_follow_the_environment(monkeypatch, caplog, restore_threads):
    from realtime.engine.device import THREADS_ENV, tune_cpu, usable_cores

    monkeypatch.setenv(THREADS_ENV, "1")
    assert tune_cpu() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "lots")
    with caplog.at_level("WARNING", logger="realtime.engine.device"):
        assert tune_cpu() == usable_cores()
    assert "not a positive integer" in caplog.text
    assert tune_cpu(1) == 1  # an explicit count wins


def test_the_thread_that_dreams_gets_the_dreamers_threads_and_no_other(lite0, restore_threads):
    """torch's intra-op count is per thread: a CPU dreamer gives its count to whichever thread
    calls dream(), not to the thread that made it, and a thread that ran serial_cpu stays on one
    thread after another thread's count changes (torch applies the last count set to a thread
    lazily, so without serial_cpu the main thread would take the dream thread's)."""
    from realtime.engine.device import serial_cpu
    from realtime.engine.objectives import build
    from realtime.engine.strategy import make_dreamer
    from realtime.knobs import DreamConfig

    serial_cpu()
    dreamer = make_dreamer(lite0, "cpu", threads=2)
    assert dreamer.threads == 2 and torch.get_num_threads() == 1  # making it tuned nothing here
    objective = build(lite0, layer=lite0.default_layer)
    img = torch.rand(1, 3, 32, 32)

    def dream_and_count() -> int:
        dreamer.dream(img, objective, DreamConfig(steps=1, octaves=1))
        return torch.get_num_threads()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(dream_and_count).result() == 2
    assert torch.get_num_threads() == 1  # the main thread kept its one

    # A thread new to torch that runs serial_cpu keeps one thread while another then dreams.
    ready, dreamt, counts = threading.Event(), threading.Event(), []

    def serial_thread() -> None:
        serial_cpu()
        ready.set()
        dreamt.wait(30)
        counts.append(torch.get_num_threads())

    thread = threading.Thread(target=serial_thread)
    thread.start()
    assert ready.wait(30)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(dream_and_count).result() == 2
    dreamt.set()
    thread.join(30)
    assert counts == [1]
