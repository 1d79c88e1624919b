"""The audience corner of the window: its line, and a QR code that decodes to the page's address
from the window's own pixels (headless EGL, and a real window under Xvfb)."""

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from realtime.control.audience import AudienceQueue
from realtime.knobs import AudienceConfig, DisplayConfig
from realtime.present.audience_hud import AudienceShow, audience_lines, qr_pixels

# The window fixtures of the display tests (the test functions' arguments "redefine" them: F811).
from tests.present.test_display import make_window, params, screenshot, show, xvfb  # noqa: F401

URL = "http://192.168.1.10:8080/"


def decode_qr(rgb: np.ndarray) -> str:
    """The text of the QR code in a picture (OpenCV's detector), "" if none is found."""
    text, _points, _ = cv2.QRCodeDetector().detectAndDecode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return text


def test_the_line_says_what_is_dreamed_and_since_when():
    view = {"enabled": True, "now": {"name": "volcano", "asked_s": 12.7}, "queue": []}
    assert audience_lines(view) == "now dreaming: volcano — asked 12 s ago"
    view["queue"] = ["pizza", "banana", "goldfish", "stupa", "peacock"]
    assert audience_lines(view).splitlines()[1] == "next: pizza, banana, goldfish (+2)"
    assert audience_lines({"enabled": True, "now": None, "queue": []}).startswith("scan to ask")
    assert audience_lines({"enabled": False, "now": None, "queue": []}) == "requests are paused"


def test_qr_pixels_decode_to_the_address():
    code = qr_pixels(URL, 4)
    assert code.shape[0] == code.shape[1] and code.shape[0] % 4 == 0
    assert (code[:16] == 255).all()  # the quiet zone
    assert decode_qr(np.repeat(code[:, :, None], 3, axis=2)) == URL


def test_the_window_shows_a_readable_code_in_the_chosen_corner_and_a_toggles_it(
    make_window,  # noqa: F811
    params,  # noqa: F811
):
    queue = AudienceQueue(AudienceConfig(dwell=60.0), params)
    queue.ask("10.0.0.1", "volcano")
    queue.tick()
    window, slot = make_window(
        size=(640, 360),
        audience=AudienceShow(queue, URL, corner="top-left"),
        config=DisplayConfig(),
    )
    picture = np.full((36, 64, 3), 90, np.uint8)
    shot = show(window, slot, picture)
    assert re.fullmatch(r"now dreaming: volcano — asked \d s ago", window.audience_text)
    assert decode_qr(shot[: 360 // 2, : 640 // 2]) == URL  # top-left quarter
    assert decode_qr(shot[:, 640 // 2 :]) == ""
    window.on_key_press(window._pyglet.window.key.A, 0)  # noqa: SLF001
    assert not window.audience_visible
    hidden = show(window, slot, picture, index=1)
    assert decode_qr(hidden) == "" and np.abs(hidden.astype(int) - 90).max() <= 2


@pytest.mark.parametrize("xvfb", ["800x450x24"], indirect=True)
def test_real_window_under_xvfb_shows_the_code_and_the_now_dreaming_line(
    xvfb,  # noqa: F811
    tmp_path,
):
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    shot, _ = screenshot(xvfb, tmp_path, "--frame", str(frame), "--fullscreen", "--audience", URL)
    assert shot.shape == (450, 800, 3)
    assert decode_qr(shot) == URL  # from the pixels the X server shows
    assert decode_qr(shot[:, 400:]) == URL  # in the bottom-right corner (the default)
    if os.environ.get("DREAM_SHOTS"):
        out = Path(os.environ["DREAM_SHOTS"]) / "audience_window.jpg"
        cv2.imwrite(str(out), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
