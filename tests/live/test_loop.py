"""The dream loop: dreams frames, keeps going through faults, switches models without stalling."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch
import torchvision

from realtime.control.params import LiveParams
from realtime.engine.models import MODEL_NAMES, cache_path
from realtime.engine.step import activation
from realtime.live.capture import CaptureThread
from realtime.live.loop import DreamLoop
from realtime.live.slot import Frame, LatestSlot
from realtime.live.sources import DemoSource
from realtime.live.transfer import to_tensor

SIZE = (160, 96)  # (w, h): small enough for a quick CPU dream, big enough for block10 (1/16)


@pytest.fixture
def params(lite0) -> LiveParams:
    p = LiveParams(lite0.layers, MODEL_NAMES, lite0.name, {"steps": 4, "octaves": 1, "jitter": 4})
    p.set("layer", lite0.default_layer)
    return p


def demo_frames(n: int) -> list[Frame]:
    demo = DemoSource(SIZE)
    demo.open()
    return [Frame(demo.frame_at(i * 3), time.monotonic(), i) for i in range(n)]


def make_loop(lite0, params, **kw) -> DreamLoop:
    return DreamLoop(LatestSlot(), params, lite0, torch.device("cpu"), **kw)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_process_dreams_the_frame(lite0, params):
    loop = make_loop(lite0, params)
    frame = demo_frames(1)[0]
    out = loop.process(frame, params.snapshot())
    assert out.dream.shape == frame.image.shape and out.dream.dtype == np.uint8
    layer = params.snapshot().layer
    before = activation(lite0, layer, to_tensor(frame.image, torch.device("cpu")))
    after = activation(lite0, layer, to_tensor(out.dream, torch.device("cpu")))
    assert after > 1.25 * before  # the output is dreamed, not the input
    assert loop.outputs.peek()[1] is out


def test_feedback_accumulates_and_reset_clears_it(lite0, params):
    loop = make_loop(lite0, params)
    params.set("feedback", 0.9, glide=False)
    frame = demo_frames(1)[0]
    layer = params.snapshot().layer
    gains = []
    for _ in range(4):  # the same frame again and again: the dream grows with feedback
        out = loop.process(frame, params.snapshot())
        gains.append(activation(lite0, layer, to_tensor(out.dream, torch.device("cpu"))))
    assert gains[-1] > gains[0]
    params.request_reset()
    out = loop.process(frame, params.snapshot())
    after_reset = activation(lite0, layer, to_tensor(out.dream, torch.device("cpu")))
    assert after_reset < gains[-1]


def run_from_capture(lite0, params, frames: int, callback, **kw) -> DreamLoop:
    """A DreamLoop on a 60 fps demo capture, run on its thread until `frames` outputs."""
    capture = CaptureThread(DemoSource(SIZE), SIZE, fps=60)
    loop = DreamLoop(
        capture.slot,
        params,
        lite0,
        torch.device("cpu"),
        max_frames=frames,
        callbacks=[callback],
        **kw,
    )
    capture.start()
    loop.start()
    try:
        assert loop.done.wait(60)
    finally:
        loop.stop()
        capture.stop()
    return loop


def test_thread_runs_from_a_capture_and_stops_at_max_frames(lite0, params):
    seen = []
    loop = run_from_capture(lite0, params, 5, lambda out: seen.append(out.index))
    assert seen == [0, 1, 2, 3, 4]
    stats = loop.stats()
    assert stats["frames"] == 5 and stats["latency_ms"] > 0


def test_the_dream_thread_alone_runs_torch_in_parallel(lite0, params, restore_threads):
    """The thread that builds the loop (and its dreamer) stays on one torch thread; the dream
    thread gets the dreamer's count (engine.device: two parallel teams on two cores make every
    op sleep and wake its workers), and OpenCV runs its calls inline beside it."""
    from realtime.engine.device import serial_cpu
    from realtime.engine.strategy import make_dreamer

    cv2_before = cv2.getNumThreads()
    serial_cpu()
    try:
        cv2.setNumThreads(2)
        counts = []
        run_from_capture(
            lite0,
            params,
            2,
            lambda out: counts.append(torch.get_num_threads()),
            dreamer_factory=lambda m, d: make_dreamer(m, d, threads=2),
        )
        assert counts == [2, 2]
        assert torch.get_num_threads() == 1
        assert cv2.getNumThreads() == 1  # OpenCV runs inline beside the dream's team
    finally:
        cv2.setNumThreads(cv2_before)


def run_frames(loop: DreamLoop, frames: list[Frame], params: LiveParams, n_out: int) -> None:
    """Feed frames into the loop's slot one by one until it has published n_out outputs."""
    loop.start()
    try:
        for frame in frames:
            loop.frames.put(frame)
            count, errors = loop.outputs.count, loop.errors
            wait_for(lambda c=count, e=errors: loop.outputs.count > c or loop.errors > e, 20)
            if loop.outputs.count >= n_out:
                break
    finally:
        loop.stop()


def test_a_failing_frame_is_skipped_and_the_loop_goes_on(lite0, params, caplog):
    loop = make_loop(lite0, params)
    real = loop.pipeline.dreamer.dream
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected: a kernel failed")
        return real(*args, **kw)

    loop.pipeline.dreamer.dream = flaky
    run_frames(loop, demo_frames(6), params, n_out=4)
    assert loop.errors == 1
    assert loop.outputs.count >= 4
    assert "injected: a kernel failed" in caplog.text


def test_a_broken_callback_does_not_stop_the_show(lite0, params, caplog):
    def broken(out):
        raise OSError("disk full")

    loop = make_loop(lite0, params, callbacks=[broken])
    run_frames(loop, demo_frames(3), params, n_out=3)
    assert loop.outputs.count == 3
    assert "disk full" in caplog.text


def test_out_of_memory_shrinks_the_dream_and_keeps_the_frame_size(lite0, params, caplog):
    loop = make_loop(lite0, params)
    real = loop.pipeline.dreamer.dream

    def small_only(x, *args, **kw):
        if x.shape[-1] > 130:  # pretend the GPU cannot hold a 160-px-wide dream
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(x, *args, **kw)

    loop.pipeline.dreamer.dream = small_only
    run_frames(loop, demo_frames(5), params, n_out=3)
    assert loop.pipeline.scale == pytest.approx(0.75)
    assert loop.outputs.count >= 3
    assert loop.outputs.peek()[1].dream.shape == (SIZE[1], SIZE[0], 3)
    assert "out of GPU memory dreaming at 160x96" in caplog.text
    assert "dreaming at 120x72 from now on" in caplog.text


def test_a_model_that_fails_to_load_live_keeps_the_old_one(
    lite0, params, monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("DREAM_WEIGHTS_BASE_URL", "http://127.0.0.1:9/")  # nothing listens there
    loop = make_loop(lite0, params)
    params.set("model", "vgg16")
    frames = demo_frames(1) * 50
    loop.start()
    try:
        for i, frame in enumerate(frames):
            loop.frames.put(Frame(frame.image, time.monotonic(), i))
            time.sleep(0.05)
            if "could not switch to model vgg16" in caplog.text:
                break
    finally:
        loop.stop()
    assert "could not switch to model vgg16, keeping efficientnet_lite0" in caplog.text
    assert loop.model is lite0
    assert params.get("model") == "efficientnet_lite0"
    assert params.get("layer") in lite0.layers


def test_model_switch_loads_in_the_background_without_stalling(
    lite0, params, monkeypatch, tmp_path
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = cache_path("googlenet")
    path.parent.mkdir(parents=True)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    torch.save(net.state_dict(), path)  # random weights, in the cache where torchvision keeps them
    import realtime.live.loop

    real_load = realtime.live.loop.load_model

    def slow_load(*args, **kw):
        time.sleep(1.5)  # a big model from a slow disk
        return real_load(*args, **kw)

    monkeypatch.setattr(realtime.live.loop, "load_model", slow_load)
    loop = make_loop(lite0, params)
    params.set("model", "googlenet")
    outputs_while_loading = []
    frame = demo_frames(1)[0]
    loop.start()
    try:
        for i in range(400):
            loop.frames.put(Frame(frame.image, time.monotonic(), i))
            time.sleep(0.03)
            if loop.model.name == "googlenet":
                break
            outputs_while_loading.append(loop.outputs.count)
        assert wait_for(lambda: loop.model.name == "googlenet", 30)
        count = loop.outputs.count
        loop.frames.put(Frame(frame.image, time.monotonic(), 999))
        assert wait_for(lambda: loop.outputs.count > count, 30)
    finally:
        loop.stop()
    assert outputs_while_loading[-1] > 0  # the old model kept dreaming meanwhile
    assert params.snapshot().layer in loop.model.layers
    assert loop.outputs.peek()[1].layer in loop.model.layers


def dream_threads() -> int:
    return sum(t.name == "dream-loop" and t.is_alive() for t in threading.enumerate())


def test_a_stuck_dream_thread_is_never_doubled_and_ends_the_process(lite0, params):
    """The watchdog's action on a thread stuck in a call that never returns: no second dream
    thread beside it (both would write the same buffers); the loop fails, the app exits."""
    from realtime.live.watchdog import Watchdog

    reasons = []
    loop = make_loop(lite0, params, on_fatal=reasons.append)
    release = threading.Event()
    loop.pipeline.dreamer.dream = lambda x, *a, **kw: release.wait(60) and x  # a call that hangs
    before = dream_threads()
    dog = Watchdog(interval=0.05)
    dog.watch("dream loop", lambda: loop.heartbeat, loop.recover, timeout=0.5)
    loop.start()
    dog.start()
    try:
        loop.frames.put(demo_frames(1)[0])
        assert wait_for(lambda: loop.fatal is not None, 10)
        assert dream_threads() == before + 1  # the stuck one only, never a second
        assert len(reasons) == 1 and "stuck" in reasons[0] and loop.done.is_set()
        loop.recover()  # again: nothing more happens
        assert dream_threads() == before + 1 and len(reasons) == 1
    finally:
        dog.stop()
        release.set()
        loop.stop()
    assert wait_for(lambda: dream_threads() == before, 10)


def test_a_first_frame_at_a_new_size_may_take_long_but_a_later_frame_may_not(lite0, params):
    """On an H100 the first frame took 25 s (kernel tuning, graph capture) and the watchdog,
    allowing 5 s, ended the process before any frame. A frame at a size new to the dreamer gets
    the warm-up allowance; once warm, a frame that hangs is caught in the normal time."""
    from realtime.live.watchdog import Watchdog

    reasons = []
    loop = make_loop(lite0, params, on_fatal=reasons.append)
    real = loop.pipeline.dreamer.dream
    calls, release = {"n": 0}, threading.Event()

    def dream(x, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(4.0)  # warming: well over the normal allowance
        elif calls["n"] == 4:
            release.wait(60)  # warm by now: a hang
        return real(x, *a, **kw)

    loop.pipeline.dreamer.dream = dream
    dog = Watchdog(interval=0.05)
    dog.watch(
        "dream loop", lambda: loop.heartbeat, loop.recover, lambda: loop.silence_allowed(2.0, 20.0)
    )
    frames = demo_frames(4)
    loop.start()
    dog.start()
    try:
        loop.frames.put(frames[0])
        assert wait_for(lambda: loop.outputs.count == 1, 20), reasons
        assert loop.fatal is None and not loop.pipeline.warming
        for f in frames[1:3]:
            loop.frames.put(f)
            assert wait_for(lambda n=f.index: loop.outputs.count == n + 1, 20)
        hung = time.monotonic()
        loop.frames.put(frames[3])
        assert wait_for(lambda: loop.fatal is not None, 10)
        assert time.monotonic() - hung < 10.0 and "stuck" in reasons[0]
    finally:
        dog.stop()
        release.set()
        loop.stop()


def test_the_pipeline_warms_at_each_new_size_and_model(lite0, params):
    loop = make_loop(lite0, params)
    frames = demo_frames(3)
    warming = []
    for i, f in enumerate(frames):
        loop.process(f, params.snapshot())
        warming.append(loop.pipeline.warming)
        if i == 0:
            assert loop.pipeline.warming is False  # set for the frame's dream, cleared after
    loop.pipeline.scale = 0.5  # a smaller dream (as after out-of-memory): a size not seen yet
    seen = []
    real = loop.pipeline.dreamer.dream
    loop.pipeline.dreamer.dream = lambda *a, **kw: (
        seen.append(loop.pipeline.warming) or real(*a, **kw)
    )
    loop.process(frames[0], params.snapshot())
    loop.process(frames[1], params.snapshot())
    assert seen == [True, False]
    loop.pipeline.set_model(lite0, loop.pipeline.dreamer)
    loop.process(frames[2], params.snapshot())
    assert seen == [True, False, True]  # a swapped-in model warms again
    loop.pipeline.dreamer.capturing_ahead = True  # a GPU dreamer with planned graphs to capture
    loop.process(frames[2], params.snapshot())
    assert seen[-1] is True and loop.pipeline.warming  # during and after: until it is captured


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dream_thread_that_ended_is_restarted(lite0, params, caplog):
    loop = make_loop(lite0, params)
    calls = {"n": 0}
    real = loop.pipeline.dreamer.dream

    def dies_once(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemError("a bug that nothing catches")  # ends the thread
        return real(*args, **kw)

    loop.pipeline.dreamer.dream = dies_once
    frames = demo_frames(3)
    loop.start()
    try:
        loop.frames.put(frames[0])
        assert wait_for(lambda: not loop._thread.is_alive(), 10)
        loop.recover()
        assert loop.restarts == 1 and dream_threads() == 1 and loop.fatal is None
        loop.frames.put(frames[1])
        assert wait_for(lambda: loop.outputs.count >= 1, 30)
    finally:
        loop.stop()
    assert "the dream thread ended on an unexpected error" in caplog.text
    assert "starting a new one (restart 1)" in caplog.text


def test_an_unrecoverable_cuda_error_ends_the_loop_at_once(lite0, params):
    reasons = []
    loop = make_loop(lite0, params, on_fatal=reasons.append)

    def broken(*args, **kw):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    loop.pipeline.dreamer.dream = broken
    loop.start()
    try:
        loop.frames.put(demo_frames(1)[0])
        assert wait_for(lambda: loop.fatal is not None, 10)
    finally:
        loop.stop()
    assert loop.errors == 1 and "illegal memory access" in reasons[0]


def test_failing_frames_fall_back_to_the_last_parameters_that_worked_then_give_up(
    lite0, params, caplog
):
    from realtime.live import loop as loop_module

    reasons = []
    loop = make_loop(lite0, params, on_fatal=reasons.append)
    params.set("steps", 1, glide=False)
    frame = demo_frames(1)[0]
    loop.process(frame, params.snapshot())  # works with these settings
    loop._succeeded(params.snapshot())
    real = loop.pipeline.dreamer.dream

    def fails_when_deep(x, objective, cfg, *args, **kw):
        if cfg.steps > 3:
            raise RuntimeError("injected: too deep for this machine")
        return real(x, objective, cfg, *args, **kw)

    loop.pipeline.dreamer.dream = fails_when_deep
    params.set("steps", 9, glide=False)  # an operator's change that fails every frame
    for i in range(loop_module.FALLBACK_AFTER):
        assert loop._start(Frame(frame.image, time.monotonic(), i), params.snapshot()) is None
    assert params.get("steps") == 1  # fell back
    assert "fell back to the last parameters that worked" in caplog.text
    assert loop._start(Frame(frame.image, time.monotonic(), 99), params.snapshot()) is not None
    assert loop.fatal is None

    def always_fails(*args, **kw):
        raise RuntimeError("injected: broken for good")

    loop.pipeline.dreamer.dream = always_fails
    for i in range(loop_module.GIVE_UP_AFTER):
        loop._start(Frame(frame.image, time.monotonic(), 100 + i), params.snapshot())
    assert loop.fatal is not None and "frames in a row failed" in reasons[0]


def test_stop_joins_a_model_still_loading(lite0, params, monkeypatch):
    import realtime.live.loop

    started, finished = threading.Event(), threading.Event()

    def slow_load(*args, **kw):
        started.set()
        time.sleep(1.0)
        finished.set()
        raise realtime.live.loop.ModelError("no weights here")

    monkeypatch.setattr(realtime.live.loop, "load_model", slow_load)
    loop = make_loop(lite0, params)
    params.set("model", "googlenet")
    loop.start()
    loop.frames.put(demo_frames(1)[0])
    assert started.wait(20)
    loop.stop(timeout=5.0)
    assert finished.is_set()  # stop() waited for the loader instead of leaving it running
    assert not any(t.name == "model-load" and t.is_alive() for t in threading.enumerate())


def test_on_the_gpu_path_frame_n_is_read_back_while_n_plus_1_dreams(lite0, params, monkeypatch):
    """With overlap on (CUDA), a frame waiting in the slot is started before the previous one is
    finished, so the host work of one and the device work of the other overlap; with none
    waiting, a frame is published at once (no extra latency)."""
    from realtime.live.pipeline import FramePipeline

    monkeypatch.setattr(FramePipeline, "overlaps", property(lambda self: True))
    loop = make_loop(lite0, params, max_frames=4)
    calls = []
    real_start, real_finish = loop.pipeline.start, loop.pipeline.finish

    def start(frame, snap):
        calls.append(("start", frame.index))
        return real_start(frame, snap)

    def finish(pending):
        calls.append(("finish", pending.frame.index))
        return real_finish(pending)

    loop.pipeline.start, loop.pipeline.finish = start, finish
    frames = demo_frames(4)
    loop.frames.put(frames[0])
    loop.start()
    try:
        assert wait_for(lambda: ("start", 0) in calls, 20)
        loop.frames.put(frames[1])  # N+1 arrives while N is in flight
        assert wait_for(lambda: loop.outputs.count >= 1, 20)
        for frame in frames[2:]:
            loop.frames.put(frame)
            count = loop.outputs.count
            assert wait_for(lambda c=count: loop.outputs.count > c, 20)
        assert loop.done.wait(20)
    finally:
        loop.stop()
    assert [o for o in calls if o[0] == "finish"] == [("finish", i) for i in range(4)]
    for i in range(4):  # every frame finished once and in order, never before it started
        assert calls.index(("start", i)) < calls.index(("finish", i))
    overlapped = [
        i
        for i in range(3)
        if ("start", i + 1) in calls and calls.index(("start", i + 1)) < calls.index(("finish", i))
    ]
    assert overlapped, calls  # at least one frame was read back while the next one dreamed
