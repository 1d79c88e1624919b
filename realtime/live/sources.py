"""Frame sources: cameras, video files, still images, network streams and a built-in demo."""

from __future__ import annotations

import logging
import math
import re
import sys
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)  # (width, height) wished from cameras and made by the demo
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".gif"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
VALID_FORMS = (
    'a camera index ("0"), "demo", a path to an existing image or video file, '
    "or a stream URL (rtsp://, http(s)://, udp://, ...)"
)


class SourceError(RuntimeError):
    """A frame source could not be recognised, opened or read."""


class FrameSource:
    """Something that produces RGB frames; subclasses implement open/read/close.

    A source is used by one thread at a time (the capture thread once it is started).

    Attributes:
        name: short human name for log lines ("camera 0", "video clip.mp4").
        is_live: True for cameras and streams, which deliver at their own pace and may stall.
        fps: the source's own frame rate, or None when it has none (still image) or is unknown.
        still: True for one still picture (fitted whole by capture.fit = auto).
    """

    name: str = "source"
    is_live: bool = False
    fps: float | None = None
    still: bool = False

    def open(self) -> None:
        """Open (or reopen after close) the source. Raises SourceError if it cannot."""
        raise NotImplementedError

    def read(self) -> np.ndarray | None:
        """The next frame, (H, W, 3) uint8 RGB; None when there is no frame now (or the end)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; safe to call twice."""
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    def __enter__(self) -> FrameSource:
        if not self.is_open:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR, BGRA or grey image -> (H, W, 3) uint8 RGB."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class _OpenCVSource(FrameSource):
    """Shared read/close for sources backed by cv2.VideoCapture."""

    def __init__(self) -> None:
        self._cap: cv2.VideoCapture | None = None

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def _read_capture(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.name} is not open; call open() first")
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return to_rgb(image)

    def read(self) -> np.ndarray | None:
        return self._read_capture()

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def _capture_fps(self) -> float | None:
        fps = self._cap.get(cv2.CAP_PROP_FPS) if self._cap is not None else 0.0
        # Some backends report 0, NaN or absurd rates (1000 fps for webcams) when they do not know.
        return float(fps) if fps and math.isfinite(fps) and 1.0 <= fps <= 240.0 else None


class CameraSource(_OpenCVSource):
    """A local camera by index; on Linux through V4L2 with MJPG and a one-frame driver buffer."""

    is_live = True

    def __init__(self, index: int, size: tuple[int, int] = DEFAULT_SIZE) -> None:
        super().__init__()
        if index < 0:
            raise SourceError(
                f"camera index must be 0 or more, got {index}; valid forms: {VALID_FORMS}"
            )
        self.index = index
        self.size = size  # (width, height) asked for; the camera may give another
        self.name = f"camera {index}"

    def open(self) -> None:
        self.close()
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.index, backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name} could not be opened: no camera at index {self.index}, or another "
                f"program is using it; check the cable, try another index, or use --source demo"
            )
        # MJPG lets USB 2 cameras deliver full frame rates at 640x480 and above; a driver buffer
        # of one frame keeps what we read current instead of up to 4 frames (~130 ms) old.
        # Each setting is a wish: cameras that refuse one keep their default.
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        self.fps = self._capture_fps()
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        logger.info(
            "%s opened at %dx%d (asked %dx%d), %s fps",
            self.name,
            *got,
            *self.size,
            f"{self.fps:.0f}" if self.fps else "unknown",
        )


class VideoFileSource(_OpenCVSource):
    """A video file; with loop=True it starts again from the first frame at the end."""

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self.name = f"video {self.path.name}"

    def open(self) -> None:
        self.close()
        if not self.path.is_file():
            raise SourceError(f"{self.name}: no such file {str(self.path)!r}")
        if self.path.stat().st_size == 0:  # truncated, or still being copied: not a codec fault
            raise SourceError(f"{self.name}: the file {str(self.path)!r} is empty (0 bytes)")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name}: OpenCV cannot decode {str(self.path)!r}; "
                f"convert it to H.264 .mp4 or MJPG .avi"
            )
        self._cap = cap
        self.fps = self._capture_fps()

    def read(self) -> np.ndarray | None:
        frame = self._read_capture()
        if frame is not None or not self.loop:
            return frame
        # End of the file: seek back to the start; if the container cannot seek, reopen it.
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        frame = self._read_capture()
        if frame is None:
            logger.debug("%s: seeking to the start failed; reopening the file", self.name)
            self.open()
            frame = self._read_capture()
        return frame


class StreamSource(_OpenCVSource):
    """A network stream (rtsp/http/udp...) through FFmpeg, with open and read timeouts."""

    is_live = True

    def __init__(self, url: str, open_timeout: float = 5.0, read_timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.open_timeout = open_timeout  # seconds to wait for the stream to answer at open
        self.read_timeout = read_timeout  # seconds a read may block before it gives up
        # Never print credentials ("rtsp://user:pass@host/...") into logs.
        self.name = "stream " + re.sub(r"//[^/@]*@", "//***@", url)

    def open(self) -> None:
        self.close()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000),
        ]  # fmt: skip
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name} could not be opened within {self.open_timeout:.0f} s; "
                f"check the URL and that the sender is running"
            )
        self._cap = cap
        self.fps = self._capture_fps()


class ImageSource(FrameSource):
    """One still picture, repeated for ever."""

    still = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"image {self.path.name}"
        self._image: np.ndarray | None = None

    @property
    def is_open(self) -> bool:
        return self._image is not None

    def open(self) -> None:
        image = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(
                f"{self.name}: cannot read {str(self.path)!r} as an image; "
                f"is it a PNG or JPEG that exists?"
            )
        if image.dtype != np.uint8:  # 16-bit PNG/TIFF: keep the top 8 bits
            image = (image // 257).astype(np.uint8)
        self._image = to_rgb(image)

    def read(self) -> np.ndarray | None:
        if self._image is None:
            raise SourceError(f"{self.name} is not open; call open() first")
        return self._image.copy()  # a copy, so a consumer cannot scribble on later frames

    def close(self) -> None:
        self._image = None


class DemoSource(FrameSource):
    """Moving imagery from scikit-image's sample pictures: slow pans, zooms and crossfades.

    Every frame is a pure function of its number (frame_at), so runs are repeatable. It exists
    so that the installation can be tried, tested and demonstrated without a camera, with
    real motion for the optical flow to follow.
    """

    PICTURES = (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
    )  # RGB pictures that ship inside scikit-image
    SHOT_FRAMES = 150  # frames per picture: 5 s at the 30 fps the capture thread paces it to
    FADE_FRAMES = 30  # crossfade between pictures: 1 s
    ZOOM_RANGE = (1.1, 1.5)  # magnification of the pictures; above 1 leaves room to pan
    MAX_TILT = 4.0  # degrees of slow rotation either way

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> None:
        self.size = size  # (width, height) of the frames made
        self.seed = seed
        self.name = "demo"
        self.fps = 30.0
        # Each pre-scaled to just cover `size`, and RGBA: OpenCV warps four channels about
        # twice as fast as three, and the capture thread renders one frame every 33 ms.
        self._pictures: list[np.ndarray] = []
        self._names: list[str] = []  # the sample picture each of _pictures came from
        self._order: np.ndarray = np.zeros(0, dtype=np.int64)
        self._next = 0  # number of the next frame read() returns; kept across reopen

    @property
    def is_open(self) -> bool:
        return bool(self._pictures)

    def open(self) -> None:
        if self._pictures:
            return
        try:
            import skimage.data
        except ImportError as err:
            raise SourceError(
                "the demo source needs scikit-image: pip install scikit-image"
            ) from err
        w, h = self.size
        pictures, names = [], []
        for name in self.PICTURES:
            try:
                picture = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
            except (OSError, ValueError, ImportError, AttributeError) as err:
                logger.warning(
                    "demo: sample picture %r is not available (%s); skipping it", name, err
                )
                continue
            ph, pw = picture.shape[:2]
            scale = max(w / pw, h / ph)
            cover = (max(w, round(pw * scale)), max(h, round(ph * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            scaled = cv2.resize(picture, cover, interpolation=interp)
            pictures.append(cv2.cvtColor(scaled, cv2.COLOR_RGB2RGBA))
            names.append(name)
        if not pictures:
            raise SourceError(
                "demo: none of scikit-image's sample pictures could be loaded; "
                "reinstall scikit-image"
            )
        self._pictures, self._names = pictures, names
        self._order = np.random.default_rng(self.seed).permutation(len(pictures))

    def read(self) -> np.ndarray | None:
        frame = self.frame_at(self._next)
        self._next += 1
        return frame

    def close(self) -> None:
        self._pictures = []

    def frame_at(self, i: int) -> np.ndarray:
        """Frame number i, (H, W, 3) uint8 RGB; the same i always gives the same picture."""
        if not self._pictures:
            raise SourceError("demo source is not open; call open() first")
        shot, local = divmod(i, self.SHOT_FRAMES)
        frame = self._render(shot, local)
        if local < self.FADE_FRAMES and shot > 0:
            # The previous shot is still moving through its last FADE_FRAMES frames.
            before = self._render(shot - 1, local + self.SHOT_FRAMES)
            t = (local + 1) / (self.FADE_FRAMES + 1)
            weight = t * t * (3 - 2 * t)  # smoothstep: no visible kink at either end of the fade
            frame = cv2.addWeighted(before, 1.0 - weight, frame, weight, 0.0)
        return cv2.cvtColor(frame, cv2.COLOR_RGBA2RGB)

    def picture_at(self, i: int) -> str:
        """Name of the sample picture that frame i shows (the incoming one during a fade)."""
        if not self._pictures:
            raise SourceError("demo source is not open; call open() first")
        return self._names[self._order[(i // self.SHOT_FRAMES) % len(self._order)]]

    def _render(self, shot: int, local: int) -> np.ndarray:
        """Shot `shot` at frame `local` of its SHOT_FRAMES + FADE_FRAMES frames of motion, RGBA."""
        w, h = self.size
        picture = self._pictures[self._order[shot % len(self._order)]]
        ph, pw = picture.shape[:2]
        rng = np.random.default_rng([self.seed, shot])
        zoom0, zoom1 = rng.uniform(*self.ZOOM_RANGE, size=2)
        tilt0, tilt1 = rng.uniform(-self.MAX_TILT, self.MAX_TILT, size=2)
        # Pan from one side to the other (fractions of the free room) so there is always motion.
        start = rng.uniform(0.0, 0.3, size=2)
        end = rng.uniform(0.7, 1.0, size=2)
        flip = rng.random(2) < 0.5
        start, end = np.where(flip, 1 - start, start), np.where(flip, 1 - end, end)
        u = local / (self.SHOT_FRAMES + self.FADE_FRAMES - 1)
        # Half linear, half cosine: eases in and out but never stops, so flow always has motion.
        ease = 0.5 * u + 0.25 - 0.25 * math.cos(math.pi * u)
        zoom = zoom0 + (zoom1 - zoom0) * ease
        tilt = tilt0 + (tilt1 - tilt0) * ease
        fx, fy = start + (end - start) * ease
        half_w, half_h = w / (2 * zoom), h / (2 * zoom)  # half the view, in picture pixels
        cx = half_w + fx * (pw - 2 * half_w)
        cy = half_h + fy * (ph - 2 * half_h)
        m = cv2.getRotationMatrix2D((cx, cy), tilt, zoom)  # (2, 3) picture -> frame
        m[0, 2] += w / 2 - cx
        m[1, 2] += h / 2 - cy
        # Reflection fills the corners a tilt uncovers with plausible picture, not black.
        return cv2.warpAffine(
            picture, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )


def open_source(spec: str | int, size: tuple[int, int] = DEFAULT_SIZE) -> FrameSource:
    """Recognise a --source value, build the matching source and open it.

    Args:
        spec: "demo", a camera index (int or digit string), a stream URL, or a path to an
            existing image or video file.
        size: (width, height) asked of cameras and made by the demo.

    Returns:
        An opened FrameSource.

    Raises:
        SourceError: the spec matches no form (the message lists the valid ones), or the source
            it names cannot be opened.
    """
    source = make_source(spec, size)
    source.open()
    return source


def holding_source(spec: str, size: tuple[int, int] = DEFAULT_SIZE) -> FrameSource | None:
    """The holding picture `capture.holding` names, opened: the demo or a still; None for "".

    Raises:
        SourceError: anything else, or a still that cannot be read.
    """
    if not spec.strip():
        return None
    try:
        source = make_source(spec, size)
    except SourceError as err:
        raise SourceError(f"capture.holding: {err}") from err
    if not isinstance(source, (DemoSource, ImageSource)):
        raise SourceError(
            f"capture.holding: expected demo or a still image file "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}), got {spec!r}"
        )
    source.open()
    return source


def make_source(spec: str | int, size: tuple[int, int] = DEFAULT_SIZE) -> FrameSource:
    """Like open_source but returns the source unopened."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str, Path)):
        raise SourceError(
            f"expected a source spec string or camera index, got "
            f"{type(spec).__name__} {spec!r}; valid forms: {VALID_FORMS}"
        )
    if isinstance(spec, int):
        return CameraSource(spec, size)
    text = str(spec).strip()
    if text.isdigit():
        return CameraSource(int(text), size)
    if text.lower() == "demo":
        return DemoSource(size)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return StreamSource(text)
    if scheme:
        raise SourceError(
            f"unsupported stream scheme {scheme!r} in {text!r}; supported: "
            f"{', '.join(STREAM_SCHEMES)}"
        )
    path = Path(text).expanduser()
    if not text or not path.exists():
        raise SourceError(
            f"unknown source {text!r}: not a camera index, not 'demo', not a URL, "
            f"and no such file; valid forms: {VALID_FORMS}"
        )
    if not path.is_file():
        raise SourceError(f"source {text!r} is a folder, not a file; valid forms: {VALID_FORMS}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return ImageSource(path)
    if suffix in VIDEO_SUFFIXES:
        return VideoFileSource(path)
    if cv2.haveImageReader(str(path)):
        return ImageSource(path)
    return VideoFileSource(path)  # open() says so clearly if FFmpeg cannot decode it either
