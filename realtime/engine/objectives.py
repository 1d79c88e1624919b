"""What a dream maximises: small objectives over a model's activations that add and scale."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from realtime.engine.models import LOGITS, NUM_CLASSES, DreamModel, ModelError

Activations = Mapping[str, Tensor]


class ObjectiveError(ValueError):
    """An objective names a layer, channel or class the model does not have."""


class Objective:
    """A scalar to maximise, computed from the activations named in `needed`.

    Objectives combine: `a + b`, `0.5 * a`, `a * 0.5`, `a - b`. Reductions run in float32 so
    fp16 activations (CUDA autocast) neither overflow nor lose the small per-element terms.
    """

    def __init__(self, fn: Callable[[Activations], Tensor], needed: frozenset[str], desc: str):
        self._fn = fn
        self.needed = needed
        self._desc = desc

    def __call__(self, acts: Activations) -> Tensor:
        return self._fn(acts)

    def __repr__(self) -> str:
        return self._desc

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(
            lambda acts: self(acts) + other(acts), self.needed | other.needed, f"{self} + {other}"
        )

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            return NotImplemented
        w = float(weight)
        return Objective(lambda acts: w * self(acts), self.needed, f"{w:g} * ({self})")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)


def layer(name: str) -> Objective:
    """Mean squared activation of a layer: the classic deep dream objective (amplify whatever
    the layer already sees, positive or negative)."""

    def fn(acts: Activations) -> Tensor:
        return acts[name].float().square().mean()

    return Objective(fn, frozenset([name]), f"layer({name!r})")


def channel(name: str, index: int) -> Objective:
    """Mean activation of one channel of a layer.

    Plain mean, not squared: it drives the channel positive, towards the feature it detects
    (lucid's convention). Squared would also reward strongly negative values, which in the
    linear (non-ReLU) EfficientNet block outputs means "the opposite of this feature".
    """

    def fn(acts: Activations) -> Tensor:
        return acts[name][:, index].float().mean()

    return Objective(fn, frozenset([name]), f"channel({name!r}, {index})")


def class_logit(index: int) -> Objective:
    """The ImageNet class logit (pre-softmax), averaged over the batch."""

    def fn(acts: Activations) -> Tensor:
        return acts[LOGITS][:, index].float().mean()

    return Objective(fn, frozenset([LOGITS]), f"class_logit({index})")


# build() takes arguments named `layer` and `channel`; these aliases reach the functions.
_layer_term = layer
_channel_term = channel


def _check_layer(model: DreamModel, name: str) -> None:
    try:
        model.layer_index(name)
    except ModelError as err:
        raise ObjectiveError(str(err)) from err


def _check_int(what: str, value: object, stop: int, context: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ObjectiveError(f"{what}{context} must be an integer in 0..{stop - 1}, got {value!r}")
    if not 0 <= value < stop:
        raise ObjectiveError(
            f"{what} {value}{context} is out of range; valid values are 0..{stop - 1}"
        )
    return value


def build(
    model: DreamModel,
    layer: str | None = None,
    target: int | None = None,
    channel: int | None = None,
    layer_weight: float = 0.0,
) -> Objective:
    """The objective for the usual controls, validated against `model`.

    Args:
        layer: layer to dream on; None means model.default_layer.
        target: ImageNet class index 0..999. When set the objective is that class logit, plus
            `layer_weight` times the layer (or channel) term, so a little texture of the layer
            can be mixed into the class (a logit moves by ~1-10 per step, a mean squared
            activation by ~0.1-10 depending on the layer: try 0.1-1).
        channel: maximise one channel of `layer` instead of the whole layer.
        layer_weight: weight of the layer term next to a class target; 0 gives the pure class.

    Raises:
        ObjectiveError: unknown layer (the message lists the valid ones), channel or target out
            of range.
    """
    name = model.default_layer if layer is None else layer
    _check_layer(model, name)
    if channel is not None:
        _check_int("channel", channel, model.channels(name), f" of {model.name} layer '{name}'")
        term = _channel_term(name, channel)
    else:
        term = _layer_term(name)
    if target is None:
        return term
    logit = class_logit(_check_int("target class", target, NUM_CLASSES))
    if layer_weight == 0.0:
        return logit
    return logit + layer_weight * term
