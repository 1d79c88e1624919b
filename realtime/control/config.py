"""Configuration: TOML presets in config/ and --set overrides, composed of the knob table's sections."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from realtime.control.resources import data_dir
from realtime.knobs import (
    AttractConfig,
    AudienceConfig,
    CaptureConfig,
    ControlConfig,
    DisplayConfig,
    DreamConfig,
    FeedbackConfig,
    KnobError,
    LogConfig,
    MidiConfig,
    ModelConfig,
    OscConfig,
    RecordConfig,
    TargetConfig,
    WatchdogConfig,
    sections,
    table,
)

CONFIG_DIR = data_dir("config")  # the presets: in the installed package, else the checkout


class ConfigError(ValueError):
    """A config file, key or value was refused; the message lists what is valid."""


@dataclass
class Config:
    """The whole configuration: one validated section per attribute (see realtime.knobs)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    dream: DreamConfig = field(default_factory=DreamConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    osc: OscConfig = field(default_factory=OscConfig)
    audience: AudienceConfig = field(default_factory=AudienceConfig)
    midi: MidiConfig = field(default_factory=MidiConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    attract: AttractConfig = field(default_factory=AttractConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in sections()}


def settings_table(markdown: bool = False) -> str:
    """Every config key with its range, default and effect (`installation.py settings`)."""
    headers = ("key", "range", "default", "OSC", "what it does")
    rows = []
    for k in table():
        default = str(k.default).lower() if isinstance(k.default, bool) else repr(k.default)
        osc = f"/dream/{k.live}" if k.live else ""
        valid = " | ".join(k.choices) if k.choices else k.range_text()
        rows.append([k.key, valid, default, osc, k.doc])
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in rows:
            cells = [f"`{row[0]}`", *row[1:3], f"`{row[3]}`" if row[3] else "", row[4]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [list(headers), *rows]) for i in range(len(headers) - 1)]
    return "\n".join(
        "  ".join([c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]).rstrip()
        for row in [list(headers), *rows]
    )


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


def load_config(
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    blame: typing.Mapping[str, str] | None = None,
) -> Config:
    """Read a TOML file (default: config/default.toml), then apply `section.key=value` overrides.

    A bare name such as "cpu" is taken as a preset in config/.

    Args:
        blame: override -> what the user typed for it (a flag such as "--steps 99"), named
            when it is refused; "--set OVERRIDE" otherwise.

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
        data = read_toml(path)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found; presets in config/: {', '.join(preset_names())}"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"config file {str(path)!r} could not be read ({err.strerror or err}); expected a "
            f"TOML file or a preset name: {', '.join(preset_names())}"
        ) from err
    except ValueError as err:
        raise ConfigError(f"config file {str(path)!r} {err}") from err
    for item in overrides:
        section, key, value = parse_override(item)
        # blame the command line, not the file
        build_config({section: {key: value}}, source=(blame or {}).get(item, f"--set {item}"))
        data.setdefault(section, {})[key] = value
    return build_config(data, source=str(path))


def read_toml(path: str | Path) -> dict:
    """A TOML file's tables.

    Raises:
        OSError: it cannot be read (FileNotFoundError when it is not there).
        ValueError: the reason it is not a TOML file, worded to follow the file's name: not
            UTF-8 text, not valid TOML, or nested too deeply to read.
    """
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"is not a TOML file: it is not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"is not valid TOML: {err}") from err
    except RecursionError:
        raise ValueError("is not a usable TOML file: it is nested too deeply to read") from None


def parse_override(item: str) -> tuple[str, str, object]:
    """Split "section.key=value"; the value is read as TOML (so 0.5, true, "x", [1,2]) or a plain string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(
            f"expected --set section.key=value, got {item!r}; sections: {', '.join(sections())}"
        )
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def build_config(
    data: typing.Mapping[str, typing.Mapping[str, object]], source: str = ""
) -> Config:
    """Turn parsed TOML into a Config, checking every section, key, type and range.

    Raises:
        ConfigError: naming the section, key or value and what is valid.
    """
    known = sections()
    where = f" ({source})" if source.startswith("--") else f" in {source}" if source else ""
    built = {}
    for name, values in data.items():
        if name not in known:
            raise ConfigError(
                f"unknown config section [{name}]{where}; valid sections: {', '.join(known)}"
            )
        if not isinstance(values, typing.Mapping):
            raise ConfigError(
                f"{name}{where} must be a section ([{name}] with keys), got a {type(values).__name__}"
            )
    for name, cls in known.items():
        values = dict(data.get(name, {}))
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                raise ConfigError(
                    f"unknown key {name}.{key}{where}; valid keys in [{name}]: {', '.join(valid)}"
                )
        try:
            built[name] = cls(**values)
        except KnobError as err:
            raise ConfigError(f"{err}{where}") from err
    return Config(**built)
