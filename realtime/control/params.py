"""The live parameters: one validated, clamped, thread-safe store that OSC, keys and presets write.

Writers (the OSC thread, the window's key handlers, preset loading) call `LiveParams.set`; the
dream loop takes one consistent `Snapshot` per frame and the display takes one per draw. The
parameters are the knobs of realtime.knobs that carry a `live` name, plus `paused`; numbers are
clamped into their knob's range (a fader overshooting is normal) except where `strict` asks
for a refusal (a preset file or snapshot). Continuous parameters glide to a new value over
`glide` seconds instead of jumping, so a fader move never pops.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from realtime.control.config import Config
from realtime.engine.classes import ClassLookupError, class_names, resolve_class
from realtime.engine.models import offline_refusal
from realtime.knobs import (
    ControlConfig,
    DisplayConfig,
    DreamConfig,
    FeedbackConfig,
    Knob,
    TargetConfig,
    live_knobs,
)

KNOBS: dict[str, Knob] = live_knobs()  # live name -> knob
# Every live parameter name, for messages and the OSC map: the knobs, and pause.
NAMES: tuple[str, ...] = (*KNOBS, "paused")
CLEAR_WORDS = ("", "none", "off", "clear")  # a target set to one of these is cleared


class ParamError(ValueError):
    """A parameter name or value was refused; the message says what is valid."""


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of every live parameter, taken once per frame.

    The sections hold the live values (glides evaluated at the moment of the snapshot) on top
    of the configuration's other settings, so each part reads its own section as it is.
    """

    dream: DreamConfig  # this frame's dream: with the [target] recipe while a class target leads
    feedback: FeedbackConfig
    display: DisplayConfig
    layer: str
    layer_index: int
    target: int | None  # ImageNet class index, None for no class target
    target_name: str  # "none" when no target
    # What the dream maximises this frame: class index -> weight, and the layer term's weight.
    # Steady, a target is ((target, 1.0),) with layer weight 0, no target () with 1; while a
    # target switch glides, the old and the new share the weight.
    targets: tuple[tuple[int, float], ...]
    layer_weight: float
    model: str
    glide: float  # seconds
    paused: bool
    reset_count: int  # bumps on each reset request; the loop clears feedback when it changes
    snapshot_count: int  # bumps on each snapshot request; the snapshot callback saves a PNG
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
        base: Mapping[str, object] | None = None,
        missing: Callable[[str], str | None] | None = None,
    ) -> None:
        """Args:
        layers: the current model's dreamable layers, shallow to deep.
        models: the model names that may be switched to.
        model: the current model's name (the one dreaming).
        initial: starting values by parameter name (validated like `update(strict=True)`).
        clock: seconds, monotonic; tests pass a fake one.
        base: the configuration's sections by name ("dream", "feedback", "display"), whose
            settings that are not live the snapshots carry; defaults where not given.
        missing: says why a model cannot be switched to now (models.offline_refusal, when
            downloads are off), or None when it can; None: every model can.
        """
        base = dict(base or {})
        self._base = {
            "dream": base.get("dream") or DreamConfig(),
            "feedback": base.get("feedback") or FeedbackConfig(),
            "display": base.get("display") or DisplayConfig(),
            "control": base.get("control") or ControlConfig(),
        }
        self._target_recipe = base.get("target") or TargetConfig()
        # Guards every field below: values, glides, counters and the layer list.
        self._lock = threading.Lock()
        self._clock = clock
        self._layers = tuple(layers)
        self._models = tuple(models)
        self._values: dict[str, object] = {}
        for name, spec in KNOBS.items():
            section = self._base.get(spec.section)
            self._values[name] = getattr(section, spec.name) if section else spec.default
        self._missing = missing
        self._values["model"] = model  # the model asked for; it may still be loading
        self._dreaming = model  # the model whose layers these are: the one dreaming
        self._values["layer"] = self._layers[len(self._layers) // 2]
        self._values["target"] = None
        self._values["paused"] = False
        self._glides = {
            name: _Glide(float(self._values[name])) for name, spec in KNOBS.items() if spec.glide
        }
        self._pending_layer: str | None = None  # asked for with a model switch, applied on load
        self._target_from: int | None = None  # the target a switch glides away from
        # A visitor's class (audience requests), dreamed instead of the operator's target,
        # which stays stored and comes back when this is None.
        self._override: int | None = None
        self._target_glide = _Glide(1.0)  # 0 -> 1 over a switch: the new target's share
        self._reset_count = 0
        self._snapshot_count = 0
        self._version = 0
        # The last snapshot and the version it was made at: every change bumps the version, so
        # while nothing glides the same version gives the same (frozen) snapshot, and several
        # readers ask for one each frame.
        self._cached: tuple[int, Snapshot] | None = None
        if initial:
            self.update(initial, glide=False, strict=True)

    @classmethod
    def from_config(
        cls, cfg: Config, layers: Sequence[str], models: Sequence[str], model: str
    ) -> LiveParams:
        """The live parameters a configuration starts with, for a loaded model. With
        `model.live_download` off, a switch to a model whose weights are not on disk is refused.

        Raises:
            ParamError: the configured layer or target does not exist (the message lists
                what does).
        """
        initial: dict[str, object] = {}
        if cfg.model.layer:
            initial["layer"] = cfg.model.layer
        if cfg.model.target:
            initial["target"] = cfg.model.target
        sections = ("dream", "feedback", "display", "control", "target")
        base = {name: getattr(cfg, name) for name in sections}
        missing = None
        if not cfg.model.live_download:
            weights = {model: cfg.model.weights} if cfg.model.weights else {}  # the start model's
            missing = lambda name: offline_refusal(name, weights.get(name))  # noqa: E731
        return cls(layers, models, model, initial, base=base, missing=missing)

    # --- writing -------------------------------------------------------------------------

    def set(self, name: str, value: object, glide: bool = True, strict: bool = False) -> object:
        """Validate, clamp and store one parameter.

        Args:
            name: a name from NAMES.
            value: a number, bool or string; integer and choice parameters also take floats
                (TouchDesigner sends every channel as a float).
            glide: continuous parameters glide there over `glide` seconds; False jumps at once.
            strict: refuse a number out of range instead of clamping it.

        Returns:
            The value as stored (after clamping and name resolution).

        Raises:
            ParamError: unknown name or unusable value; nothing is changed.
        """
        stored = self._resolve(name, value, strict)
        with self._lock:
            self._store(name, stored, glide)
            return stored

    def update(
        self, values: Mapping[str, object], glide: bool = True, strict: bool = False
    ) -> dict[str, object]:
        """Set several parameters at once (a preset); all are checked before any is stored.

        Raises:
            ParamError: listing every refused entry; nothing is changed.
        """
        values = dict(values)
        with self._lock:
            switching = (
                "model" in values and str(values["model"]).strip().lower() != self._values["model"]
            )
        pending = None
        if switching and "layer" in values:
            # The new model's layers are unknown until it loads: keep the layer for set_layers.
            pending = str(values.pop("layer"))
        resolved, errors = {}, []
        for name, value in values.items():
            try:
                resolved[name] = self._resolve(name, value, strict)
            except ParamError as err:
                errors.append(str(err))
        if errors:
            # each message says what is valid for its own entry (an unknown name lists NAMES)
            raise ParamError("; ".join(errors))
        # Layer before model would be checked against the old model's layers: callers that
        # switch models call set_layers first, then update.
        with self._lock:
            if pending is not None:
                self._pending_layer = pending
            for name, stored in resolved.items():
                self._store(name, stored, glide)
        return resolved

    def set_layers(self, layers: Sequence[str], model: str) -> None:
        """`model` dreams from now on: its layer list, keeping the layer if it has it.

        Otherwise the layer at the same relative depth is chosen. The model asked for is left
        as it is: a newer request than `model` is still to be loaded.
        """
        with self._lock:
            old, layer = self._layers, str(self._values["layer"])
            self._layers = tuple(layers)
            self._dreaming = model
            pending, self._pending_layer = self._pending_layer, None
            if pending in self._layers:
                self._values["layer"] = pending
            elif layer not in self._layers:
                depth = old.index(layer) / max(len(old) - 1, 1) if layer in old else 0.5
                self._values["layer"] = self._layers[round(depth * (len(self._layers) - 1))]
            self._version += 1

    def refuse_model(self, model: str) -> None:
        """`model` could not be loaded: if it is still the one asked for, ask for the one
        dreaming again (a newer request stands)."""
        with self._lock:
            if self._values["model"] == model:
                self._values["model"] = self._dreaming
                self._pending_layer = None
                self._version += 1

    @property
    def dreaming(self) -> str:
        """The model dreaming now (the one asked for, `get("model")`, may still be loading)."""
        with self._lock:
            return self._dreaming

    def override_target(self, index: int | None, glide: bool = True) -> None:
        """Dream class `index` instead of the operator's target, or None to return to it.

        The operator's own target stays stored (OSC and keys still change it, and `state()`
        reports it); the dream cross-fades to whichever is dreamed over `glide` seconds.
        """
        with self._lock:
            if index == self._override:
                return
            before = self._dreamed_target()
            self._override = index
            self._glide_target(before, glide)
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

    @property
    def target_recipe(self) -> TargetConfig:
        """How class targets are dreamed (the [target] section; fixed at start)."""
        return self._target_recipe

    def get(self, name: str) -> object:
        """The stored value (a glide's end point, not the value on the way)."""
        _check_name(name)
        with self._lock:
            return self._values[name]

    def snapshot(self) -> Snapshot:
        """One consistent view of everything, with glides evaluated at this moment."""
        with self._lock:
            now = self._clock()
            settled = all(
                now >= g.t0 + g.duration for g in (self._target_glide, *self._glides.values())
            )
            if settled and self._cached is not None and self._cached[0] == self._version:
                return self._cached[1]
            v = dict(self._values)
            for name, g in self._glides.items():
                v[name] = g.at(now)
            layer_index = self._layers.index(str(v["layer"]))
            counts = (self._reset_count, self._snapshot_count, self._version)
            share = self._target_glide.at(now)  # the new target's share, 0..1
            old = self._target_from
            target = self._dreamed_target()
        changes: dict[str, dict[str, object]] = {}
        for name, spec in KNOBS.items():
            if spec.section in self._base:
                changes.setdefault(spec.section, {})[spec.name] = v[name]
        sections = {s: dataclasses.replace(self._base[s], **c) for s, c in changes.items()}
        weights: dict[int, float] = {}
        for index, w in ((old, 1.0 - share), (target, share)):
            if index is not None and w > 0.0:
                weights[index] = weights.get(index, 0.0) + w
        layer_weight = (1.0 - share) * (old is None) + share * (target is None)
        dream, feedback = sections["dream"], sections["feedback"]
        if layer_weight < 0.5:  # a class target holds most of the weight: its recipe
            dream = self._target_recipe.apply(dream)
            feedback = self._target_recipe.hold(feedback)
        snap = Snapshot(
            dream=dream,
            feedback=feedback,
            display=sections["display"],
            layer=str(v["layer"]),
            layer_index=layer_index,
            target=target,
            target_name="none" if target is None else class_names()[target],
            targets=tuple(sorted(weights.items())),
            layer_weight=layer_weight,
            model=str(v["model"]),
            glide=float(v["glide"]),
            paused=bool(v["paused"]),
            reset_count=counts[0],
            snapshot_count=counts[1],
            version=counts[2],
        )
        if settled:
            with self._lock:
                self._cached = (counts[2], snap)
        return snap

    def state(self) -> dict[str, object]:
        """Every stored value as plain floats, ints and strings (for status, sync and presets).

        "model" is the model dreaming, "model_loading" the one asked for while it loads
        ("none" when none is): status never names a model before it dreams.
        """
        with self._lock:
            values = dict(self._values)
            layer_index = self._layers.index(str(values["layer"]))
            dreaming = self._dreaming
        out: dict[str, object] = {}
        for name in NAMES:
            value = values[name]
            if name == "model":
                value = dreaming
            elif name == "target":
                value = "none" if value is None else class_names()[value]
            elif isinstance(value, bool):
                value = int(value)
            out[name] = value
        out["layer_index"] = layer_index
        out["target_index"] = -1 if values["target"] is None else values["target"]
        out["model_loading"] = "none" if values["model"] == dreaming else values["model"]
        return out

    # --- validation ------------------------------------------------------------------------

    def _store(self, name: str, stored: object, glide: bool) -> None:
        """Store a resolved value; the lock must be held."""
        before = self._dreamed_target()
        self._values[name] = stored
        if name == "target":
            self._glide_target(before, glide)
        if name in self._glides:
            seconds = float(self._values["glide"]) if glide else 0.0
            self._glides[name].go(float(stored), self._clock(), seconds)
        self._version += 1

    def _dreamed_target(self) -> int | None:
        """The class dreamed now: a visitor's, else the operator's; the lock must be held."""
        return self._override if self._override is not None else self._values["target"]  # type: ignore[return-value]

    def _glide_target(self, before: int | None, glide: bool) -> None:
        """Cross-fade from `before` to the class dreamed now, if they differ; the lock must be held."""
        if self._dreamed_target() == before:
            return
        now = self._clock()
        # Where a switch is still gliding, the new one starts from the nearer end of it.
        if self._target_glide.at(now) >= 0.5:
            self._target_from = before
        self._target_glide = _Glide(0.0)
        self._target_glide.go(1.0, now, float(self._values["glide"]) if glide else 0.0)

    def _resolve(self, name: str, value: object, strict: bool) -> object:
        """The value to store for `name`, or ParamError. Runs without the lock (class-name
        search and all), taking it only to read the layer and model lists."""
        _check_name(name)
        if name == "paused":
            return _as_bool(name, value)
        spec = KNOBS[name]
        if spec.kind == "layer":
            with self._lock:
                layers, model = self._layers, self._values["model"]
            return _resolve_layer(value, layers, str(model))
        if spec.kind == "target":
            return _resolve_target(value)
        if spec.kind == "model":
            word = str(value).strip().lower()
            if word not in self._models:
                raise ParamError(
                    f"unknown model {value!r}; valid models: {', '.join(self._models)}"
                )
            why = None if self._missing is None or word == self.dreaming else self._missing(word)
            if why is not None:
                raise ParamError(f"not switching to {word}: {why}")
            return word
        if spec.type is bool:
            return _as_bool(name, value)
        number = _number(spec, value)
        if strict and (
            (spec.lo is not None and number < spec.lo) or (spec.hi is not None and number > spec.hi)
        ):
            raise ParamError(f"{name} = {value!r} is out of range; valid: {spec.range_text()}")
        return spec.clamp(number)


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ParamError(f"unknown parameter {name!r}; valid parameters: {', '.join(NAMES)}")


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "on", "yes"):
            return True
        if word in ("0", "false", "off", "no"):
            return False
        raise ParamError(f"{name}: expected 0/1, true/false or on/off, got {value!r}")
    return _number(KNOBS.get(name), value, name) >= 0.5


def _resolve_layer(value: object, layers: tuple[str, ...], model: str) -> str:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            for name in layers:
                if name.lower() == text.lower():
                    return name
            raise ParamError(
                f"unknown layer {text!r} for {model}{_other_model_hint(text, model)}; valid "
                f"layers: {', '.join(layers)} (or an index 0-{len(layers) - 1})"
            ) from None
    index = int(round(_number(KNOBS["layer"], value)))
    return layers[min(max(index, 0), len(layers) - 1)]


def _other_model_hint(layer: str, model: str) -> str:
    """ " (inception4c is a googlenet layer: ...)" when another model has the layer, else ""."""
    from realtime.engine.models import MODEL_NAMES, model_layers

    for other in MODEL_NAMES:
        if other != model and layer.lower() in (n.lower() for n in model_layers(other)):
            return (
                f" ({layer} is a {other} layer: pass --model {other}, which needs its weights, "
                f"or take a layer of {model})"
            )
    return ""


def _resolve_target(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in CLEAR_WORDS:
        return None
    if not isinstance(value, str):
        number = _number(KNOBS["target"], value)
        if number < 0:
            return None
        value = min(int(round(number)), len(class_names()) - 1)
    try:
        return resolve_class(value)
    except ClassLookupError as err:
        raise ParamError(f"target: {err}") from err


def _number(spec: Knob | None, value: object, name: str = "") -> float:
    """A finite float from an int, float, bool or numeric string."""
    name = spec.live if spec is not None else name
    valid = spec.range_text() if spec is not None else "0 or 1"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ParamError(f"{name}: expected a number ({valid}), got {value!r}") from None
    try:  # numpy scalars are numbers.Real; an int beyond a float's range (JSON) overflows
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        number = math.inf
    except (TypeError, ValueError):
        raise ParamError(
            f"{name}: expected a number ({valid}), got {type(value).__name__}"
        ) from None
    if not math.isfinite(number):
        raise ParamError(f"{name}: expected a finite number ({valid}), got {value!r}")
    return number
