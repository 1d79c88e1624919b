"""Configuration: TOML presets in config/, composed of each component's dataclass, with --set overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


class ConfigError(ValueError):
    """A config file, key or value was refused; the message lists what is valid."""


@dataclass
class ModelConfig:
    """Which network dreams, and at what."""

    name: str = "auto"  # googlenet | vgg16 | efficientnet_lite0 | auto (GoogLeNet if its weights can be had)
    layer: str = ""  # layer to dream at; "" = the model's classic middle layer
    target: str = ""  # ImageNet class name or index to dream towards; "" = none
    weights: str = ""  # path to a weights file for an offline machine; "" = torch cache / download
    device: str = "auto"  # auto | cuda | mps | cpu (auto: cuda, then mps, then cpu)


@dataclass
class CaptureConfig:
    """Where frames come from and at what size they are dreamed."""

    source: str = "demo"  # camera index ("0"), video/image path, stream URL, or "demo"
    size: str = "640x360"  # dream size WxH in pixels; frames are downscaled to it on capture
    fps: float = 30.0  # pace for files, stills and the demo (cameras run at their own rate)
    stall_timeout: float = 2.0  # seconds without a frame before a live source is reopened


@dataclass
class DisplayConfig:
    """The window and its shader."""

    fullscreen: bool = False  # fill the chosen screen
    screen: int = 0  # which monitor, 0-based, for fullscreen
    vsync: bool = True  # sync buffer swaps to the display refresh (no tearing)
    hide_cursor: bool = False  # hide the mouse pointer over the window
    hud: bool = False  # show fps/layer/target/latency at start (key H toggles)
    mix: float = 1.0  # crossfade camera (0) to dream (1)
    brightness: float = 0.0  # added to every channel, -1..1
    contrast: float = 1.0  # gain around mid-grey, 0..2
    saturation: float = 1.0  # gain away from grey, 0..2


@dataclass
class OscConfig:
    """The OSC control surface."""

    enabled: bool = True  # listen for OSC at all
    host: str = "127.0.0.1"  # address to bind; 0.0.0.0 exposes it to the network
    port: int = 9000  # UDP port to listen on
    status_to: str = ""  # HOST:PORT to send status to; "" = no status out
    status_hz: float = 4.0  # status messages per second (a few, for an OSC In CHOP)
    allow: list[str] = field(default_factory=list)  # sender IPs allowed to drive it; empty = anyone


@dataclass
class RecordConfig:
    """Recording and snapshots."""

    path: str = ""  # output video (.mp4 or .avi); "" = no recording
    fps: float = 30.0  # frame rate written into the video
    snapshot_dir: str = "snapshots"  # where snapshot PNGs go


@dataclass
class AttractConfig:
    """Attract mode: when nobody moves in front of the camera, the dream deepens."""

    enabled: bool = False  # watch for an empty room at all
    motion_threshold: float = (
        0.01  # mean absolute frame difference (0..1) below which the room is still
    )
    idle_seconds: float = 30.0  # seconds of stillness before attract mode engages
    feedback: float = 0.9  # feedback while attracting (deeper dream)
    zoom: float = 1.004  # feedback zoom per frame while attracting (slow infinite zoom)
    fade_seconds: float = 2.0  # crossfade time into and out of attract mode


@dataclass
class LogConfig:
    """Logging."""

    level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR
    file: str = ""  # rotating log file; "" = console only
    stats_interval: float = 60.0  # seconds between fps/latency lines


def _sections() -> dict[str, type]:
    """Section name -> dataclass; the dream and feedback sections are owned by their modules."""
    from realtime.engine.dream import DreamConfig
    from realtime.live.feedback import FeedbackConfig

    return {
        "model": ModelConfig,
        "capture": CaptureConfig,
        "dream": DreamConfig,
        "feedback": FeedbackConfig,
        "display": DisplayConfig,
        "osc": OscConfig,
        "record": RecordConfig,
        "attract": AttractConfig,
        "log": LogConfig,
    }


@dataclass
class Config:
    """The whole configuration: one attribute per section."""

    model: ModelConfig
    capture: CaptureConfig
    dream: typing.Any  # realtime.engine.dream.DreamConfig
    feedback: typing.Any  # realtime.live.feedback.FeedbackConfig
    display: DisplayConfig
    osc: OscConfig
    record: RecordConfig
    attract: AttractConfig
    log: LogConfig

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _sections()}


def preset_names(directory: str | Path | None = None) -> list[str]:
    """Names of the TOML presets in `directory` (default config/), as file stems."""
    return sorted(p.stem for p in Path(directory or CONFIG_DIR).glob("*.toml"))


def is_plain_name(name: object) -> bool:
    """Whether `name` is a plain preset or snapshot name: no folders, drives or dot-names."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 200
        and not any(c in name for c in "/\\:\x00")
        and not name.startswith(".")
        and ".." not in name
    )


def preset_path(name: str) -> Path:
    """The file of a named preset in config/; names only, never paths.

    Raises:
        ConfigError: the name looks like a path or no such preset exists.
    """
    if not is_plain_name(name):
        raise ConfigError(
            f"preset names are plain names, not paths; got {name!r}; "
            f"valid presets: {', '.join(preset_names())}"
        )
    stem = name[:-5] if name.endswith(".toml") else name
    path = CONFIG_DIR / f"{stem}.toml"
    if not path.is_file():
        raise ConfigError(f"no preset named {name!r}; valid presets: {', '.join(preset_names())}")
    return path


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a TOML file (default: config/default.toml), then apply `section.key=value` overrides.

    A bare name such as "cpu" is taken as a preset in config/.

    Raises:
        ConfigError: unreadable file, unknown section or key, or a bad value.
    """
    data: dict[str, dict[str, object]] = {}
    if path is None:
        path = CONFIG_DIR / "default.toml"
    path = Path(path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        path = preset_path(path.name)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found; presets in config/: {', '.join(preset_names())}"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from err
    for item in overrides:
        section, key, value = parse_override(item)
        data.setdefault(section, {})[key] = value
    return build_config(data, source=str(path))


def parse_override(item: str) -> tuple[str, str, object]:
    """Split "section.key=value"; the value is read as TOML (so 0.5, true, "x", [1,2]) or a plain string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(
            f"expected --set section.key=value, got {item!r}; sections: {', '.join(_sections())}"
        )
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def build_config(
    data: typing.Mapping[str, typing.Mapping[str, object]], source: str = ""
) -> Config:
    """Turn parsed TOML into a Config, checking every section, key and value type."""
    sections = _sections()
    where = f" in {source}" if source else ""
    built = {}
    for name in data:
        if name not in sections:
            raise ConfigError(
                f"unknown config section [{name}]{where}; valid sections: {', '.join(sections)}"
            )
    for name, cls in sections.items():
        values = dict(data.get(name, {}))
        hints = typing.get_type_hints(cls)
        valid = [f.name for f in dataclasses.fields(cls)]
        for key, value in values.items():
            if key not in valid:
                raise ConfigError(
                    f"unknown key {name}.{key}{where}; valid keys in [{name}]: {', '.join(valid)}"
                )
            values[key] = _check_type(f"{name}.{key}", value, hints[key])
        try:
            built[name] = cls(**values)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"bad value in [{name}]{where}: {err}") from err
    return Config(**built)


def _check_type(name: str, value: object, hint: object) -> object:
    """Accept `value` for a field typed `hint` (ints where floats are wanted), or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _check_type(name, value, option)
            except ConfigError:
                continue
    elif origin is list:
        if isinstance(value, list):
            (inner,) = typing.get_args(hint)
            return [_check_type(name, v, inner) for v in value]
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif (
        isinstance(hint, type)
        and isinstance(value, hint)
        and not (hint is int and isinstance(value, bool))
    ):
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")


def live_values(cfg: Config) -> dict[str, object]:
    """The starting values of the live parameters (realtime.control.params) taken from a Config."""
    values: dict[str, object] = {
        "steps": cfg.dream.steps,
        "octaves": cfg.dream.octaves,
        "octave_scale": cfg.dream.octave_scale,
        "step_size": cfg.dream.step_size,
        "jitter": cfg.dream.jitter,
        "feedback": cfg.feedback.amount,
        "flow": cfg.feedback.flow,
        "zoom": cfg.feedback.zoom,
        "rotate": cfg.feedback.rotate,
        "mix": cfg.display.mix,
        "brightness": cfg.display.brightness,
        "contrast": cfg.display.contrast,
        "saturation": cfg.display.saturation,
    }
    if cfg.model.layer:
        values["layer"] = cfg.model.layer
    if cfg.model.target:
        values["target"] = cfg.model.target
    return values


def parse_size(text: str) -> tuple[int, int]:
    """ "640x360" -> (640, 360).

    Raises:
        ConfigError: not WxH with both between 16 and 7680.
    """
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = None
    if not sep or size is None or not all(16 <= s <= 7680 for s in size):
        raise ConfigError(f"expected a size WxH such as 640x360 (16..7680 each), got {text!r}")
    return size
