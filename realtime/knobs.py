"""The knob table: every setting declared once, with its type, range, unit, default and doc.

Each config section is a frozen dataclass whose fields are declared with `knob(...)`. From
these declarations come the TOML and `--set` validation (a value out of range is refused with
the range), the live parameters that OSC, keys and presets change (`live=` names them; OSC
clamps into the same range), the `osc-map` reference and the README's tables.

This module imports nothing else from the package, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, ClassVar

MODEL_NAMES = ("googlenet", "vgg16", "efficientnet_lite0")  # the dreamable networks
GRAD_NORMS = ("mean", "smooth", "laplacian", "fourier")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEVICES = ("auto", "cuda", "mps", "cpu")
MAX_SIDE = 7680  # px; 8K UHD width, the largest frame any part is asked to handle
# An offline still is dreamed once, so it can afford what a live frame cannot: `render` uses
# these in place of the preset's [dream] values unless a flag says otherwise.
RENDER_DREAM = {"steps": 8, "octaves": 4}
# ... and for a class target, what a whole object needs: many steps, octaves 1.5 apart, dreamed at
# half size so the network sees objects near the scale it knows them at (~224 px).
RENDER_TARGET = {"steps": 20, "octaves": 4, "octave_scale": 1.5, "scale": 0.5}


class KnobError(ValueError):
    """A setting's value is refused; the message names the setting and what is valid."""


def parse_size(text: object) -> tuple[int, int]:
    """ "640x360" -> (640, 360).

    Raises:
        KnobError: not WxH with both between 16 and MAX_SIDE.
    """
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = None
    if not sep or size is None or not all(16 <= s <= MAX_SIDE for s in size):
        raise KnobError(f"expected a size WxH such as 640x360 (16..{MAX_SIDE} each), got {text!r}")
    return size


# Containers a recording may use; .mkv first, as it reads back after a kill or a full disk.
VIDEO_SUFFIXES = (".mkv", ".avi", ".mp4", ".m4v", ".mov")


def check_video_path(text: str) -> None:
    """An empty path or one ending in a VIDEO_SUFFIXES suffix.

    Raises:
        KnobError: another suffix, with the valid ones.
    """
    suffix = PurePath(text).suffix.lower()
    if text and suffix not in VIDEO_SUFFIXES:
        raise KnobError(
            f"expected a video file ending in {', '.join(VIDEO_SUFFIXES)}, "
            f"got {text!r} ({suffix or 'no suffix'})"
        )


# Where --stream may send: scheme -> the example the refusal shows. A path under /dev/ is a
# v4l2loopback device (a virtual camera for OBS or Zoom).
STREAM_SCHEMES = {
    "udp": "udp://127.0.0.1:5000 (MPEG-TS)",
    "srt": "srt://HOST:9000",
    "rtsp": "rtsp://HOST:8554/dream (to an RTSP server such as MediaMTX)",
    "rtmp": "rtmp://HOST/live/dream",
}
MAX_NDI_NAME = 200  # characters; NDI's full name "MACHINE (name)" must stay one short line


def check_stream_url(text: str) -> None:
    """An empty URL, a STREAM_SCHEMES URL with a host and port, or a /dev/videoN device.

    Raises:
        KnobError: anything else, with the forms that are valid.
    """
    if not text or text.startswith("/dev/video"):
        return
    valid = ", ".join(STREAM_SCHEMES.values()) + " or a v4l2loopback device /dev/videoN"
    scheme, sep, rest = text.partition("://")
    host, _, port = rest.split("/", 1)[0].split("?", 1)[0].rpartition(":")
    if scheme == "rtmp" and sep and rest.split("/", 1)[0]:
        return  # the port is optional (1935)
    if not (sep and scheme in STREAM_SCHEMES and host and port.isdigit() and 0 < int(port) < 65536):
        raise KnobError(f"expected a stream URL such as {valid}; got {text!r}")


def check_ndi_name(text: str) -> None:
    """An empty name (no NDI output) or 1..MAX_NDI_NAME printable characters.

    Raises:
        KnobError: too long, blank or with control characters.
    """
    if text and not (len(text) <= MAX_NDI_NAME and text.isprintable() and text.strip()):
        raise KnobError(
            f"expected an NDI source name of 1..{MAX_NDI_NAME} printable characters, such as "
            f"dream; got {text!r}"
        )


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_host(text: object) -> str:
    """An address to bind: an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost.

    Raises:
        KnobError: anything else (a host name is not looked up: a typo must not bind elsewhere).
    """
    host = str(text).strip()
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise KnobError(
                f"expected an IP address to bind such as 127.0.0.1 (this machine only) or "
                f"0.0.0.0 (every interface), got {text!r}"
            ) from None
    return host


def parse_networks(entries: object) -> tuple[IPNetwork, ...]:
    """Allow-list entries as networks: "192.168.1.20" (one address), "10.0.0.0/8" (CIDR).

    Host bits are forgiven ("192.168.1.20/24" is 192.168.1.0/24), as operators write them.

    Raises:
        KnobError: an entry that is neither an IP address nor a network.
    """
    if isinstance(entries, str):
        entries = (entries,)
    networks = []
    for entry in entries:  # type: ignore[union-attr]
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise KnobError(
                f"{entry!r} is not an IP address or network; expected entries such as "
                f"192.168.1.20 or 10.0.0.0/8"
            ) from None
    return tuple(networks)


def check_host_or_empty(text: str) -> None:
    """An empty string (not set) or an address `parse_host` takes."""
    if text:
        parse_host(text)


def check_url(text: str) -> None:
    """An empty string or an http(s) address without spaces, such as http://192.168.1.10:8080/."""
    if text and not (text.startswith(("http://", "https://")) and text.isprintable()):
        raise KnobError(f"expected an address such as http://192.168.1.10:8080/, got {text!r}")
    if any(c.isspace() for c in text):
        raise KnobError(f"expected an address without spaces, got {text!r}")


def check_pin(text: str) -> None:
    """An empty string (no PIN) or 1-32 letters and digits."""
    if text and not (len(text) <= 32 and text.isascii() and text.isalnum()):
        raise KnobError(f"expected a PIN of 1-32 letters and digits (or empty: none), got {text!r}")


@dataclass(frozen=True)
class Knob:
    """One setting: what it is, what values it takes, and whether it can be played live."""

    default: Any
    lo: float | None = None  # inclusive bounds for numbers
    hi: float | None = None
    doc: str = ""
    unit: str = ""  # "px", "s", "deg", ... ("" for plain numbers and words)
    choices: tuple[str, ...] = ()  # the valid words for a choice setting
    live: str = ""  # the live parameter name (OSC /dream/<live>); "" = set at start only
    glide: bool = False  # live changes glide over `control.glide` seconds instead of jumping
    kind: str = ""  # live names that are not numbers: "layer" | "target" | "model"
    check: Callable[[Any], object] | None = None  # extra format check (raises KnobError)
    section: str = ""  # filled in by table()
    name: str = ""

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def type(self) -> type:
        """bool, int, float, str or tuple, from the default."""
        return type(self.default)

    @property
    def numeric(self) -> bool:
        return self.type in (int, float)

    def range_text(self) -> str:
        """The valid values in words, as messages and the reference tables show them."""
        if self.kind:
            return {
                "layer": "name or index",
                "target": "name, index 0-999, or none/-1",
                "model": "name",
            }[self.kind]
        if self.choices:
            return " | ".join(self.choices)
        if self.type is bool:
            return "0 or 1"
        if self.numeric and self.lo is not None and self.hi is not None:
            unit = f" {self.unit}" if self.unit else ""
            return f"{_num(self.lo)}..{_num(self.hi)}{unit}"
        return "text" if self.type is str else "list"

    def validate(self, value: object) -> object:
        """The value as stored (ints accepted where floats are wanted), or KnobError."""
        t = self.type
        what = f"{self.key}: expected "
        if t is bool:
            if not isinstance(value, bool):
                raise KnobError(f"{what}true or false, got {value!r}")
            return value
        if t in (int, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)  # before int(): int(inf) raises OverflowError
            if ok and t is int and value != int(value):
                ok = False
            if not ok:
                kind = "an integer" if t is int else "a number"
                raise KnobError(f"{what}{kind} in {self.range_text()}, got {value!r}")
            if (self.lo is not None and value < self.lo) or (
                self.hi is not None and value > self.hi
            ):
                raise KnobError(
                    f"{self.key} = {value!r} is out of range; valid: {self.range_text()}"
                )
            return t(value)
        if t is tuple:
            if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise KnobError(f"{what}a list of strings, got {value!r}")
            value = tuple(value)
        elif not isinstance(value, str):
            raise KnobError(f"{what}a string, got {type(value).__name__} {value!r}")
        if self.choices and value not in self.choices:
            valid = " | ".join(self.choices)
            raise KnobError(f"{self.key} = {value!r} is not valid; valid: {valid}")
        if self.check is not None:
            try:
                self.check(value)
            except KnobError as err:
                raise KnobError(f"{self.key}: {err}") from err
        return value

    def clamp(self, number: float) -> float | int:
        """A number forced into the range (live faders clamp where files are refused)."""
        if self.lo is not None:
            number = max(number, self.lo)
        if self.hi is not None:
            number = min(number, self.hi)
        return int(round(number)) if self.type is int else float(number)


def _num(x: float) -> str:
    return f"{x:g}"


def knob(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "", **kw: Any):
    """Declare a section field: `steps: int = knob(2, 0, 20, "gradient steps ...", live="steps")`."""
    spec = Knob(default, lo, hi, doc, **kw)
    return field(default=default, metadata={"knob": spec})


_SECTIONS: dict[str, type[Section]] = {}  # section name -> class, in declaration order


class Section:
    """Base of every config section: each field is a knob, checked on creation and on replace.

    Subclasses are frozen dataclasses declared with their section's name:
    `@dataclass(frozen=True) class DreamConfig(Section, section="dream")`.
    """

    SECTION: ClassVar[str] = ""

    def __init_subclass__(cls, section: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.SECTION = section
        _SECTIONS[section] = cls

    def __post_init__(self) -> None:
        for spec in knobs_of(type(self)):
            object.__setattr__(self, spec.name, spec.validate(getattr(self, spec.name)))


def knobs_of(cls: type[Section]) -> Iterator[Knob]:
    """The knobs of one section, in declaration order, with section and name filled in."""
    for f in dataclasses.fields(cls):
        yield dataclasses.replace(f.metadata["knob"], section=cls.SECTION, name=f.name)


def sections() -> dict[str, type[Section]]:
    """Section name -> dataclass, in the order the config file lists them."""
    return dict(_SECTIONS)


def table() -> list[Knob]:
    """Every knob of every section."""
    return [spec for cls in _SECTIONS.values() for spec in knobs_of(cls)]


def live_knobs() -> dict[str, Knob]:
    """Live parameter name -> its knob, for the knobs OSC, keys and presets may change."""
    return {spec.live: spec for spec in table() if spec.live}


# ---- the sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig(Section, section="model"):
    """Which network dreams, and towards what."""

    name: str = knob(
        "auto",
        doc="network: googlenet, vgg16 or efficientnet_lite0 (loads in the background); auto: "
        "GoogLeNet if its weights can be had, else the bundled EfficientNet-Lite0",
        choices=("auto", *MODEL_NAMES),
        live="model",
        kind="model",
    )
    layer: str = knob(
        "",
        doc="layer to dream at: a name, or an index into the model's layer list; "
        "empty: the model's classic layer",
        live="layer",
        kind="layer",
    )
    target: str = knob(
        "",
        doc="ImageNet class to dream towards (name or index); 'none', -1 or empty clears",
        live="target",
        kind="target",
    )
    weights: str = knob("", doc="weights file for an offline machine; empty: cache or download")
    live_download: bool = knob(
        True,
        doc="a live switch (OSC, keys, presets) may download missing weights; false: a switch "
        "to a model whose weights are not on disk is refused (a gallery: no download at show time)",
    )
    device: str = knob(
        "auto", doc="where the dream runs; auto: cuda, then mps, then cpu", choices=DEVICES
    )


@dataclass(frozen=True)
class CaptureConfig(Section, section="capture"):
    """Where frames come from and at what size they are dreamed."""

    source: str = knob("demo", doc="camera index (0), video or image path, stream URL, or demo")
    size: str = knob(
        "640x360", doc="frame size WxH; frames are scaled to it on capture", check=parse_size
    )
    fit: str = knob(
        "auto",
        doc="how a picture of another shape fills the frame: crop (trim the longer side), "
        "letterbox (the whole picture, black bars); auto: letterbox a still picture, crop "
        "cameras and video",
        choices=("auto", "crop", "letterbox"),
    )
    fps: float = knob(
        30.0, 1, 240, "pace of files, stills and the demo (cameras run at their own)", unit="fps"
    )
    stall_timeout: float = knob(
        2.0, 0.1, 60, "time without a frame before a live source is reopened", unit="s"
    )
    holding: str = knob(
        "",
        doc="holding picture while the source gives no frames (it is retried meanwhile, and "
        "taken back when it returns): demo, or a still image file; empty: keep the last frame, "
        "and a source that cannot be opened at start is an error",
    )
    hold_after: float = knob(
        10.0, 0.0, 3600, "time without a frame from the source before the holding picture", unit="s"
    )


@dataclass(frozen=True)
class DreamConfig(Section, section="dream"):
    """How hard and at which scales to dream."""

    steps: int = knob(
        2, 0, 20, "gradient steps per octave each frame (0 = no dreaming)", live="steps"
    )
    octaves: int = knob(2, 1, 6, "number of pyramid scales dreamed each frame", live="octaves")
    octave_scale: float = knob(1.4, 1.1, 2.0, "size ratio between octaves", live="octave_scale")
    step_size: float = knob(
        0.02, 0.0, 0.2, "gradient step, fraction of the pixel range", live="step_size", glide=True
    )
    jitter: int = knob(
        16, 0, 64, "random shift before each step (hides grid artefacts)", unit="px", live="jitter"
    )
    grad_norm: str = knob(
        "mean",
        doc="gradient conditioning: mean (divide by mean |g|), smooth (blur first: softer "
        "strokes), laplacian (equalise each Laplacian band: cleaner detail) or fourier (1/f "
        "spectrum: larger, calmer structures; class targets become recognisable)",
        choices=GRAD_NORMS,
    )
    # Lucid's decorrelated parameterisation steps with a 1/f^decay spectrum: 1 for class targets
    # (whole objects), 0.5 keeps a layer dream's faces and eyes finer (Olah et al. 2017).
    fourier_decay: float = knob(0.5, 0.0, 2.0, "spectrum slope of the fourier conditioning")
    color: bool = knob(
        False, doc="step in a decorrelated colour space (luminance mostly): no rainbow grain"
    )
    views: int = knob(
        1,
        1,
        8,
        "randomly zoomed and turned copies the network sees per step (robust shapes; "
        "each costs a step)",
    )
    view_zoom: float = knob(
        0.0,
        0.0,
        0.5,
        "views zoom by up to this much either way (0.3: 0.7..1.3); with view_turn "
        "0 and views 1, the cheaper plain roll",
    )
    view_turn: float = knob(0.0, 0.0, 30.0, "views turn by up to this either way", unit="deg")
    # Above 8 px the blur kernel grows past what any frame needs (and its memory with it).
    smooth_sigma: float = knob(
        1.0, 0.1, 8.0, "Gaussian sigma of the smooth gradient blur", unit="px"
    )
    laplacian_levels: int = knob(
        4, 1, 8, "bands for laplacian; more evens out coarser structure too"
    )
    scale: float = knob(
        1.0,
        0.25,
        1.0,
        "dream (and carry the feedback) at this fraction of the frame size; the dream's detail "
        "is added to the full-size frame (a CPU shows 640x360 dreamed at 320x180)",
    )
    octave_cycle: bool = knob(
        False,
        doc="dream one octave per frame, in turn (large structures grow through the "
        "feedback at the cost of one octave a frame)",
    )
    # The networks downsample by 32: smaller octaves leave nothing to dream on.
    min_size: int = knob(
        32, 16, 512, "octaves whose shorter side would be smaller are skipped", unit="px"
    )


@dataclass(frozen=True)
class TargetConfig(Section, section="target"):
    """How a class target is dreamed: whole objects want a calmer spectrum and several views
    (Olah et al. 2017), which a layer dream does not need. These replace the [dream] values of
    the same names while a target holds most of the objective's weight."""

    views: int = knob(2, 1, 8, "randomly zoomed and turned copies per step")
    view_zoom: float = knob(0.3, 0.0, 0.5, "views zoom by up to this much either way")
    view_turn: float = knob(10.0, 0.0, 30.0, "views turn by up to this either way", unit="deg")
    fourier_decay: float = knob(1.0, 0.0, 2.0, "spectrum slope of the fourier conditioning")
    # The cpu preset's smallest octave (96x56) drew colour where an object should grow: without
    # it the live classes scored 0.38 and 0.34 on two seeds, against 0.23 and 0.22 with it.
    min_size: int = knob(
        64,
        16,
        512,
        "octaves whose shorter side would be smaller are skipped (dream.min_size, raised)",
        unit="px",
    )
    # A whole object takes more dreaming than a texture: a bigger step, and feedback that keeps
    # it for longer. The operator's faders still act: these scale and floor their values.
    step_scale: float = knob(1.7, 1.0, 4.0, "class targets step this many times dream.step_size")
    feedback: float = knob(
        0.98, 0.0, 0.98, "feedback.amount is at least this while a class target leads"
    )

    def apply(self, dream: DreamConfig) -> DreamConfig:
        """`dream` as a class target is dreamed: the recipe's views and spectrum, a bigger step,
        no octave too small to hold an object."""
        return dataclasses.replace(
            dream,
            views=self.views,
            view_zoom=self.view_zoom,
            view_turn=self.view_turn,
            fourier_decay=self.fourier_decay,
            step_size=min(dream.step_size * self.step_scale, 0.2),
            min_size=max(dream.min_size, self.min_size),
        )

    def hold(self, feedback: FeedbackConfig) -> FeedbackConfig:
        """`feedback` while a class target leads: at least this recipe's amount."""
        return dataclasses.replace(feedback, amount=max(feedback.amount, self.feedback))


@dataclass(frozen=True)
class FeedbackConfig(Section, section="feedback"):
    """How much of the previous dreamed output each new frame keeps, and how it moves."""

    # 0.98, not 1: at 1 the camera never comes back and the picture freezes.
    amount: float = knob(
        0.6,
        0.0,
        0.98,
        "share of the previous dreamed output kept each frame",
        live="feedback",
        glide=True,
    )
    carry: str = knob(
        "detail",
        doc="what carries over: detail (the dream, output minus camera, added to the new frame: "
        "the scene never double-exposes) or frame (the whole output cross-faded: the classic "
        "infinite-zoom look)",
        choices=("detail", "frame"),
    )
    smooth: float = knob(
        0.8,
        0.0,
        0.95,
        "share of the last frames' dream change each frame's change keeps, moved "
        "along the flow: the random part of each step averages out, the hallucination does not",
        live="smooth",
        glide=True,
    )
    flow: bool = knob(True, doc="warp the feedback along the camera's optical flow", live="flow")
    flow_check: bool = knob(
        True, doc="take the camera where forward and backward flow disagree (occlusions, entries)"
    )
    # Grey thumbnails of consecutive frames correlate ~0.9+ within a shot, ~0 across a cut.
    cut_threshold: float = knob(
        0.5,
        0.0,
        1.0,
        "a new scene (feedback cleared) when consecutive frames correlate below this; 0: never",
    )
    # 160 px costs ~1 ms a frame on one CPU core (DIS ultrafast) and people's motion in a room
    # is smooth at that scale; DIS gives sub-pixel flow, so even at 640 px it stays within a pixel.
    flow_width: int = knob(160, 16, 4096, "width the optical flow is computed at", unit="px")
    # Beyond 10% per frame the picture is gone in a few frames.
    zoom: float = knob(
        1.0,
        0.9,
        1.1,
        "feedback zoom per frame (>1 zooms in: infinite zoom)",
        live="zoom",
        glide=True,
    )
    rotate: float = knob(
        0.0, -5.0, 5.0, "feedback rotation per frame", unit="deg", live="rotate", glide=True
    )


@dataclass(frozen=True)
class DisplayConfig(Section, section="display"):
    """The window and its shader."""

    fullscreen: bool = knob(False, doc="fill the chosen screen")
    screen: int = knob(0, 0, 15, "which monitor (0-based) for fullscreen")
    vsync: bool = knob(True, doc="sync buffer swaps to the display refresh (no tearing)")
    hide_cursor: bool = knob(False, doc="hide the mouse pointer over the window")
    hud: bool = knob(False, doc="show fps, layer, target and latency at start (key H toggles)")
    mix: float = knob(1.0, 0.0, 1.0, "display crossfade: 0 camera, 1 dream", live="mix", glide=True)
    brightness: float = knob(
        0.0, -1.0, 1.0, "display brightness offset", live="brightness", glide=True
    )
    contrast: float = knob(1.0, 0.0, 2.0, "display contrast gain", live="contrast", glide=True)
    saturation: float = knob(
        1.0, 0.0, 2.0, "display saturation gain", live="saturation", glide=True
    )


@dataclass(frozen=True)
class ControlConfig(Section, section="control"):
    """How live changes arrive."""

    glide: float = knob(
        0.25,
        0.0,
        10.0,
        "time continuous parameters take to reach a new value",
        unit="s",
        live="glide",
    )


@dataclass(frozen=True)
class OscConfig(Section, section="osc"):
    """The OSC control surface."""

    enabled: bool = knob(True, doc="listen for OSC at all")
    host: str = knob(
        "127.0.0.1",
        doc="IP address to bind; 0.0.0.0 exposes it to the network",
        check=parse_host,
    )
    port: int = knob(9000, 0, 65535, "UDP port to listen on (0: any free port)")
    status_to: str = knob("", doc="HOST:PORT to send status to; empty: no status out")
    status_hz: float = knob(4.0, 0.1, 60.0, "status messages per second", unit="Hz")
    allow: tuple = knob(
        (),
        doc="senders allowed to drive it: IP addresses or networks (10.0.0.0/8); empty: anyone. "
        "Not authentication: a forged source address passes",
        check=parse_networks,
    )


CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class AudienceConfig(Section, section="audience"):
    """Audience requests: a web page on the gallery network where visitors ask for a class."""

    enabled: bool = knob(False, doc="serve the request page (--audience HOST:PORT turns it on)")
    host: str = knob(
        "",
        doc="IP address the page is served on, named by the operator (this machine's address "
        "on the gallery network; 0.0.0.0: every interface); required when enabled",
        check=check_host_or_empty,
    )
    port: int = knob(8080, 0, 65535, "TCP port of the page (0: any free port)")
    url: str = knob(
        "",
        doc="the page's address as phones reach it, for the QR code (e.g. http://dream.local/ "
        "behind a proxy); empty: http://HOST:PORT/",
        check=check_url,
    )
    dwell: float = knob(
        20.0, 2.0, 600.0, "each request is dreamed this long, then the next fades in", unit="s"
    )
    per_client: float = knob(
        30.0, 0.0, 3600.0, "one request per visitor (IP address) per this long", unit="s"
    )
    queue_max: int = knob(
        10, 1, 100, "requests waiting at most; more are refused until one is done"
    )
    block: tuple = knob((), doc="class names visitors may not ask for (checked at start)")
    allow: tuple = knob(
        (), doc="if not empty, the only class names visitors may ask for (checked at start)"
    )
    pin: str = knob(
        "",
        doc="a PIN visitors must type to ask (post it in the room); empty: none",
        check=check_pin,
    )
    hud: bool = knob(
        True, doc="show the page's QR code and what is dreamed in the window (key A toggles)"
    )
    corner: str = knob("bottom-right", doc="window corner of the QR code", choices=CORNERS)


@dataclass(frozen=True)
class MidiConfig(Section, section="midi"):
    """MIDI learn: a controller's knobs drive the live parameters (needs the `midi` extra)."""

    port: str = knob(
        "",
        doc="MIDI input to open: auto (the first), or (part of) its name; empty: no MIDI",
    )
    bindings: str = knob(
        "midi-bindings.json", doc="JSON file of the learnt bindings, per device (read at start)"
    )


@dataclass(frozen=True)
class RecordConfig(Section, section="record"):
    """Recording and snapshots."""

    path: str = knob(
        "",
        doc="output video: .mkv (readable up to its last seconds after a kill, a power cut or "
        "a full disk), .avi, or .mp4 (unreadable unless closed); an existing file is never "
        "overwritten, the next free name-N is used; empty: no recording",
        check=check_video_path,
    )
    fps: float = knob(30.0, 1.0, 240.0, "frame rate written into the video", unit="fps")
    # 5 minutes: a cut loses at most the open file's unflushed tail, and an .mp4 at most this.
    segment_seconds: float = knob(
        300.0,
        0.0,
        86400.0,
        "start a new numbered file after this much video; 0: one file",
        unit="s",
    )
    # Leaves room for the log, the OS and other programs on a shared disk.
    min_free_mb: float = knob(
        500.0,
        0.0,
        1e7,
        "recording and snapshots stop (the show goes on) below this much free disk space",
        unit="MB",
    )
    snapshot_dir: str = knob("snapshots", doc="where snapshot PNGs go")
    # A 960x540 PNG is 0.7-1 MB; a stuck key or an OSC loop wrote 122 of them in 6 s (issue 11).
    snapshot_interval: float = knob(
        1.0,
        0.0,
        3600.0,
        "snapshot requests sooner than this after the last save are refused",
        unit="s",
    )
    snapshot_budget_mb: float = knob(
        1000.0,
        1.0,
        1e7,
        "no more snapshots once the snapshot PNGs in snapshot_dir take this much",
        unit="MB",
    )


@dataclass(frozen=True)
class OutputConfig(Section, section="output"):
    """The picture sent to other programs (TouchDesigner, Resolume, OBS), besides the window."""

    ndi: str = knob(
        "",
        doc="send every dreamed frame as the NDI source of this name (needs the ndi extra: "
        "pip install '.[ndi]'); empty: no NDI",
        check=check_ndi_name,
    )
    stream: str = knob(
        "",
        doc="stream the dream through ffmpeg (H.264, low latency) to udp://HOST:PORT, "
        "srt://HOST:PORT, rtsp://HOST:PORT/PATH, rtmp://HOST/APP/KEY or a v4l2loopback "
        "/dev/videoN; empty: no stream",
        check=check_stream_url,
    )
    # A server that is down, or an ffmpeg that died, is tried again this often.
    retry_seconds: float = knob(
        5.0, 0.5, 3600.0, "a failed stream is started again after this long", unit="s"
    )


@dataclass(frozen=True)
class AttractConfig(Section, section="attract"):
    """Attract mode: when nobody moves in front of the camera, the dream deepens."""

    enabled: bool = knob(False, doc="watch for an empty room at all")
    motion_threshold: float = knob(
        0.01, 0.0, 1.0, "mean absolute frame difference (0..1) below which the room is still"
    )
    idle_seconds: float = knob(
        30.0, 0.0, 86400.0, "stillness before attract mode engages", unit="s"
    )
    feedback: float = knob(0.9, 0.0, 0.98, "feedback while attracting (deeper dream)")
    zoom: float = knob(
        1.004, 0.9, 1.1, "feedback zoom per frame while attracting (slow infinite zoom)"
    )
    fade_seconds: float = knob(2.0, 0.0, 60.0, "crossfade into and out of attract mode", unit="s")


@dataclass(frozen=True)
class WatchdogConfig(Section, section="watchdog"):
    """What happens when the show stops moving."""

    # A dream pass never takes this long, even at 1080p on a CPU at 1 step; a first CUDA-graph
    # capture keeps the heartbeat going.
    dream_timeout: float = knob(
        5.0, 1.0, 600.0, "time without a dream heartbeat before the process is restarted", unit="s"
    )
    warmup_timeout: float = knob(
        180.0,
        5.0,
        3600.0,
        "time a frame may take at a dream size new to the model (start-up, a model switch, a "
        "smaller dream after GPU out-of-memory): a GPU tunes its kernels and captures graphs then",
        unit="s",
    )
    exit_grace: float = knob(
        10.0,
        1.0,
        120.0,
        "time a shutdown after a fatal error may take before a hard exit",
        unit="s",
    )


@dataclass(frozen=True)
class LogConfig(Section, section="log"):
    """Logging."""

    level: str = knob("INFO", doc="least severe level logged", choices=LOG_LEVELS)
    file: str = knob("", doc="rotating log file; empty: console only")
    stats_interval: float = knob(60.0, 1.0, 86400.0, "time between fps/latency lines", unit="s")
