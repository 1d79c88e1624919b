"""Which way the one dream step runs on a device: the model copy it runs on, and the dreamer."""

from __future__ import annotations

import copy

import torch

from realtime.engine.device import cpu_threads
from realtime.engine.fold import fold_batchnorm
from realtime.engine.graphs import GraphDreamer
from realtime.engine.models import DreamModel
from realtime.engine.step import CUDA, EAGER, REFERENCE, Dreamer, StepOptions

CPU = StepOptions(autocast=False, truncate=True, channels_last=True)  # channels_last: 17% faster


def dream_copy(model: DreamModel, half: bool) -> DreamModel:
    """The copy a fast dreamer runs on: BatchNorms folded into the convs, and, for the CUDA
    path, the weights in half precision once (autocast then casts nothing per replay). The
    caller's model is never changed."""
    folded = fold_batchnorm(model)  # a copy, or the model itself when it has no BatchNorm
    if not half:
        return folded
    if folded is model:
        folded = copy.deepcopy(model)
    return folded.half()


def make_dreamer(
    model: DreamModel, device: str | torch.device | None = None, threads: int | None = None
) -> Dreamer:
    """The fastest dreamer for `device`: CUDA graphs on CUDA, the eager dreamer elsewhere.

    Every path dreams on a copy of the model with its BatchNorms folded into the convs
    (EfficientNet-Lite0 at 320x180 on 2 CPU cores: 36 -> 23 ms a step), only as deep as the
    objective needs. CUDA: fp16 weights and autocast, channels_last, graphs. CPU: float32,
    channels_last, and cpu_threads(threads) intra-op threads for the thread that dreams (not the
    caller's: see realtime.engine.device).
    """
    dev = model.device if device is None else torch.device(device)
    if dev.type == "cuda":
        return GraphDreamer(dream_copy(model, half=True).to(dev), dev, CUDA)
    if dev.type == "cpu":
        return Dreamer(dream_copy(model, half=False), dev, CPU, cpu_threads(threads))
    return Dreamer(dream_copy(model, half=False).to(dev), dev, EAGER)


def reference_dreamer(
    model: DreamModel, device: str | torch.device | None = None, threads: int | None = None
) -> Dreamer:
    """The naive reference for the benchmark: the same step with autocast, truncation, graphs,
    channels_last and folding all off (float32, the full network every step), on as many CPU
    threads as make_dreamer's."""
    plain = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format)
    dev = plain.device if device is None else torch.device(device)
    return Dreamer(plain, dev, REFERENCE, cpu_threads(threads) if dev.type == "cpu" else None)
