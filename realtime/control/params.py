"""The live parameters: one validated, clamped, thread-safe store that OSC, keys and presets write.

Writers (the OSC thread, the window's key handlers, preset loading) call
`LiveParams.set`; the dream loop takes one consistent `Snapshot` per frame and
the display takes one per draw. Continuous parameters glide to a new value
over `glide` seconds instead of jumping, so a fader move never pops.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

from realtime.engine.classes import ClassLookupError, class_names, resolve_class


class ParamError(ValueError):
    """A parameter name or value was refused; the message says what is valid."""


@dataclass(frozen=True)
class ParamSpec:
    """How one live parameter is validated, and what it does (this table is the OSC reference)."""

    name: str
    kind: str  # "float" | "int" | "bool" | "layer" | "target" | "model"
    default: object
    lo: float | None = None  # lower clamp for numbers
    hi: float | None = None  # upper clamp for numbers
    glide: bool = False  # glides to new values instead of jumping
    doc: str = ""

    @property
    def range_text(self) -> str:
        if self.kind in ("float", "int"):
            return f"{self.lo:g}..{self.hi:g}"
        return {
            "bool": "0 or 1",
            "layer": "name or index",
            "target": "name, index 0-999, or none/-1",
            "model": "name",
        }[self.kind]


_SPECS = (
    ParamSpec(
        "layer",
        "layer",
        None,
        doc="layer to dream at: a name, or an index into the model's layer list",
    ),
    ParamSpec("target", "target", None, doc="ImageNet class to dream towards; 'none' or -1 clears"),
    ParamSpec(
        "model",
        "model",
        None,
        doc="network: googlenet, vgg16 or efficientnet_lite0 (loads in the background)",
    ),
    ParamSpec(
        "steps", "int", 2, 0, 20, doc="gradient steps per octave each frame (0 = no dreaming)"
    ),
    ParamSpec("octaves", "int", 2, 1, 6, doc="number of pyramid scales dreamed each frame"),
    ParamSpec("octave_scale", "float", 1.4, 1.1, 2.0, doc="size ratio between octaves"),
    ParamSpec(
        "step_size", "float", 0.02, 0.0, 0.2, True, "gradient step, fraction of the pixel range"
    ),
    ParamSpec(
        "jitter",
        "int",
        16,
        0,
        64,
        doc="random shift in pixels before each step (hides grid artefacts)",
    ),
    ParamSpec(
        "feedback",
        "float",
        0.6,
        0.0,
        0.98,
        True,
        "share of the previous dreamed output kept each frame",
    ),
    ParamSpec("flow", "bool", True, doc="warp the feedback along the camera's optical flow"),
    ParamSpec(
        "zoom", "float", 1.0, 0.9, 1.1, True, "feedback zoom per frame (>1 zooms in: infinite zoom)"
    ),
    ParamSpec("rotate", "float", 0.0, -5.0, 5.0, True, "feedback rotation in degrees per frame"),
    ParamSpec("mix", "float", 1.0, 0.0, 1.0, True, "display crossfade: 0 camera, 1 dream"),
    ParamSpec("brightness", "float", 0.0, -1.0, 1.0, True, "display brightness offset"),
    ParamSpec("contrast", "float", 1.0, 0.0, 2.0, True, "display contrast gain"),
    ParamSpec("saturation", "float", 1.0, 0.0, 2.0, True, "display saturation gain"),
    ParamSpec(
        "glide",
        "float",
        0.25,
        0.0,
        10.0,
        doc="seconds continuous parameters take to reach a new value",
    ),
    ParamSpec("paused", "bool", False, doc="freeze the dream (the display keeps the last output)"),
)
SPECS: dict[str, ParamSpec] = {s.name: s for s in _SPECS}


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of every live parameter, taken once per frame."""

    layer: str
    layer_index: int
    target: int | None  # ImageNet class index, None for no class target
    target_name: str  # "none" when no target
    model: str
    steps: int
    octaves: int
    octave_scale: float
    step_size: float
    jitter: int
    feedback: float
    flow: bool
    zoom: float
    rotate: float
    mix: float
    brightness: float
    contrast: float
    saturation: float
    glide: float
    paused: bool
    reset_count: int  # bumps on each reset request; the loop clears feedback when it changes
    snapshot_count: int  # bumps on each snapshot request; the recorder side saves a PNG
    version: int  # bumps on every change


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class _Glide:
    """A value moving from `start` to `end` between t0 and t0 + duration."""

    __slots__ = ("start", "end", "t0", "duration")

    def __init__(self, value: float) -> None:
        self.start = self.end = value
        self.t0 = 0.0
        self.duration = 0.0

    def at(self, now: float) -> float:
        if self.duration <= 0.0 or now >= self.t0 + self.duration:
            return self.end
        return self.start + (self.end - self.start) * _smoothstep((now - self.t0) / self.duration)

    def go(self, value: float, now: float, duration: float) -> None:
        self.start = self.at(now)
        self.end = value
        self.t0 = now
        self.duration = duration


class LiveParams:
    """Thread-safe store of the live parameters; any thread may call any method."""

    def __init__(
        self,
        layers: Sequence[str],
        models: Sequence[str],
        model: str,
        initial: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        layers: the current model's dreamable layers, shallow to deep.
        models: the model names that may be switched to.
        model: the current model's name.
        initial: starting values by parameter name (validated like `set`).
        clock: seconds, monotonic; tests pass a fake one.
        """
        # Guards every field below: values, glides, counters and the layer list.
        self._lock = threading.Lock()
        self._clock = clock
        self._layers = tuple(layers)
        self._models = tuple(models)
        self._values: dict[str, object] = {s.name: s.default for s in _SPECS}
        self._values["model"] = model
        self._values["layer"] = self._layers[len(self._layers) // 2]
        self._glides = {s.name: _Glide(float(s.default)) for s in _SPECS if s.glide}
        self._pending_layer: str | None = None  # asked for with a model switch, applied on load
        self._reset_count = 0
        self._snapshot_count = 0
        self._version = 0
        if initial:
            self.update(initial, glide=False)

    # --- writing -------------------------------------------------------------------------

    def set(self, name: str, value: object, glide: bool = True) -> object:
        """Validate, clamp and store one parameter.

        Args:
            name: a name from SPECS.
            value: a number, bool or string; integer and choice parameters also
                take floats (TouchDesigner sends every channel as a float).
            glide: continuous parameters glide there over `glide` seconds;
                False jumps at once.

        Returns:
            The value as stored (after clamping and name resolution).

        Raises:
            ParamError: unknown name or unusable value; nothing is changed.
        """
        spec = SPECS.get(name)
        if spec is None:
            raise ParamError(f"unknown parameter {name!r}; valid parameters: {', '.join(SPECS)}")
        with self._lock:
            stored = self._coerce(spec, value)
            self._values[name] = stored
            if spec.glide:
                seconds = float(self._values["glide"]) if glide else 0.0
                self._glides[name].go(float(stored), self._clock(), seconds)
            self._version += 1
            return stored

    def update(self, values: Mapping[str, object], glide: bool = True) -> dict[str, object]:
        """Set several parameters at once (a preset); all are checked before any is stored.

        Raises:
            ParamError: listing every refused entry; nothing is changed.
        """
        values = dict(values)
        with self._lock:
            switching = (
                "model" in values and str(values["model"]).strip().lower() != self._values["model"]
            )
        if switching and "layer" in values:
            # The new model's layers are unknown until it loads: keep the layer for set_layers.
            with self._lock:
                self._pending_layer = str(values.pop("layer"))
        errors = []
        for name, value in values.items():
            spec = SPECS.get(name)
            if spec is None:
                errors.append(f"unknown parameter {name!r}")
                continue
            try:
                with self._lock:
                    self._coerce(spec, value)
            except ParamError as err:
                errors.append(str(err))
        if errors:
            raise ParamError("; ".join(errors) + f" (valid parameters: {', '.join(SPECS)})")
        # Layer before model would be checked against the old model's layers: callers that
        # switch models call set_layers first, then update.
        return {name: self.set(name, value, glide) for name, value in values.items()}

    def set_layers(self, layers: Sequence[str], model: str) -> None:
        """Switch to a new model's layer list, keeping the layer if the new model has it.

        Otherwise the layer at the same relative depth is chosen.
        """
        with self._lock:
            old, layer = self._layers, str(self._values["layer"])
            self._layers = tuple(layers)
            self._values["model"] = model
            pending, self._pending_layer = self._pending_layer, None
            if pending in self._layers:
                self._values["layer"] = pending
            elif layer not in self._layers:
                depth = old.index(layer) / max(len(old) - 1, 1) if layer in old else 0.5
                self._values["layer"] = self._layers[round(depth * (len(self._layers) - 1))]
            self._version += 1

    def step_layer(self, delta: int) -> str:
        """Move to the next (+1) or previous (-1) layer, wrapping; returns its name."""
        with self._lock:
            i = self._layers.index(str(self._values["layer"]))
            self._values["layer"] = self._layers[(i + delta) % len(self._layers)]
            self._version += 1
            return str(self._values["layer"])

    def toggle_pause(self) -> bool:
        """Flip pause; returns the new state."""
        with self._lock:
            self._values["paused"] = not self._values["paused"]
            self._version += 1
            return bool(self._values["paused"])

    def request_reset(self) -> None:
        """Ask the loop to clear the feedback (takes effect at the next frame)."""
        with self._lock:
            self._reset_count += 1
            self._version += 1

    def request_snapshot(self) -> None:
        """Ask for a PNG of the next output (saved by the snapshot callback)."""
        with self._lock:
            self._snapshot_count += 1
            self._version += 1

    # --- reading -------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[str, ...]:
        with self._lock:
            return self._layers

    @property
    def models(self) -> tuple[str, ...]:
        return self._models

    def get(self, name: str) -> object:
        """The stored value (a glide's end point, not the value on the way)."""
        if name not in SPECS:
            raise ParamError(f"unknown parameter {name!r}; valid parameters: {', '.join(SPECS)}")
        with self._lock:
            return self._values[name]

    def snapshot(self) -> Snapshot:
        """One consistent view of everything, with glides evaluated at this moment."""
        with self._lock:
            now = self._clock()
            v = dict(self._values)
            for name, g in self._glides.items():
                v[name] = g.at(now)
            target = v["target"]
            return Snapshot(
                layer=str(v["layer"]),
                layer_index=self._layers.index(str(v["layer"])),
                target=target,
                target_name="none" if target is None else class_names()[target],
                reset_count=self._reset_count,
                snapshot_count=self._snapshot_count,
                version=self._version,
                **{
                    f.name: v[f.name]
                    for f in fields(Snapshot)
                    if f.name in v and f.name not in ("layer", "target")
                },
            )

    def state(self) -> dict[str, object]:
        """Every stored value as plain floats, ints and strings (for status, sync and presets)."""
        snap = self.snapshot()
        with self._lock:
            out: dict[str, object] = {}
            for spec in _SPECS:
                value = self._values[spec.name]
                if spec.kind == "target":
                    value = "none" if value is None else class_names()[value]
                elif spec.kind == "bool":
                    value = int(bool(value))
                out[spec.name] = value
            out["layer_index"] = snap.layer_index
            out["target_index"] = -1 if snap.target is None else snap.target
            return out

    # --- validation (called with the lock held) -------------------------------------------

    def _coerce(self, spec: ParamSpec, value: object) -> object:
        if spec.kind == "layer":
            return self._coerce_layer(value)
        if spec.kind == "target":
            return self._coerce_target(value)
        if spec.kind == "model":
            name = str(value).strip().lower()
            if name not in self._models:
                raise ParamError(
                    f"unknown model {value!r}; valid models: {', '.join(self._models)}"
                )
            return name
        if spec.kind == "bool":
            if isinstance(value, str):
                word = value.strip().lower()
                if word in ("1", "true", "on", "yes"):
                    return True
                if word in ("0", "false", "off", "no"):
                    return False
                raise ParamError(f"{spec.name}: expected 0/1, true/false or on/off, got {value!r}")
            number = _number(spec, value)
            return number >= 0.5
        number = _number(spec, value)
        number = min(max(number, float(spec.lo)), float(spec.hi))
        return int(round(number)) if spec.kind == "int" else number

    def _coerce_layer(self, value: object) -> str:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = float(text)
            except ValueError:
                for name in self._layers:
                    if name.lower() == text.lower():
                        return name
                raise ParamError(
                    f"unknown layer {text!r} for {self._values['model']}; valid layers: "
                    f"{', '.join(self._layers)} (or an index 0-{len(self._layers) - 1})"
                ) from None
        index = int(round(_number(SPECS["layer"], value)))
        return self._layers[min(max(index, 0), len(self._layers) - 1)]

    def _coerce_target(self, value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off", "clear"):
            return None
        if not isinstance(value, str):
            number = _number(SPECS["target"], value)
            if number < 0:
                return None
            value = min(int(round(number)), len(class_names()) - 1)
        try:
            return resolve_class(value)
        except ClassLookupError as err:
            raise ParamError(f"target: {err}") from err


def _number(spec: ParamSpec, value: object) -> float:
    """A finite float from an int, float, bool or numeric string."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ParamError(
                f"{spec.name}: expected a number ({spec.range_text}), got {value!r}"
            ) from None
    if not isinstance(value, (int, float)):  # numpy scalars are numbers.Real but not these
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ParamError(
                f"{spec.name}: expected a number ({spec.range_text}), got {type(value).__name__}"
            ) from None
    number = float(value)
    if not math.isfinite(number):
        raise ParamError(
            f"{spec.name}: expected a finite number ({spec.range_text}), got {value!r}"
        )
    return number
