"""The heads-up display over the dream: frame rates, latency, layer and target, as text.

`hud_text` is plain string formatting (testable without GL); `Hud` draws it with
pyglet in the window's GL context. Both belong to the main thread, like the window.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtime.control.params import Snapshot

# Text layout is the costly part of a pyglet label; 4 updates a second is enough to read.
REFRESH_SECONDS = 0.25
MARGIN = 8  # pixels between the window's top-left corner, the panel and the text
FONT_SIZE = 12  # points


def _fmt(value: object) -> str:
    """Numbers compact (1 decimal below 100, none above), everything else as str."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy too
        value = float(value)
        return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def hud_text(
    snap: Snapshot,
    display_fps: float,
    frame_index: int | None,
    frame_age_ms: float | None,
    stats: Mapping[str, object] | None = None,
    midi_armed: str | None = None,
) -> str:
    """The HUD's lines.

    Args:
        snap: the live parameters now (what a key press just changed shows at once).
        display_fps: how often the window redraws.
        frame_index: the index of the Output on screen, None before the first.
        frame_age_ms: capture to upload time of that Output, None before the first.
        stats: the pipeline's own figures (dream fps, latency_ms, drops...), shown as given.
        midi_armed: the parameter MIDI learn waits to bind (key M), None when not learning.
    """
    lines = [
        f"layer {snap.layer} ({snap.layer_index})   target {snap.target_name}"
        + ("   PAUSED" if snap.paused else "")
    ]
    if stats:
        lines.append("   ".join(f"{key} {_fmt(value)}" for key, value in stats.items()))
    shown = f"display {display_fps:.0f} fps" if display_fps > 0 else "display -- fps"
    if frame_index is not None and frame_age_ms is not None:
        shown += f"   frame {frame_index}   shown {frame_age_ms:.0f} ms after capture"
    lines.append(shown)
    if midi_armed is not None:
        lines.append(f"MIDI learn: move a control to bind {midi_armed}   (M next, shift+M cancel)")
    return "\n".join(lines)


class Hud:
    """A text panel in the window's top-left corner; main thread only (it draws with GL)."""

    def __init__(self, visible: bool) -> None:
        import pyglet

        self.visible = visible
        self._batch = pyglet.graphics.Batch()
        back = pyglet.graphics.Group(order=0)
        front = pyglet.graphics.Group(order=1)
        # Black at 60% opacity keeps white text legible over any picture.
        self._panel = pyglet.shapes.Rectangle(
            0, 0, 1, 1, color=(0, 0, 0, 150), batch=self._batch, group=back
        )
        self._label = pyglet.text.Label(
            "",
            font_size=FONT_SIZE,
            x=0,
            y=0,
            anchor_y="top",
            multiline=True,
            width=2000,
            color=(255, 255, 255, 255),
            batch=self._batch,
            group=front,
        )
        self._last_update = -float("inf")
        self._last_version = -1

    @property
    def text(self) -> str:
        return self._label.text

    def due(self, version: object) -> bool:
        """True when the text should be rebuilt: REFRESH_SECONDS passed, or `version` (what the
        text shows besides the figures: the params' version, the armed MIDI learn) changed."""
        now = time.monotonic()
        if version == self._last_version and now - self._last_update < REFRESH_SECONDS:
            return False
        self._last_update, self._last_version = now, version
        return True

    def set_text(self, text: str) -> None:
        if text != self._label.text:
            self._label.text = text

    def draw(self, window_height: int) -> None:
        """Draw at the top-left of a window `window_height` pixels high (window coordinates),
        whether or not `visible` (the caller decides)."""
        self._label.x = 2 * MARGIN
        self._label.y = window_height - 2 * MARGIN
        self._panel.x = MARGIN
        self._panel.width = self._label.content_width + 2 * MARGIN
        self._panel.height = self._label.content_height + 2 * MARGIN
        self._panel.y = window_height - MARGIN - self._panel.height
        self._batch.draw()

    def delete(self) -> None:
        self._label.delete()
        self._panel.delete()
