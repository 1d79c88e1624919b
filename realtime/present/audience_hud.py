"""The audience corner of the window: a QR code of the request page and what is dreamed now.

`audience_lines` is plain formatting (testable without GL), `qr_pixels` the code as pixels
(segno, pure Python); `AudienceHud` draws both with pyglet in the window's GL context, on the
main thread like the window.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from realtime.control.audience import AudienceQueue
from realtime.knobs import CORNERS

REFRESH_SECONDS = 0.5  # "asked 12 s ago" moves once a second; twice keeps it on time
MARGIN = 12  # pixels from the window's edges and around the code
FONT_SIZE = 14  # points
QR_BORDER = 4  # modules of white around the code: the quiet zone the QR standard asks for
# A module (one QR square) at least this many pixels, and the code about a fifth of the window's
# height: a phone reads it across a room from a projection.
MIN_MODULE = 3
QR_SHARE = 0.22


def audience_lines(view: Mapping[str, object]) -> str:
    """The line under the code: "now dreaming: volcano — asked 12 s ago", and what is next."""
    if not view.get("enabled", True):
        return "requests are paused"
    now = view.get("now")
    if not now:
        lines = ["scan to ask the dream for something"]
    else:
        lines = [f"now dreaming: {now['name']} — asked {int(now['asked_s'])} s ago"]  # type: ignore[index]
    queue = list(view.get("queue") or ())  # type: ignore[call-overload]
    if queue:
        more = f" (+{len(queue) - 3})" if len(queue) > 3 else ""
        lines.append("next: " + ", ".join(queue[:3]) + more)
    return "\n".join(lines)


def qr_pixels(url: str, module: int) -> np.ndarray:
    """The QR code of `url` with its quiet zone: (N, N) uint8, 0 dark, 255 light, each module
    `module` x `module` pixels, top row first."""
    import segno

    code = segno.make(url, error="m")
    rows = np.array(list(code.matrix_iter(scale=1, border=QR_BORDER)), dtype=bool)  # (n, n)
    light = np.where(rows, 0, 255).astype(np.uint8)
    return np.kron(light, np.ones((module, module), np.uint8))


@dataclass(frozen=True)
class AudienceShow:
    """What the window shows of audience requests."""

    queue: AudienceQueue  # whose requests
    url: str  # the page's address, in the QR code
    corner: str = "bottom-right"  # one of CORNERS
    visible: bool = True  # at start (key A toggles)


class AudienceHud:
    """The QR code and the line in one corner; main thread only (it draws with GL)."""

    def __init__(self, show: AudienceShow) -> None:
        import pyglet

        if show.corner not in CORNERS:
            raise ValueError(f"expected a corner {' | '.join(CORNERS)}, got {show.corner!r}")
        self._pyglet = pyglet
        self._show = show
        self.visible = show.visible
        self._batch = pyglet.graphics.Batch()
        back, front = pyglet.graphics.Group(order=0), pyglet.graphics.Group(order=1)
        self._panel = pyglet.shapes.Rectangle(
            0, 0, 1, 1, color=(0, 0, 0, 170), batch=self._batch, group=back
        )
        self._label = pyglet.text.Label(
            "",
            font_size=FONT_SIZE,
            multiline=True,
            width=1200,
            anchor_y="top",
            color=(255, 255, 255, 255),
            batch=self._batch,
            group=front,
        )
        self._front = front
        self._sprite = None
        self._module = 0
        self._modules = len(qr_pixels(show.url, 1))  # the code's side in modules, quiet zone too
        self._last_update = -float("inf")

    @property
    def text(self) -> str:
        return self._label.text

    def _code(self, window_height: int) -> None:
        """(Re)build the code's sprite for a window this high."""
        module = max(MIN_MODULE, int(window_height * QR_SHARE) // self._modules)
        if module == self._module:
            return
        self._module = module
        grey = qr_pixels(self._show.url, module)
        rgba = np.repeat(grey[::-1, :, None], 4, axis=2)  # pyglet's rows go bottom up
        rgba[:, :, 3] = 255
        size = grey.shape[0]
        image = self._pyglet.image.ImageData(size, size, "RGBA", rgba.tobytes())
        if self._sprite is not None:
            self._sprite.delete()
        self._sprite = self._pyglet.sprite.Sprite(image, batch=self._batch, group=self._front)

    def draw(self, window_width: int, window_height: int) -> None:
        """Draw in the chosen corner of a window this size (window coordinates)."""
        if not self.visible:
            return
        now = time.monotonic()
        if now - self._last_update >= REFRESH_SECONDS:
            self._last_update = now
            text = audience_lines(self._show.queue.view())
            if text != self._label.text:
                self._label.text = text
        self._code(window_height)
        sprite, label = self._sprite, self._label
        side = sprite.width
        width = max(side, label.content_width)
        height = side + MARGIN + label.content_height
        left = "left" in self._show.corner
        top = "top" in self._show.corner
        x0 = 2 * MARGIN if left else window_width - 2 * MARGIN - width
        y0 = window_height - 2 * MARGIN - height if top else 2 * MARGIN
        # The code on top, the line under it; both aligned to the window's near edge.
        sprite.x = x0 if left else x0 + width - side
        sprite.y = y0 + label.content_height + MARGIN
        label.x = x0 if left else x0 + width - label.content_width
        label.y = y0 + label.content_height
        self._panel.x, self._panel.y = x0 - MARGIN, y0 - MARGIN
        self._panel.width, self._panel.height = width + 2 * MARGIN, height + 2 * MARGIN
        self._batch.draw()

    def delete(self) -> None:
        self._label.delete()
        self._panel.delete()
        if self._sprite is not None:
            self._sprite.delete()
