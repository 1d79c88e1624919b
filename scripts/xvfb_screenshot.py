"""Open the real dream window on an X display (e.g. Xvfb) showing one frame, and screenshot it.

    Xvfb :99 -screen 0 640x480x24 &
    DISPLAY=:99 python scripts/xvfb_screenshot.py --out /tmp/xvfb_shot.png [--frame pic.png]
        [--fullscreen] [--hud] [--size 320x240] [--mix 1.0]
        [--audience http://192.168.1.10:8080/ [--asked volcano] [--corner bottom-right]]

The screenshot is taken from the X server (XGetImage of the window after the
buffer swap), so it shows what a viewer would see, not just what GL drew; with
--gl-out it also saves the glReadPixels view of the back buffer for comparison.
Without --frame it shows a test pattern: four coloured quadrants over a gradient.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.control.audience import AudienceQueue  # noqa: E402
from realtime.control.params import LiveParams  # noqa: E402
from realtime.knobs import AudienceConfig, DisplayConfig, parse_size  # noqa: E402
from realtime.live.slot import LatestSlot, Output  # noqa: E402
from realtime.present.audience_hud import AudienceShow  # noqa: E402
from realtime.present.display import DreamWindow  # noqa: E402


def test_pattern(width: int = 128, height: int = 72) -> np.ndarray:
    """(H, W, 3) uint8 RGB: red, green, blue and white quadrants with a brightness ramp."""
    image = np.zeros((height, width, 3), np.uint8)
    ramp = np.linspace(80, 255, width // 2).astype(np.uint8)  # left to right within a quadrant
    h2, w2 = height // 2, width // 2
    image[:h2, :w2, 0] = ramp  # top-left red
    image[:h2, w2:, 1] = ramp  # top-right green
    image[h2:, :w2, 2] = ramp  # bottom-left blue
    image[h2:, w2:] = ramp[:, None]  # bottom-right grey
    return image


def grab_x_window(window: object) -> np.ndarray:
    """The window's pixels as the X server has them: (H, W, 3) uint8 RGB."""
    from pyglet.libs.x11 import xlib

    display, xid = window._x_display, window._window  # noqa: SLF001 (pyglet's Xlib handles)
    w, h = window.get_framebuffer_size()
    xlib.XSync(display, False)
    all_planes = 0xFFFFFFFF
    image = xlib.XGetImage(display, xid, 0, 0, w, h, all_planes, xlib.ZPixmap)
    if not image:
        raise RuntimeError("XGetImage returned nothing; is the window mapped?")
    try:
        img = image.contents
        # pyglet types `data` as c_char_p, which would copy up to the first zero byte: take the
        # raw pointer instead.
        data = ctypes.c_void_p.from_buffer(img, type(img).data.offset).value
        if img.bits_per_pixel != 32:
            raise RuntimeError(f"expected a 24/32-bit X visual, got {img.bits_per_pixel} bpp")
        raw = ctypes.string_at(data, img.bytes_per_line * h)
        words = np.frombuffer(raw, np.uint32).reshape(h, img.bytes_per_line // 4)[:, :w]
        channels = []
        for mask in (img.red_mask, img.green_mask, img.blue_mask):
            shift = (mask & -mask).bit_length() - 1  # lowest set bit
            channels.append(((words & mask) >> shift).astype(np.uint8))
        return np.stack(channels, axis=-1)
    finally:
        # XDestroyImage is a C macro; for a ZPixmap from XGetImage it frees these two.
        xlib.XFree(data)
        xlib.XFree(image)


def _audience(url: str, asked: str, corner: str, params: LiveParams) -> AudienceShow:
    """A queue in which a visitor asked for `asked` 12 s ago and it is dreamed now."""
    shift = [0.0]
    queue = AudienceQueue(AudienceConfig(dwell=60.0), params, lambda: time.monotonic() + shift[0])
    queue.ask("192.0.2.1", asked)
    queue.ask("192.0.2.2", "pizza")
    queue.tick()
    shift[0] = 12.0
    return AudienceShow(queue, url, corner)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/xvfb_shot.png", help="screenshot PNG to write")
    ap.add_argument("--gl-out", default="", help="also save glReadPixels of the back buffer")
    ap.add_argument("--frame", default="", help="picture to show (default: a test pattern)")
    ap.add_argument("--size", default="320x240", help="window size WxH when not fullscreen")
    ap.add_argument("--fullscreen", action="store_true", help="fill screen 0")
    ap.add_argument("--hud", action="store_true", help="show the HUD")
    ap.add_argument("--mix", type=float, default=1.0, help="0 camera (inverted pattern), 1 dream")
    ap.add_argument("--seconds", type=float, default=0.5, help="run the event loop this long")
    ap.add_argument("--audience", default="", help="show the audience QR code of this address")
    ap.add_argument("--asked", default="volcano", help="the class a visitor asked for 12 s ago")
    ap.add_argument("--corner", default="bottom-right", help="where the QR code goes")
    args = ap.parse_args(argv)

    if args.frame:
        bgr = cv2.imread(args.frame, cv2.IMREAD_COLOR)
        if bgr is None:
            ap.error(f"cannot read {args.frame}")
        frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        frame = test_pattern()
    params = LiveParams(["conv1", "conv2", "conv3"], ["demo"], "demo", {"mix": args.mix})
    outputs: LatestSlot[Output] = LatestSlot()
    now = time.monotonic()
    outputs.put(Output(frame, 255 - frame, 0, now, now, "conv2", "none"))
    config = DisplayConfig(fullscreen=args.fullscreen, hud=args.hud, vsync=False)
    audience = _audience(args.audience, args.asked, args.corner, params) if args.audience else None
    window = DreamWindow(
        outputs,
        params,
        config,
        stats=lambda: {"fps": 25.0, "latency_ms": 40.0},
        size=parse_size(args.size),
        targets=[1, 2],
        audience=audience,
    )
    stop = threading.Event()
    shots: dict[str, np.ndarray] = {}

    def snap_and_stop(_dt: float) -> None:
        # After the event loop has drawn and swapped for a while: what X shows now.
        shots["x"] = grab_x_window(window.window)
        shots["gl"] = window.read_pixels()
        stop.set()

    import pyglet

    pyglet.clock.schedule_once(snap_and_stop, args.seconds)
    window.run(stop)
    cv2.imwrite(args.out, cv2.cvtColor(shots["x"], cv2.COLOR_RGB2BGR))
    if args.gl_out:
        cv2.imwrite(args.gl_out, cv2.cvtColor(shots["gl"], cv2.COLOR_RGB2BGR))
    h, w = shots["x"].shape[:2]
    print(f"saved {args.out} ({w}x{h})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
