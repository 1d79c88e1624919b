"""Choosing how the step runs: the model copy each strategy dreams on, and the dreamer."""

from __future__ import annotations

import torch

from realtime.engine.device import usable_cores
from realtime.engine.step import CUDA, EAGER, REFERENCE, Dreamer
from realtime.engine.strategy import CPU, dream_copy, make_dreamer, reference_dreamer


def test_make_dreamer_picks_the_eager_dreamer_on_the_cpu_with_every_core(lite0, restore_threads):
    torch.set_num_threads(1)
    dreamer = make_dreamer(lite0, "cpu")
    assert torch.get_num_threads() == 1  # for the thread that dreams, not the caller
    assert type(dreamer) is Dreamer and dreamer.opts == CPU
    assert dreamer.threads == usable_cores()
    assert reference_dreamer(lite0, "cpu").threads == usable_cores()  # compared like for like
    conv = next(m for m in dreamer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dreamer.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())  # left alone


def test_the_reference_switches_everything_off_on_a_plain_copy(lite0):
    ref = reference_dreamer(lite0, "cpu")
    assert ref.opts == REFERENCE and not any(
        (REFERENCE.autocast, REFERENCE.truncate, REFERENCE.channels_last)
    )
    assert ref.model is not lite0
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.model.modules())  # not folded
    conv = next(m for m in ref.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    assert CUDA.autocast and CUDA.channels_last and EAGER.truncate


def test_the_cuda_copy_is_folded_and_half_once_and_owns_its_classifier(lite0):
    """The CUDA path keeps its weights in fp16 once (autocast then casts nothing per replay),
    and the copy's classifier reads the copy's weights, not the original's."""
    half = dream_copy(lite0, half=True)
    assert half is not lite0
    floats = [p for p in half.parameters()] + [b for b in half.buffers() if b.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert all(p.dtype == torch.float32 for p in lite0.parameters())  # the original is untouched
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in half.modules())
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = lite0(img, {"logits"})["logits"].clone()
        for p in half.classifier.parameters():
            p.zero_()
        assert half(img.half(), {"logits"})["logits"].abs().max() == 0  # its own classifier
        assert torch.equal(lite0(img, {"logits"})["logits"], before)  # not the original's
