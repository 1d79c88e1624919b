"""What a dream maximises: weighted sums of terms over a model's activations, with exact keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from realtime.engine.models import LOGITS, NUM_CLASSES, DreamModel, ModelError

Activations = Mapping[str, Tensor]


class ObjectiveError(ValueError):
    """An objective names a layer, channel or class the model does not have."""


@dataclass(frozen=True)
class Term:
    """One thing to maximise. Reductions run in float32, so fp16 activations (CUDA autocast)
    neither overflow nor lose the small per-element terms.

    kind "layer": mean squared activation of `layer` (the classic deep dream: amplify whatever
        the layer already sees, positive or negative).
    kind "channel": mean activation of one channel. Plain mean, not squared: it drives the
        channel positive, towards the feature it detects (lucid's convention); squared would also
        reward "the opposite of this feature" in the linear EfficientNet block outputs.
    kind "classes": the class logits weighted by a vector over the 1000 classes (one class, or
        two while a target cross-fades); the classes and their weights are the term's values,
        not its structure, so a CUDA graph captured for one class serves every class.
    """

    kind: str
    layer: str
    channel: int | None = None

    def value(self, acts: Activations, class_weights: Tensor | None) -> Tensor:
        a = acts[self.layer]
        if self.kind == "layer":
            return a.float().square().mean()
        if self.kind == "channel":
            return a[:, self.channel].float().mean()
        return (a.float() * class_weights).sum(dim=1).mean()  # (B, 1000) . (1000,)


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms: `layer("inception4c")`, `0.5 * a + b`, `classes({980: 1.0})`.

    Attributes:
        terms: the terms, each at most once.
        weights: one weight per term.
        classes: (class index, weight) pairs that the "classes" term reads, sorted.
    """

    terms: tuple[Term, ...]
    weights: tuple[float, ...]
    classes: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.terms) != len(self.weights):
            raise ObjectiveError(f"{len(self.terms)} terms but {len(self.weights)} weights")

    @property
    def needed(self) -> frozenset[str]:
        """The activations the terms read."""
        return frozenset(t.layer for t in self.terms)

    @property
    def key(self) -> tuple:
        """Everything that makes this objective what it is, numbers exact: equal keys, equal
        objectives."""
        return (self.terms, self.weights, self.classes)

    @property
    def structure(self) -> tuple[Term, ...]:
        """What a computation over this objective is built from: the terms, without their
        weights or classes (which a captured graph reads from tensors)."""
        return self.terms

    def weight_tensors(self, device: torch.device) -> tuple[Tensor, Tensor | None]:
        """(term weights (n,), class weights (1000,) or None), float32 on `device`."""
        w = torch.tensor(self.weights, dtype=torch.float32, device=device)
        if not any(t.kind == "classes" for t in self.terms):
            return w, None
        cw = torch.zeros(NUM_CLASSES, dtype=torch.float32)
        for index, weight in self.classes:
            cw[index] = weight
        return w, cw.to(device)

    def fill(self, weights: Tensor, class_weights: Tensor | None) -> None:
        """Write this objective's numbers into static tensors (a captured graph's inputs) with
        device kernels only: no host synchronisation, no allocation."""
        for i, w in enumerate(self.weights):
            weights[i].fill_(w)  # 0-d view filled with a Python number
        if class_weights is not None:
            class_weights.zero_()
            for index, weight in self.classes:
                class_weights[index].fill_(weight)

    def loss(self, acts: Activations, weights: Tensor, class_weights: Tensor | None) -> Tensor:
        """The scalar to maximise, reading the weights from tensors."""
        values = [t.value(acts, class_weights) for t in self.terms]
        return (torch.stack(values) * weights).sum()

    def __call__(self, acts: Activations) -> Tensor:
        w, cw = self.weight_tensors(next(iter(acts.values())).device)
        return self.loss(acts, w, cw)

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        weights = dict(zip(self.terms, self.weights, strict=True))
        for term, w in zip(other.terms, other.weights, strict=True):
            weights[term] = 1.0 if term.kind == "classes" else weights.get(term, 0.0) + w
        return Objective(
            tuple(weights), tuple(weights.values()), _merge(self.classes, other.classes)
        )

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            return NotImplemented
        w = float(weight)  # the classes term keeps weight 1: its class weights carry the scale
        weights = tuple(
            1.0 if t.kind == "classes" else w * x
            for t, x in zip(self.terms, self.weights, strict=True)
        )
        return Objective(self.terms, weights, tuple((i, w * c) for i, c in self.classes))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __repr__(self) -> str:
        parts = []
        for term, w in zip(self.terms, self.weights, strict=True):
            if term.kind == "layer":
                text = f"layer({term.layer!r})"
            elif term.kind == "channel":
                text = f"channel({term.layer!r}, {term.channel})"
            else:
                text = "classes({" + ", ".join(f"{i}: {cw!r}" for i, cw in self.classes) + "})"
            parts.append(text if w == 1.0 else f"{w!r} * {text}")
        return " + ".join(parts)


def _merge(a: tuple, b: tuple) -> tuple[tuple[int, float], ...]:
    out: dict[int, float] = {}
    for index, w in (*a, *b):
        out[index] = out.get(index, 0.0) + w
    return tuple(sorted((i, w) for i, w in out.items() if w != 0.0))


def layer(name: str) -> Objective:
    """Mean squared activation of a layer: the classic deep dream objective."""
    return Objective((Term("layer", name),), (1.0,))


def channel(name: str, index: int) -> Objective:
    """Mean activation of one channel of a layer (see Term)."""
    return Objective((Term("channel", name, index),), (1.0,))


def classes(weights: Mapping[int, float]) -> Objective:
    """The class logits weighted by `weights` (class index -> weight)."""
    pairs = tuple(sorted((int(i), float(w)) for i, w in weights.items() if w != 0.0))
    return Objective((Term("classes", LOGITS),), (1.0,), pairs)


def class_logit(index: int) -> Objective:
    """One ImageNet class logit (pre-softmax)."""
    return classes({index: 1.0})


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
    target: int | Mapping[int, float] | None = None,
    channel: int | None = None,
    layer_weight: float = 0.0,
) -> Objective:
    """The objective for the usual controls, validated against `model`.

    Args:
        layer: layer to dream on; None means model.default_layer.
        target: an ImageNet class index 0..999, or class index -> weight (a cross-fade between
            targets). When set the objective is those class logits, plus `layer_weight` times
            the layer (or channel) term, so a little texture of the layer can be mixed into the
            class (a logit moves by ~1-10 per step, a mean squared activation by ~0.1-10
            depending on the layer: try 0.1-1).
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
    wanted = {target: 1.0} if isinstance(target, int) else dict(target)
    for index in wanted:
        _check_int("target class", index, NUM_CLASSES)
    logits = classes(wanted)
    if layer_weight == 0.0:
        return logits
    return logits + layer_weight * term
