"""Presets and snapshots: named TOML presets applied live, and PNGs that carry their parameters."""

from __future__ import annotations

import json
import logging
import struct
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from realtime.control import config
from realtime.control.atomic import write_atomically
from realtime.control.config import preset_names
from realtime.control.params import KNOBS, NAMES, LiveParams, ParamError

logger = logging.getLogger(__name__)

SNAPSHOT_KEY = "dream-params"  # PNG tEXt keyword whose text is the parameters as JSON
TMP_SUFFIX = ".tmp"  # a snapshot being written: dream-...png.tmp, renamed when complete
# Recorded in a snapshot but not restored from it: derived from layer/target, or they would
# freeze the show when a snapshot taken while paused is loaded.
NOT_RESTORED = frozenset({"layer_index", "target_index", "paused"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the fixed 12-byte last chunk of every PNG


class PresetError(ValueError):
    """A preset or snapshot could not be found, read or applied; the message says what is valid."""


# --- names -------------------------------------------------------------------------------


def snapshot_names(directory: str | Path) -> list[str]:
    """Names of the snapshot PNGs in `directory` (file stems)."""
    return sorted(p.stem for p in Path(directory).glob("*.png"))


# --- TOML presets ------------------------------------------------------------------------


def preset_values(path: str | Path) -> dict[str, object]:
    """The live values a TOML file sets: only the keys it names, so a small file changes little.

    `model.name` (unless "auto") switches the model; `model.target = ""` clears the
    target; `model.layer = ""` leaves the layer as it is.

    Raises:
        PresetError: unreadable file, bad TOML, or a section, key or value the config refuses.
    """
    path = Path(path)
    try:
        raw = config.read_toml(path)
    except OSError as err:
        raise PresetError(f"preset {path.name!r} could not be read: {err}") from err
    except ValueError as err:
        raise PresetError(f"preset {path.name!r} {err}") from err
    try:
        cfg = config.build_config(raw, source=path.name)
    except config.ConfigError as err:
        raise PresetError(f"preset {path.name!r} refused: {err}") from err
    out: dict[str, object] = {}
    for name, spec in KNOBS.items():
        if spec.name not in raw.get(spec.section, {}):
            continue
        value = getattr(getattr(cfg, spec.section), spec.name)
        if spec.kind == "layer" and value == "":
            continue  # "" keeps the layer that is playing
        if spec.kind == "model" and value == "auto":
            continue  # auto is a start-up choice, not a switch
        out[name] = None if spec.kind == "target" and value == "" else value
    return out


def load_preset(
    name: str,
    params: LiveParams,
    directory: str | Path | None = None,
    snapshot_dir: str | Path | None = None,
    glide: bool = True,
    values: dict[str, object] | None = None,
) -> dict[str, object]:
    """Apply a named preset: config/<name>.toml, or else <snapshot_dir>/<name>.png.

    Args:
        name: a plain name such as "cpu" or "dream-20250101-120000" (".toml"/".png" optional);
            never a path.
        params: the live parameters to change.
        directory: where TOML presets live (default config/).
        snapshot_dir: where snapshot PNGs live; None looks for TOML presets only.
        glide: continuous parameters glide to the new values (False: jump).
        values: what `preset_named` returned for this name (not read again).

    Returns:
        The values as stored.

    Raises:
        PresetError: a path-like or unknown name (listing the valid ones), an unreadable
            file, or values the parameters refuse (then nothing changes).
    """
    if values is None:
        values = preset_named(name, directory, snapshot_dir)
    try:
        applied = params.update(values, glide=glide, strict=True)
    except ParamError as err:
        raise PresetError(f"preset {name!r} not applied: {err}") from err
    logger.debug("preset %s applied: %s", name, ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def preset_named(
    name: str, directory: str | Path | None = None, snapshot_dir: str | Path | None = None
) -> dict[str, object]:
    """The values a named preset sets (see load_preset), read once and then from a cache
    until its file changes.

    Raises:
        PresetError: a path-like or unknown name (listing the valid ones), or an unreadable file.
    """
    directory = Path(directory or config.CONFIG_DIR)

    def listing() -> str:  # only for a refusal: weeks of snapshots make a long folder to read
        valid = preset_names(directory) + (snapshot_names(snapshot_dir) if snapshot_dir else [])
        return f"valid presets: {', '.join(valid) or '(none found)'}"

    if not config.is_plain_name(name):
        raise PresetError(f"preset names are plain names, not paths; got {name!r}; {listing()}")
    stem = name.removesuffix(".toml").removesuffix(".png")
    toml_path = directory / f"{stem}.toml"
    png_path = Path(snapshot_dir) / f"{stem}.png" if snapshot_dir else None
    if toml_path.is_file() and not name.endswith(".png"):
        values = _cached(preset_values, toml_path)
    elif png_path is not None and png_path.is_file():
        values = _cached(snapshot_values, png_path)
    else:
        raise PresetError(f"no preset named {name!r}; {listing()}")
    return values


# Preset and snapshot files read lately, by path: (size, modification time, values or refusal).
# A preset sent again (a button, a flood) is not read and parsed again until its file changes.
_READ: dict[Path, tuple[tuple[int, int], dict[str, object] | PresetError]] = {}
_MAX_READ = 64


def _cached(read, path: Path) -> dict[str, object]:
    """`read(path)`, or what it gave last time if the file has not changed since."""
    try:
        stat = path.stat()
    except OSError as err:
        raise PresetError(f"preset {path.name!r} could not be read: {err}") from err
    key = (stat.st_size, stat.st_mtime_ns)
    hit = _READ.get(path)
    if hit is None or hit[0] != key:
        try:
            result: dict[str, object] | PresetError = read(path)
        except PresetError as err:
            result = err
        if len(_READ) >= _MAX_READ:
            _READ.clear()
        _READ[path] = hit = (key, result)
    if isinstance(hit[1], PresetError):
        raise PresetError(str(hit[1]))
    return dict(hit[1])


# --- snapshots ---------------------------------------------------------------------------


def _text_chunk(key: str, text: str) -> bytes:
    """A PNG tEXt chunk (Latin-1 keyword, NUL, Latin-1 text) with its CRC."""
    body = b"tEXt" + key.encode("latin-1") + b"\x00" + text.encode("latin-1")
    return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):  # numpy scalars: store the plain Python number
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_snapshot(
    image: np.ndarray, params_state: Mapping[str, object], directory: str | Path
) -> Path:
    """Write a PNG whose tEXt chunk SNAPSHOT_KEY holds `params_state` as JSON.

    Args:
        image: (H, W, 3) uint8 RGB.
        params_state: the parameters that made it (LiveParams.state()).
        directory: created if missing; the file is dream-YYYYmmdd-HHMMSS[-N].png.

    Returns:
        The path written (complete: written to a temporary name, then renamed).

    Raises:
        PresetError: a wrong image, unserialisable parameters, or the file could not be written.
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
        raise PresetError(
            f"expected an (H, W, 3) RGB image, got {getattr(image, 'shape', image)!r}"
        )
    if image.dtype != np.uint8:
        raise PresetError(f"expected a uint8 image, got {image.dtype}")
    try:
        text = json.dumps(dict(params_state), sort_keys=True, default=_jsonable)  # ASCII: fits tEXt
    except TypeError as err:
        raise PresetError(f"snapshot parameters are not plain values: {err}") from err
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    png = encoded.tobytes() if ok else b""
    if not png.endswith(_IEND):
        raise PresetError("OpenCV could not encode the snapshot as PNG")
    png = png[: -len(_IEND)] + _text_chunk(SNAPSHOT_KEY, text) + _IEND
    directory = Path(directory)
    stem = time.strftime("dream-%Y%m%d-%H%M%S")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path, n = directory / f"{stem}.png", 1
        while path.exists():
            n += 1
            path = directory / f"{stem}-{n}.png"
        # A full disk leaves a partial file: never kept; a crash's leftover the saver clears.
        write_atomically(path, png, tmp=path.with_name(path.name + TMP_SUFFIX))
    except OSError as err:
        raise PresetError(f"snapshot could not be written to {directory}: {err}") from err
    return path


def read_snapshot_params(path: str | Path) -> dict[str, object]:
    """The parameters stored in a snapshot PNG by save_snapshot.

    Raises:
        PresetError: not a readable PNG, a corrupt chunk, or no SNAPSHOT_KEY metadata.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PresetError(f"snapshot {str(path)!r} could not be read: {err}") from err
    if not data.startswith(_PNG_SIGNATURE):
        raise PresetError(f"{str(path)!r} is not a PNG file")
    i = len(_PNG_SIGNATURE)
    while i + 12 <= len(data):  # each chunk: length, type, body, CRC (12 bytes + body)
        length, kind = struct.unpack_from(">I4s", data, i)
        body = data[i + 8 : i + 8 + length]
        if len(body) != length or i + 12 + length > len(data):
            break
        if kind == b"tEXt" and body.split(b"\x00", 1)[0] == SNAPSHOT_KEY.encode():
            (crc,) = struct.unpack_from(">I", data, i + 8 + length)
            if zlib.crc32(kind + body) != crc:
                raise PresetError(f"{str(path)!r}: the {SNAPSHOT_KEY!r} chunk is corrupt (bad CRC)")
            try:
                params = json.loads(body.split(b"\x00", 1)[1].decode("latin-1"))
            except ValueError as err:
                raise PresetError(f"{str(path)!r}: {SNAPSHOT_KEY!r} is not JSON: {err}") from err
            except RecursionError:
                raise PresetError(
                    f"{str(path)!r}: {SNAPSHOT_KEY!r} is nested too deeply to be parameters"
                ) from None
            if not isinstance(params, dict):
                raise PresetError(f"{str(path)!r}: {SNAPSHOT_KEY!r} is not a JSON object")
            return params
        if kind == b"IEND":
            break
        i += 12 + length
    raise PresetError(
        f"{str(path)!r} holds no {SNAPSHOT_KEY!r} metadata; only PNGs saved by a snapshot "
        f"request (/dream/snapshot or the snapshot key) carry their parameters"
    )


def snapshot_values(path: str | Path) -> dict[str, object]:
    """The restorable live values of a snapshot PNG (everything but NOT_RESTORED)."""
    return {
        name: value
        for name, value in read_snapshot_params(path).items()
        if name in NAMES and name not in NOT_RESTORED
    }


def apply_snapshot(path: str | Path, params: LiveParams, glide: bool = True) -> dict[str, object]:
    """Restore the parameters a snapshot PNG was made with (any path; for the command line).

    Raises:
        PresetError: unreadable snapshot, or values the parameters refuse (nothing changes).
    """
    try:
        return params.update(snapshot_values(path), glide=glide, strict=True)
    except ParamError as err:
        raise PresetError(f"snapshot {Path(path).name!r} not applied: {err}") from err
