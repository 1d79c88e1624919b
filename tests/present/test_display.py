"""The dream window: a real headless EGL window read back pixel by pixel, keys, shaders, Xvfb."""

import logging
import os
import select
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.control.params import LiveParams
from realtime.knobs import DisplayConfig
from realtime.live.slot import LatestSlot, Output
from realtime.present.display import KEYS, DisplayError, DreamWindow, pick_screen
from realtime.present.gl import SHADER_DIR, build_program, letterbox, load_program
from realtime.present.hud import hud_text
from tests._require import require

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["conv1", "conv2", "conv3", "conv4"]
TARGETS = [107, 84]  # jellyfish, peacock: the cycle is these, then none
TOL = 2  # 8-bit rounding of the shader's float maths


def pattern(w: int = 64, h: int = 48) -> np.ndarray:
    """Four distinct quadrants, each with a left-to-right ramp: orientation shows in every axis."""
    img = np.zeros((h, w, 3), np.uint8)
    ramp = np.linspace(60, 250, w // 2).round().astype(np.uint8)
    h2, w2 = h // 2, w // 2
    img[:h2, :w2] = np.stack([ramp, ramp // 4, 0 * ramp], -1)  # top-left: red
    img[:h2, w2:] = np.stack([0 * ramp, ramp, ramp // 3], -1)  # top-right: green
    img[h2:, :w2] = np.stack([ramp // 5, 0 * ramp, ramp], -1)  # bottom-left: blue
    img[h2:, w2:] = ramp[:, None]  # bottom-right: grey
    return img


def camera_of(img: np.ndarray) -> np.ndarray:
    return 255 - img  # a different picture, same size


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.fixture
def params():
    return LiveParams(LAYERS, ["demo"], "demo", {"glide": 0.0})


@pytest.fixture
def make_window(params):
    """Opens headless EGL windows (closed at the end); require()s that EGL works here."""
    opened = []

    def make(size=(64, 48), **kwargs):
        kwargs.setdefault("targets", TARGETS)
        kwargs.setdefault("params", params)
        slot = kwargs.pop("outputs", None) or LatestSlot()
        config = kwargs.pop("config", None) or DisplayConfig()
        try:
            window = DreamWindow(slot, config=config, headless=True, size=size, **kwargs)
        except Exception as err:  # a failure to get an EGL window means the same here...
            if type(err).__module__.startswith("realtime") and not isinstance(err, DisplayError):
                raise  # ... but an error of our own code is a failure, not a missing EGL
            require(False, f"no headless EGL window on this machine: {err!r}")
        opened.append(window)
        return window, slot

    yield make
    for window in opened:
        window.close()


def show(window, slot, dream, camera=None, index=0):
    now = time.monotonic()
    slot.put(Output(dream, camera_of(dream) if camera is None else camera, index, now, now))
    window.draw_once()
    return window.read_pixels()


# --- pictures --------------------------------------------------------------------------------


def test_frame_shows_upright_at_mix_1_and_camera_at_mix_0(make_window, params):
    window, slot = make_window()
    img = pattern()
    params.set("mix", 1.0, glide=False)
    shown = show(window, slot, img)
    assert shown.shape == (48, 64, 3)
    assert max_diff(shown, img) <= TOL
    assert shown[0, 0, 0] > 50 and shown[0, 0, 1] < 20  # red top-left, not flipped
    assert shown[-1, 0, 2] > 50 and shown[-1, 0, 0] < 20  # blue bottom-left
    params.set("mix", 0.0, glide=False)
    assert max_diff(window.read_pixels(), camera_of(img)) <= TOL


def test_mix_half_is_the_average(make_window, params):
    window, slot = make_window()
    img = pattern()
    camera = np.roll(img, 16, axis=1)
    params.set("mix", 0.5, glide=False)
    shown = show(window, slot, img, camera)
    expected = (img.astype(float) + camera) / 2
    assert np.abs(shown - expected).max() <= TOL


def grade(rgb: np.ndarray, brightness=0.0, contrast=1.0, saturation=1.0) -> np.ndarray:
    """The shader's colour maths in numpy, as an independent reference."""
    x = rgb.astype(float) / 255
    x = (x - 0.5) * contrast + 0.5 + brightness
    luma = x @ np.array([0.2126, 0.7152, 0.0722])
    x = luma[..., None] + saturation * (x - luma[..., None])
    return np.clip(x, 0, 1) * 255


@pytest.mark.parametrize(
    "setting",
    [
        {"brightness": 0.2},
        {"brightness": -0.3},
        {"contrast": 0.5},
        {"contrast": 1.8},
        {"saturation": 0.0},
        {"saturation": 1.7},
    ],
)
def test_brightness_contrast_saturation(make_window, params, setting):
    window, slot = make_window()
    img = pattern()
    params.update(setting, glide=False)
    shown = show(window, slot, img).astype(int)
    assert np.abs(shown - grade(img, **setting)).max() <= TOL
    assert max_diff(shown, img) > 20  # it really changed
    if setting.get("saturation") == 0.0:
        assert np.abs(shown[..., 0] - shown[..., 1]).max() <= 1
        assert np.abs(shown[..., 1] - shown[..., 2]).max() <= 1
    if setting.get("brightness", 0) > 0:
        assert (shown >= img).all()


def test_letterbox_keeps_aspect_with_black_bars(make_window):
    window, slot = make_window(size=(160, 48))  # wider than the 4:3 frame: bars left and right
    img = pattern()
    shown = show(window, slot, img)
    assert letterbox((64, 48), (160, 48)) == pytest.approx((0.4, 1.0))
    assert shown[:, :48].max() == 0 and shown[:, 112:].max() == 0
    assert max_diff(shown[:, 48:112], img) <= TOL

    tall, slot = make_window(size=(64, 96))  # taller: bars top and bottom
    shown = show(tall, slot, img)
    assert shown[:24].max() == 0 and shown[72:].max() == 0
    assert max_diff(shown[24:72], img) <= TOL


def test_one_texture_reused_and_recreated_only_on_size_change(make_window):
    window, slot = make_window()
    show(window, slot, pattern(), index=0)
    name = window.texture.name
    assert name and window.texture.size == (128, 48)
    for i in range(1, 4):
        shown = show(window, slot, pattern()[::-1].copy(), index=i)  # same size, new content
        assert window.texture.name == name
    assert max_diff(shown, pattern()[::-1]) <= TOL
    shown = show(window, slot, pattern(32, 24), index=4)  # new size: one new texture
    assert window.texture.size == (64, 24)
    # Magnified 2x with linear filtering, as OpenCV's bilinear resize does it.
    assert (
        max_diff(shown, cv2.resize(pattern(32, 24), (64, 48), interpolation=cv2.INTER_LINEAR))
        <= TOL
    )


def test_draw_only_polls_the_slot(make_window):
    window, slot = make_window()
    start = time.monotonic()
    for _ in range(5):
        window.draw_once()  # nothing published: must not wait for the dream loop
    assert time.monotonic() - start < 1.0
    assert window.read_pixels().max() == 0
    img = pattern()
    show(window, slot, img)
    window.draw_once()  # nothing new: the last frame stays
    assert max_diff(window.read_pixels(), img) <= TOL


def test_bad_output_image_is_refused_clearly(make_window):
    window, slot = make_window()
    slot.put(Output(np.zeros((48, 64), np.float32), np.zeros((48, 64), np.float32), 0, 0.0, 0.0))
    with pytest.raises(DisplayError, match=r"dream image as an \(H, W, 3\) uint8"):
        window.draw_once()


def test_hud_draws_text_over_the_picture_and_h_toggles_it(make_window, params):
    from pyglet.window import key

    stats = {"fps": 12.5, "latency_ms": 80.0, "drops": 3}
    window, slot = make_window(size=(400, 200), config=DisplayConfig(hud=True), stats=lambda: stats)
    img = np.full((48, 64, 3), 255, np.uint8)  # all white: the dark panel must show
    with_hud = show(window, slot, img)
    text = window.hud_text
    assert "layer conv3 (2)" in text and "target none" in text
    assert "fps 12.5" in text and "latency_ms 80.0" in text and "drops 3" in text
    assert with_hud[10:40, 10:100].mean() < 200  # panel darkens the top-left corner
    window.window.dispatch_event("on_key_press", key.H, 0)
    window.draw_once()
    assert not window.hud_visible
    assert window.read_pixels()[10:40, 75:100].min() == 255


def test_hud_text_formats_state(params):
    params.set("paused", True)
    stats = {"fps": np.float32(9.96), "big": 1234.5, "ok": True, "drops": 3}
    text = hud_text(params.snapshot(), 59.6, 7, 42.4, stats)
    assert "PAUSED" in text and "fps 10.0" in text and "big 1234" in text and "ok on" in text
    assert "drops 3" in text and "display 60 fps" in text and "frame 7" in text
    assert "42 ms" in text
    assert "display -- fps" in hud_text(params.snapshot(), 0.0, None, None)
    assert "MIDI learn" not in text
    assert "bind steps" in hud_text(params.snapshot(), 0.0, None, None, None, "steps")


# --- keys ------------------------------------------------------------------------------------


def press(window, symbol, modifiers=0):
    """The real path: a pyglet key event, dispatched by the window's event handling."""
    window.window.dispatch_event("on_key_press", symbol, modifiers)
    window.draw_once()


def test_keys_drive_the_live_params(make_window, params):
    from pyglet.window import key

    window, _ = make_window()
    assert params.snapshot().layer == "conv3"
    press(window, key.RIGHT)
    assert params.snapshot().layer == "conv4"
    press(window, key.N)
    assert params.snapshot().layer == "conv1"  # wraps
    press(window, key.LEFT)
    press(window, key.P)
    assert params.snapshot().layer == "conv3"

    names = []
    for _ in range(3):
        press(window, key.T)
        names.append(params.snapshot().target_name)
    assert names == ["jellyfish", "peacock", "none"]
    press(window, key.T, key.MOD_SHIFT)
    assert params.snapshot().target_name == "peacock"

    snap = params.snapshot()
    press(window, key.SPACE)
    press(window, key.R)
    press(window, key.S)
    after = params.snapshot()
    assert after.paused is True and not snap.paused
    assert after.reset_count == snap.reset_count + 1
    assert after.snapshot_count == snap.snapshot_count + 1
    press(window, key.SPACE)
    assert params.snapshot().paused is False

    press(window, key.H)
    assert window.hud_visible
    press(window, key.F)
    assert window.window.fullscreen
    press(window, key.F)
    assert not window.window.fullscreen
    press(window, key.X)  # unbound: nothing happens
    assert params.snapshot().version == after.version + 1 and not window.closed


def test_key_m_arms_midi_learn_and_shift_m_cancels(make_window, params, tmp_path):
    from pyglet.window import key

    from realtime.control.midi import LEARNABLE, BindingsFile, MidiLearn

    midi = MidiLearn(params, "controller", BindingsFile(tmp_path / "midi.json"))
    window, slot = make_window(size=(400, 200), config=DisplayConfig(hud=False), midi=midi)
    white = np.full((48, 64, 3), 255, np.uint8)  # the dark panel shows on it (x 67-333)
    assert show(window, slot, white)[10:40, 75:100].min() == 255  # HUD off: nothing drawn
    press(window, key.M)
    assert midi.armed == LEARNABLE[0]
    # The VJ sees what the next moved control binds to, with the HUD off too.
    shown = show(window, slot, white)
    assert f"MIDI learn: move a control to bind {LEARNABLE[0]}" in window.hud_text
    assert shown[10:40, 75:100].mean() < 200 and not window.hud_visible
    press(window, key.M)
    assert midi.armed == LEARNABLE[1]
    window.draw_once()
    assert f"bind {LEARNABLE[1]}" in window.hud_text  # at once, not at the next refresh
    press(window, key.M, key.MOD_SHIFT)
    assert midi.armed is None
    assert show(window, slot, white)[10:40, 75:100].min() == 255  # learning over: HUD gone
    plain, _ = make_window()  # no --midi: the key is answered with a log line, nothing else
    press(plain, key.M)
    assert not plain.closed


def test_default_targets_are_classic_classes(make_window, params):
    from pyglet.window import key

    window, _ = make_window(targets=None)
    seen = []
    for _ in range(9):
        press(window, key.T)
        seen.append(params.snapshot().target_name)
    assert seen[0] == "jellyfish" and seen[-1] == "none" and len(set(seen)) == 9


@pytest.mark.parametrize("quit_key", ["Q", "ESCAPE"])
def test_quit_keys_call_on_close_once_and_close(make_window, quit_key):
    from pyglet.window import key

    calls = []
    window, _ = make_window(on_close=lambda: calls.append(1))
    press(window, getattr(key, quit_key))
    assert window.closed and calls == [1]
    window.close()  # twice is fine
    window.draw_once()  # and drawing a closed window does nothing
    assert calls == [1]


def test_close_button_calls_on_close_and_closes(make_window):
    calls = []
    window, _ = make_window(on_close=lambda: calls.append(1))
    window.window.dispatch_event("on_close")  # what the window manager's close button sends
    window.draw_once()
    assert window.closed and calls == [1]


def test_keys_table_documents_every_binding():
    labels = " ".join(label for label, _ in KEYS)
    for name in ("Right", "Left", "N", "P", "T", "F", "S", "Space", "R", "H", "Q", "Escape"):
        assert name in labels
    assert all(doc for _, doc in KEYS)


# --- shaders and screens ---------------------------------------------------------------------


def test_broken_shader_error_shows_numbered_source_and_log(make_window):
    make_window()  # a current GL context
    vert = (SHADER_DIR / "display.vert").read_text()
    broken = "#version 330 core\nout vec4 color;\nvoid main() {\n    color = vec4(undeclared);\n}\n"
    with pytest.raises(DisplayError) as info:
        build_program(vert, broken)
    message = str(info.value)
    assert "fragment shader" in message
    assert "   4 |     color = vec4(undeclared);" in message
    assert "driver log:" in message and "undeclared" in message.split("driver log:")[1]


def test_missing_shader_file_is_reported(make_window, tmp_path):
    make_window()
    with pytest.raises(DisplayError, match="cannot read shader"):
        load_program(tmp_path)


def test_bad_screen_index_logs_screens_and_uses_screen_0(make_window, caplog):
    import pyglet

    make_window()
    display = pyglet.display.get_display()
    with caplog.at_level(logging.WARNING, logger="realtime.present.display"):
        screen = pick_screen(display, 7)
    assert screen is display.get_screens()[0]
    assert "display.screen=7 does not exist" in caplog.text and "0: " in caplog.text


RUN_SCRIPT = textwrap.dedent(
    """
    import threading, time, numpy as np
    from realtime.knobs import DisplayConfig
    from realtime.present.display import DreamWindow
    from realtime.control.params import LiveParams
    from realtime.live.slot import LatestSlot, Output
    slot, stop, closed = LatestSlot(), threading.Event(), []
    window = DreamWindow(slot, LiveParams(["a", "b"], ["m"], "m"), DisplayConfig(), headless=True,
                         size=(64, 48), targets=[1], on_close=lambda: closed.append(1))
    def produce():
        for i in range(10):
            img = np.full((48, 64, 3), 20 * i, np.uint8)
            slot.put(Output(img, img, i, time.monotonic(), time.monotonic()))
            time.sleep(0.03)
        stop.set()
    threading.Thread(target=produce, daemon=True).start()
    start = time.monotonic()
    window.run(stop)
    print("ran", round(time.monotonic() - start, 2), window.closed, slot.count, closed)
    """
)


def test_run_returns_when_stop_is_set():
    # In a subprocess: pyglet.app.run is process-global, and a hang is killed by the timeout.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    if result.returncode != 0 and "EGL" in result.stderr:
        require(False, f"no headless EGL window: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    ran, seconds, closed, count, notified = result.stdout.split(maxsplit=4)
    assert float(seconds) < 5 and closed == "True" and count == "10"
    assert notified.strip() == "[]"  # stopping from outside is not the operator quitting


# --- a real window under Xvfb ----------------------------------------------------------------


@pytest.fixture
def xvfb(request):
    """Start Xvfb on a display number it picks itself (-displayfd); yields ':N'. Its screen is
    400x240x24 unless the test parametrizes it (indirect=True) with another WxHxD."""
    require(shutil.which("Xvfb") is not None, "Xvfb not installed")
    screen = getattr(request, "param", "400x240x24")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 15)
        number = os.read(read_fd, 32).decode().strip() if ready else ""
        assert number.isdigit(), f"Xvfb reported no display within 15 s (exit {proc.poll()})"
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def screenshot(display: str, tmp_path: Path, *args: str) -> tuple[np.ndarray, np.ndarray]:
    out, gl_out = tmp_path / "shot.png", tmp_path / "gl.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "xvfb_screenshot.py"),
            "--out",
            str(out),
            "--gl-out",
            str(gl_out),
            *args,
        ],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    read = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in (out, gl_out)]
    return read[0], read[1]


def test_real_window_under_xvfb_shows_the_frame(xvfb, tmp_path):
    img = pattern()
    frame_png = tmp_path / "frame.png"
    cv2.imwrite(str(frame_png), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    shot, gl_shot = screenshot(xvfb, tmp_path, "--frame", str(frame_png), "--size", "64x48")
    assert shot.shape == (48, 64, 3)
    assert max_diff(shot, img) <= TOL  # what the X server shows, upright
    assert max_diff(gl_shot, img) <= TOL

    # Fullscreen on the 400x240 screen: scaled to 320x240 with 40-pixel bars left and right.
    shot, _ = screenshot(xvfb, tmp_path, "--frame", str(frame_png), "--fullscreen")
    assert shot.shape == (240, 400, 3)
    assert shot[:, :40].max() == 0 and shot[:, 360:].max() == 0
    scaled = cv2.resize(img, (320, 240), interpolation=cv2.INTER_LINEAR)
    assert max_diff(shot[:, 40:360], scaled) <= TOL


def test_every_default_target_name_is_that_imagenet_class():
    """A name that is not a class would be refused (or, before, silently become another:
    'pagoda' dreamed an Angora rabbit)."""
    from realtime.engine.classes import class_names, resolve_class
    from realtime.present.display import DEFAULT_TARGET_NAMES

    for name in DEFAULT_TARGET_NAMES:
        assert class_names()[resolve_class(name)] == name
