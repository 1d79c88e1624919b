"""GL pieces of the display: shader programs from shaders/, the [dream | camera] texture, read-back.

Main thread only, with the window's GL context current. pyglet.gl is imported
inside the functions so that the window module can set pyglet's headless
option before anything loads the GL bindings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realtime.control.resources import data_dir

if TYPE_CHECKING:
    from pyglet.graphics.shader import ShaderProgram

logger = logging.getLogger(__name__)

SHADER_DIR = data_dir("shaders")  # in the installed package, else the checkout


class DisplayError(RuntimeError):
    """The window, its GL context or its shaders could not be set up; the message says why.

    Raised by this module and by realtime.present.display (which re-exports it).
    """


def numbered(source: str) -> str:
    """Source text with 1-based line numbers, as driver logs refer to lines."""
    return "\n".join(f"{i:4d} | {line}" for i, line in enumerate(source.splitlines(), 1))


def build_program(vertex_source: str, fragment_source: str, name: str = "display") -> ShaderProgram:
    """Compile and link a shader program in the current GL context.

    Raises:
        DisplayError: compile or link failure, with the numbered source and the driver's log.
    """
    from pyglet.graphics.shader import Shader, ShaderException, ShaderProgram

    shaders = []
    for kind, source in (("vertex", vertex_source), ("fragment", fragment_source)):
        try:
            shaders.append(Shader(source, kind))
        except ShaderException as err:  # pyglet's exception derives from BaseException
            raise DisplayError(
                f"the {kind} shader {name}.{kind[:4]} failed to compile; fix the GLSL below.\n"
                f"{numbered(source)}\n{_driver_log(err)}"
            ) from err
    try:
        return ShaderProgram(*shaders)
    except ShaderException as err:
        raise DisplayError(
            f"the shaders {name}.vert + {name}.frag failed to link; check that the vertex "
            f"outputs match the fragment inputs.\nvertex:\n{numbered(vertex_source)}\n"
            f"fragment:\n{numbered(fragment_source)}\n{_driver_log(err)}"
        ) from err


def _driver_log(err: BaseException) -> str:
    """The driver's message from a pyglet ShaderException (dropping pyglet's own source dump)."""
    text = str(err)
    marker = "-" * 60 + "\n"
    return "driver log:\n" + (text.rsplit(marker, 1)[-1] if marker in text else text).strip()


def load_program(shader_dir: Path = SHADER_DIR, name: str = "display") -> ShaderProgram:
    """Build the program from `name`.vert and `name`.frag in `shader_dir`.

    Raises:
        DisplayError: a file is missing, or the shaders do not compile or link.
    """
    sources = []
    for ext in ("vert", "frag"):
        path = shader_dir / f"{name}.{ext}"
        try:
            sources.append(path.read_text())
        except OSError as err:
            raise DisplayError(
                f"cannot read shader {path}: {err}; the shaders/ folder ships with the package"
            ) from err
    return build_program(sources[0], sources[1], name)


class PairTexture:
    """One (2W x H) RGB texture: the dream in the left half, its camera frame in the right.

    Created at the first frame's size, recreated only when the size changes, and
    otherwise updated in place with glTexSubImage2D (one call per half, straight
    from the numpy buffers: no host-side concatenation copy).
    """

    def __init__(self) -> None:
        self.name = 0  # GL texture name; 0 until the first upload
        self.frame_size: tuple[int, int] | None = None  # (W, H) of each half

    @property
    def size(self) -> tuple[int, int] | None:
        """(2W, H) of the whole texture, None before the first upload."""
        return None if self.frame_size is None else (2 * self.frame_size[0], self.frame_size[1])

    def upload(self, dream: np.ndarray, camera: np.ndarray) -> None:
        """Copy two C-contiguous (H, W, 3) uint8 RGB images of the same size into the halves."""
        from pyglet import gl

        h, w = dream.shape[:2]
        if self.frame_size != (w, h):
            self._create(w, h)
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.name)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)  # rows of 3*W bytes need not be 4-aligned
        for x, image in ((0, dream), (w, camera)):
            gl.glTexSubImage2D(
                gl.GL_TEXTURE_2D, 0, x, 0, w, h, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, image.ctypes.data
            )

    def bind(self, unit: int = 0) -> None:
        from pyglet import gl

        gl.glActiveTexture(gl.GL_TEXTURE0 + unit)
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.name)

    def _create(self, w: int, h: int) -> None:
        from pyglet import gl

        self.delete()
        name = gl.GLuint(0)
        gl.glGenTextures(1, name)
        self.name = name.value
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.name)
        for param, value in (
            (gl.GL_TEXTURE_MIN_FILTER, gl.GL_LINEAR),
            (gl.GL_TEXTURE_MAG_FILTER, gl.GL_LINEAR),
            (gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE),
            (gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE),
        ):
            gl.glTexParameteri(gl.GL_TEXTURE_2D, param, value)
        gl.glTexImage2D(
            gl.GL_TEXTURE_2D, 0, gl.GL_RGB8, 2 * w, h, 0, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, None
        )
        self.frame_size = (w, h)
        logger.info("display: texture %dx%d for %dx%d frames", 2 * w, h, w, h)

    def delete(self) -> None:
        """Free the texture (safe to call twice)."""
        from pyglet import gl

        if self.name:
            gl.glDeleteTextures(1, gl.GLuint(self.name))
        self.name = 0
        self.frame_size = None


def letterbox(frame_size: tuple[int, int], window_size: tuple[int, int]) -> tuple[float, float]:
    """Fraction of the window's (width, height) a frame fills at its own aspect ratio."""
    frame_aspect = frame_size[0] / frame_size[1]
    window_aspect = window_size[0] / max(window_size[1], 1)
    if window_aspect > frame_aspect:
        return frame_aspect / window_aspect, 1.0  # bars left and right
    return 1.0, window_aspect / frame_aspect  # bars top and bottom


def read_framebuffer(width: int, height: int) -> np.ndarray:
    """The bound read buffer as (H, W, 3) uint8 RGB, top row first."""
    from pyglet import gl

    pixels = np.empty((height, width, 3), np.uint8)
    gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
    gl.glReadPixels(0, 0, width, height, gl.GL_RGB, gl.GL_UNSIGNED_BYTE, pixels.ctypes.data)
    return pixels[::-1].copy()  # GL's rows start at the bottom
