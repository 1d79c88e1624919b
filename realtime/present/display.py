"""The pyglet window: shows the latest dreamed frame through a GLSL shader, with keys and a HUD.

Everything here runs on the main thread, the only thread that may touch pyglet
and GL. The window never waits for the dream loop: each redraw polls the
output slot without blocking and re-shows the last frame when nothing is new.

The dream and its camera frame share ONE texture, side by side (2W x H; see
realtime.present.gl.PairTexture): one texture to create, bind and free, and the fragment
shader samples both halves for the camera <-> dream crossfade.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from realtime.control.config import DisplayConfig
from realtime.control.midi import MidiLearn
from realtime.control.params import LiveParams
from realtime.live.slot import LatestSlot, Output
from realtime.present.audience_hud import AudienceHud, AudienceShow
from realtime.present.gl import DisplayError, PairTexture, letterbox, load_program, read_framebuffer
from realtime.present.hud import Hud, hud_text

logger = logging.getLogger(__name__)

__all__ = ["KEYS", "DisplayError", "DreamWindow", "pick_screen"]

# Classic deep-dream class targets that key T cycles through (then "none").
DEFAULT_TARGET_NAMES = (
    "jellyfish",
    "peacock",
    "tarantula",
    "goldfish",
    "volcano",
    "stupa",  # ImageNet's pagoda
    "pizza",
    "banana",
)

# Key bindings: (pyglet key names, label for people, what it does, handler method).
_BINDINGS = (
    (("RIGHT", "N"), "Right, N", "next layer (deeper)", "_next_layer"),
    (("LEFT", "P"), "Left, P", "previous layer (shallower)", "_previous_layer"),
    (("T",), "T", "next target class, then none (Shift+T: previous)", "_cycle_target"),
    (("F",), "F", "toggle fullscreen", "_toggle_fullscreen"),
    (("S",), "S", "save a snapshot PNG of the next output", "_snapshot"),
    (("SPACE",), "Space", "pause / resume the dream", "_pause"),
    (("R",), "R", "reset: clear the feedback", "_reset"),
    (("H",), "H", "show / hide the HUD (fps, latency, layer, target)", "_toggle_hud"),
    (
        ("A",),
        "A",
        "show / hide the audience QR code and what visitors asked for",
        "_toggle_audience",
    ),
    (
        ("M",),
        "M",
        "MIDI learn (with --midi): arm the next parameter, then move a control to bind it "
        "(Shift+M: cancel)",
        "_midi_learn",
    ),
    (("Q", "ESCAPE"), "Q, Escape", "quit", "_quit"),
)
KEYS: tuple[tuple[str, str], ...] = tuple((label, doc) for _, label, doc, _ in _BINDINGS)
"""The window's keys as (key, action) rows, for the README and the CLI help."""

STOP_POLL_SECONDS = 0.05  # how often run() looks at its stop event (quit within 50 ms)
REDRAW_SECONDS = 1 / 60  # redraw interval; with vsync the swap paces it to the screen instead
FPS_SMOOTHING = 0.05  # weight of the newest frame interval in the displayed-fps moving average


def _load_triton_first() -> None:
    """Import triton (if installed) before GL loads Mesa.

    Mesa's llvmpipe (and radeonsi) drivers load the system's libLLVM; triton's native
    library bundles its own LLVM and segfaults when it is loaded after that, which torch
    does lazily (torchvision.ops, torch.compile) long after the window opened. Loading it
    first is safe and takes about 0.1 s.
    """
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401

        logger.debug("display: loaded triton before the GL driver (LLVM symbol clash)")


def _import_pyglet(headless: bool):  # noqa: ANN202 (returns the pyglet module)
    """Import pyglet with the headless option set before its window module loads.

    Raises:
        DisplayError: pyglet's window module was already loaded the other way in this process.
    """
    import pyglet

    _load_triton_first()
    if "pyglet.window" in sys.modules and bool(pyglet.options["headless"]) != headless:
        raise DisplayError(
            f"pyglet was already set up with headless={bool(pyglet.options['headless'])} in this "
            f"process, cannot open a headless={headless} window; use one mode per process"
        )
    pyglet.options["headless"] = headless
    import pyglet.window  # noqa: F401 (loads the platform's window class with the option set)

    return pyglet


def pick_screen(display: object, index: int) -> object:
    """Screen `index` of a pyglet display; a bad index logs the screens and falls back to 0."""
    screens = display.get_screens()
    if 0 <= index < len(screens):
        return screens[index]
    listing = "; ".join(
        f"{i}: {s.width}x{s.height} at ({s.x}, {s.y})" for i, s in enumerate(screens)
    )
    logger.warning(
        "display.screen=%d does not exist; screens are %s; using screen 0", index, listing
    )
    return screens[0]


class DreamWindow:
    """The installation's window. Every method: main thread only (pyglet and GL live there)."""

    def __init__(
        self,
        outputs: LatestSlot[Output],
        params: LiveParams,
        config: DisplayConfig,
        stats: Callable[[], Mapping[str, object]] | None = None,
        on_close: Callable[[], None] | None = None,
        headless: bool = False,
        size: tuple[int, int] = (1280, 720),
        targets: Sequence[int] | None = None,
        audience: AudienceShow | None = None,
        midi: MidiLearn | None = None,
    ) -> None:
        """Open the window, compile the shaders and get ready to draw.

        Args:
            outputs: where the dream loop publishes; only ever polled, never waited on.
            params: live parameters; the shader reads mix/brightness/contrast/saturation
                from them each redraw and the keys write to them.
            config: fullscreen, screen, vsync, hide_cursor and hud at start.
            stats: returns the pipeline's figures (fps, latency_ms, drops...) for the HUD.
            on_close: called once when the operator quits (Q, Escape, the close button).
            headless: an off-screen EGL surface instead of a window (tests, servers).
            size: the window's (width, height) when not fullscreen.
            targets: ImageNet class indices cycled by key T; None = DEFAULT_TARGET_NAMES.
            audience: the audience requests' QR code and line to show in a corner; None: none.
            midi: the MIDI learner key M arms; None: MIDI is off.

        Raises:
            DisplayError: no display or GL context, or the shaders failed.
        """
        self._pyglet = pyglet = _import_pyglet(headless)
        from pyglet import gl

        self._outputs = outputs
        self._params = params
        self._config = config
        self._stats = stats
        self._on_close = on_close
        self._midi = midi
        if targets is None:
            from realtime.engine.classes import resolve_class

            targets = [resolve_class(name) for name in DEFAULT_TARGET_NAMES]
        self._targets: list[int | None] = [*targets, None]  # None = no target
        try:
            display = pyglet.display.get_display()
            screen = pick_screen(display, config.screen)
            # Opened windowed at `size` and then made fullscreen, so that F returns to `size`
            # (a fullscreen window created with a size would switch the monitor's mode instead).
            self.window = pyglet.window.Window(
                size[0],
                size[1],
                caption="dream",
                resizable=True,
                visible=False,
                screen=screen,
                vsync=config.vsync,
                config=self._gl_config(screen),
            )
            if config.fullscreen:
                self.window.set_fullscreen(True, screen=screen)
            self.window.set_visible(True)
        except (pyglet.window.NoSuchDisplayException, pyglet.window.WindowException) as err:
            raise DisplayError(
                f"cannot open the window: {err}; is DISPLAY set (or run --headless)?"
            ) from err
        self._screen = screen
        if config.hide_cursor:
            self.window.set_mouse_visible(False)
        self.window.push_handlers(
            on_draw=self._on_draw, on_key_press=self.on_key_press, on_close=self._on_window_close
        )
        self._keys = {
            getattr(pyglet.window.key, k): method for keys, _, _, method in _BINDINGS for k in keys
        }

        self._program = load_program()
        self._program["frame"] = 0  # texture unit 0
        # Two triangles covering the window in normalised device coordinates.
        self._quad = self._program.vertex_list(
            4, gl.GL_TRIANGLE_STRIP, position=("f", (-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0))
        )
        self._texture = PairTexture()
        self._count = 0  # slot counter of the frame in the texture
        self._shown: Output | None = None
        self._shown_age_ms: float | None = None
        self._hud = Hud(config.hud)
        self._audience = AudienceHud(audience) if audience is not None else None
        self._fps = 0.0
        self._last_draw: float | None = None
        self._notified = False  # on_close was called
        self._running = False  # inside run()'s event loop
        self.closed = False
        logger.info(
            "display: %s %dx%d, GL %s on %s",
            "headless" if headless else "window",
            *self.window.get_framebuffer_size(),
            gl.gl_info.get_version_string(),
            gl.gl_info.get_renderer(),
        )

    def _gl_config(self, screen: object) -> object:
        """An 8-bit-per-channel double-buffered GL 3.3 config, or the platform's default."""
        from pyglet import gl

        wanted = gl.Config(
            double_buffer=True,
            red_size=8,
            green_size=8,
            blue_size=8,
            major_version=3,
            minor_version=3,
        )
        try:
            return screen.get_best_config(wanted)
        except self._pyglet.window.NoSuchConfigException:
            logger.warning("no 8-bit RGB double-buffered GL 3.3 config; using the default")
            return None

    # --- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Show frames until the window closes or `stop` is set, then clean up."""
        pyglet = self._pyglet
        if self.closed:
            return
        pyglet.clock.schedule_interval(self._check_stop, STOP_POLL_SECONDS, stop)
        self._running = True
        try:
            if not stop.is_set():
                pyglet.app.run(REDRAW_SECONDS)
        finally:
            self._running = False
            pyglet.clock.unschedule(self._check_stop)
            self.close()

    def _check_stop(self, _dt: float, stop: threading.Event) -> None:
        if stop.is_set():
            logger.info("display: stop requested, closing the window")
            self.close()

    def draw_once(self) -> None:
        """One cycle as the event loop does it: pending events, poll, upload if new, draw, swap."""
        if self.closed:
            return
        self.window.switch_to()
        self.window.dispatch_events()
        if not self.closed:  # a queued Q or close may have just closed it
            self._on_draw()  # directly: outside pyglet.app.run, window events are queued
            self.window.flip()

    def _on_draw(self) -> None:
        self._poll()
        self._render()
        now = time.monotonic()
        if self._last_draw is not None and now > self._last_draw:
            rate = 1.0 / (now - self._last_draw)
            self._fps = rate if self._fps == 0.0 else self._fps + FPS_SMOOTHING * (rate - self._fps)
        self._last_draw = now

    def _poll(self) -> None:
        """Take the newest Output if there is one; never waits (timeout 0)."""
        count, out = self._outputs.get(after=self._count, timeout=0)
        if out is None or count == self._count:
            return
        self._count = count
        self._upload(out)
        self._shown = out
        self._shown_age_ms = (time.monotonic() - out.capture_ts) * 1000.0

    def _upload(self, out: Output) -> None:
        dream = _rgb(out.dream, "dream")
        camera = _rgb(out.camera, "camera") if out.camera is not None else dream
        if camera.shape != dream.shape:
            import cv2

            camera = cv2.resize(
                camera, (dream.shape[1], dream.shape[0]), interpolation=cv2.INTER_AREA
            )
        self._texture.upload(dream, camera)

    def _render(self) -> None:
        """Draw the current texture (letterboxed) and the HUD into the back buffer."""
        from pyglet import gl

        fb_w, fb_h = self.window.get_framebuffer_size()
        gl.glViewport(0, 0, fb_w, fb_h)
        gl.glClearColor(0.0, 0.0, 0.0, 1.0)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        snap = self._params.snapshot()
        if self._texture.frame_size is not None:
            program = self._program
            program.use()
            program["scale"] = letterbox(self._texture.frame_size, (fb_w, fb_h))
            look = snap.display
            program["mix_amount"] = look.mix
            program["brightness"] = look.brightness
            program["contrast"] = look.contrast
            program["saturation"] = look.saturation
            self._texture.bind(0)
            self._quad.draw(gl.GL_TRIANGLE_STRIP)
            program.stop()
        armed = self._midi.armed if self._midi is not None else None
        if self._hud.visible or armed is not None:  # learning shows even with the HUD off
            if self._hud.due((snap.version, armed)):  # the stats callable is asked only then
                shown = self._shown
                self._hud.set_text(
                    hud_text(
                        snap,
                        self._fps,
                        None if shown is None else shown.index,
                        self._shown_age_ms,
                        self._stats() if self._stats else None,
                        armed,
                    )
                )
            self._hud.draw(self.window.height)
        if self._audience is not None:
            self._audience.draw(self.window.width, self.window.height)

    def read_pixels(self) -> np.ndarray:
        """The picture as drawn now: (H, W, 3) uint8 RGB, top row first.

        It re-renders the current frame into the back buffer and reads that, so it
        does not depend on the front buffer surviving a swap.
        """
        self.window.switch_to()
        self._render()
        return read_framebuffer(*self.window.get_framebuffer_size())

    @property
    def texture(self) -> PairTexture:
        """The one texture holding [dream | camera] (name 0 before the first frame)."""
        return self._texture

    @property
    def hud_visible(self) -> bool:
        return self._hud.visible

    @property
    def audience_visible(self) -> bool:
        return self._audience is not None and self._audience.visible

    @property
    def audience_text(self) -> str:
        """The audience line as last laid out ("" without audience requests)."""
        return "" if self._audience is None else self._audience.text

    @property
    def hud_text(self) -> str:
        """The HUD's text as last laid out ("" before it was first shown)."""
        return self._hud.text

    # --- keys --------------------------------------------------------------------------

    def on_key_press(self, symbol: int, modifiers: int) -> bool:
        """pyglet handler: run the bound action (see KEYS); True when the key was ours."""
        method = self._keys.get(symbol)
        if method is None:
            return False
        getattr(self, method)(modifiers)
        return True  # pyglet.event.EVENT_HANDLED: the default Escape handler stays out

    def _next_layer(self, _mod: int) -> None:
        logger.info("key: layer %s", self._params.step_layer(+1))

    def _previous_layer(self, _mod: int) -> None:
        logger.info("key: layer %s", self._params.step_layer(-1))

    def _cycle_target(self, modifiers: int) -> None:
        step = -1 if modifiers & self._pyglet.window.key.MOD_SHIFT else 1
        current = self._params.snapshot().target
        if current in self._targets:
            chosen = self._targets[(self._targets.index(current) + step) % len(self._targets)]
        else:
            chosen = self._targets[0 if step > 0 else -1]
        self._params.set("target", "none" if chosen is None else chosen)
        logger.info("key: target %s", self._params.snapshot().target_name)

    def _toggle_fullscreen(self, _mod: int) -> None:
        fullscreen = not self.window.fullscreen
        self.window.set_fullscreen(fullscreen, screen=self._screen if fullscreen else None)
        logger.info("key: fullscreen %s", "on" if fullscreen else "off")

    def _snapshot(self, _mod: int) -> None:
        self._params.request_snapshot()
        logger.info("key: snapshot requested")

    def _pause(self, _mod: int) -> None:
        logger.info("key: %s", "paused" if self._params.toggle_pause() else "resumed")

    def _reset(self, _mod: int) -> None:
        self._params.request_reset()
        logger.info("key: reset requested")

    def _toggle_hud(self, _mod: int) -> None:
        self._hud.visible = not self._hud.visible

    def _toggle_audience(self, _mod: int) -> None:
        if self._audience is not None:
            self._audience.visible = not self._audience.visible

    def _midi_learn(self, modifiers: int) -> None:
        if self._midi is None:
            logger.info("key: MIDI learn needs --midi [PORT]")
        elif modifiers & self._pyglet.window.key.MOD_SHIFT:
            self._midi.learn(None)
        else:
            self._midi.learn_next()

    def _quit(self, _mod: int) -> None:
        logger.info("key: quit")
        self._notify_close()
        self.close()

    # --- closing -----------------------------------------------------------------------

    def _on_window_close(self) -> bool:
        """The window's close button (pyglet's on_close): tell the owner, then close."""
        self._notify_close()
        self.close()
        return True  # handled: pyglet's default on_close would close a second time

    def _notify_close(self) -> None:
        if not self._notified and self._on_close is not None:
            self._notified = True
            self._on_close()

    def close(self) -> None:
        """Free the GL objects and close the window; ends run()'s loop. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.window.switch_to()
        self._texture.delete()
        self._hud.delete()
        if self._audience is not None:
            self._audience.delete()
        self._quad.delete()
        self._program.delete()
        self.window.close()
        if self._running:
            self._pyglet.app.exit()


def _rgb(image: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous (H, W, 3) uint8 array, or DisplayError naming what was wrong."""
    if not (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.shape[2] == 3
        and image.dtype == np.uint8
    ):
        got = (
            f"{type(image).__name__} shape {getattr(image, 'shape', None)} "
            f"dtype {getattr(image, 'dtype', None)}"
        )
        raise DisplayError(f"expected the {what} image as an (H, W, 3) uint8 RGB array, got {got}")
    return np.ascontiguousarray(image)
