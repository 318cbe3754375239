"""The video ResNet family (R3D, MC3, R(2+1)D), built from small named parts.

Written from scratch to behave exactly like torchvision's ``VideoResNet`` (the code the
official Kinetics weights and TSP's checkpoints were trained in or ported to): the same
module tree, so state_dict keys such as ``stem.0.weight``, ``layer1.0.conv1.0.0.weight``
or ``layer2.0.downsample.0.weight`` fall out of the module names, and the same arithmetic.

Parts share one interface and plug into one generic network:

- a *stem* ``stem(out_channels, norm_layer) -> nn.Module``: :class:`BasicStem` (R3D, MC3),
  :class:`R2Plus1dStem`;
- a *conv maker* ``conv_maker(in_planes, out_planes, midplanes, stride, norm_layer)`` with a
  static ``get_downsample_stride(stride)``: :class:`Conv3DSimple` (3x3x3),
  :class:`Conv3DNoTemporal` (1x3x3, MC3), :class:`Conv2Plus1D` (1x3x3 then 3x1x1);
- a *block* :class:`BasicBlock` (two conv makers and a residual);
- :class:`VideoResNet` (stem, four layers, global average pool, optional ``fc``).

One builder per member: :func:`r3d_18`, :func:`mc3_18`, :func:`r2plus1d_18`,
:func:`r2plus1d_34`, and the CPU-sized :func:`r3d_tiny`, :func:`r2plus1d_tiny` (the same
classes, other arguments). Every builder takes ``num_classes`` (``None``: no ``fc``, the
model returns its clip feature, as a TSP backbone) and keyword overrides of
:class:`VideoResNet`'s arguments (``bn_eps``, ``widths``, ``layers``, ...), plus
``input_spec``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from tspipe.errors import ConfigError
from tspipe.models.spec import InputSpec

# Kinetics statistics of frames scaled to [0, 1], RGB order (torchvision's video models and
# the TSP reference normalize with these).
KINETICS_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

NormLayer = Callable[[int], nn.Module]
MidRule = Literal["block", "conv"]


#: The Kinetics/TSP convention of every full-size member: (N, 3, 16, 112, 112) clips
#: (16 frames at 15 fps in TSP), frames in [0, 1], Kinetics mean/std.
KINETICS_112 = InputSpec(frames=16, size=112, mean=KINETICS_MEAN, std=KINETICS_STD)
#: The tiny members' convention for CPU runs: same normalization, 64-pixel crops.
TINY_64 = InputSpec(frames=16, size=64, mean=KINETICS_MEAN, std=KINETICS_STD)


def midplanes(in_planes: int, out_planes: int) -> int:
    """Width between the spatial and the temporal conv of a (2+1)D conv, chosen so that its
    parameter count matches a full 3x3x3 conv (Tran et al., CVPR 2018, section 3.5)."""
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


# ---------------------------------------------------------------------------- conv makers


class Conv3DSimple(nn.Conv3d):
    """Full 3x3x3 conv (R3D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None,
                 stride: int = 1, norm_layer: NormLayer = nn.BatchNorm3d) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride,
                         padding=1, bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """1x3x3 conv, no temporal extent (MC3's layers 2-4); it never strides in time."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None,
                 stride: int = 1, norm_layer: NormLayer = nn.BatchNorm3d) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3),
                         stride=(1, stride, stride), padding=(0, 1, 1), bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """(2+1)D conv: 1x3x3 spatial conv to ``midplanes``, BN, ReLU, 3x1x1 temporal conv."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm3d) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, 1, 1), bias=False),
            norm_layer(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(1, 0, 0), bias=False),
        )

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


ConvMaker = type[Conv3DSimple] | type[Conv3DNoTemporal] | type[Conv2Plus1D]

# ---------------------------------------------------------------------------------- stems


class BasicStem(nn.Sequential):
    """R3D/MC3 stem: 3x7x7 conv, stride (1, 2, 2), BN, ReLU."""

    def __init__(self, out_channels: int = 64, norm_layer: NormLayer = nn.BatchNorm3d) -> None:
        super().__init__(
            nn.Conv3d(3, out_channels, kernel_size=(3, 7, 7), stride=(1, 2, 2),
                      padding=(1, 3, 3), bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )


class R2Plus1dStem(nn.Sequential):
    """R(2+1)D stem: 1x7x7 conv to ``mid_channels`` (45 in the paper's and torchvision's
    models), BN, ReLU, 3x1x1 conv, BN, ReLU. ``mid_channels=None`` scales 45 with
    ``out_channels`` (45 at 64)."""

    def __init__(self, out_channels: int = 64, norm_layer: NormLayer = nn.BatchNorm3d,
                 mid_channels: int | None = None) -> None:
        mid = mid_channels if mid_channels is not None else max(1, round(45 * out_channels / 64))
        super().__init__(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3),
                      bias=False),
            norm_layer(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_channels, kernel_size=(3, 1, 1), stride=(1, 1, 1),
                      padding=(1, 0, 0), bias=False),
            norm_layer(out_channels),
            nn.ReLU(inplace=True),
        )


Stem = Callable[[int, NormLayer], nn.Module]

# --------------------------------------------------------------------------------- blocks


class BasicBlock(nn.Module):
    """Two conv makers and a residual: ``relu(conv2(conv1(x)) + downsample(x))``.

    ``mid_rule`` decides the (2+1)D middle widths (ignored by the 3D conv makers):
    ``"block"`` computes one width from the block's (inplanes, planes) and uses it for both
    convs (torchvision's r2plus1d_18); ``"conv"`` computes each conv's width from that
    conv's own in/out channels (the IG65M/Kinetics r2plus1d_34 that TSP starts from).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv_maker: ConvMaker, stride: int = 1,
                 downsample: nn.Module | None = None,
                 norm_layer: NormLayer = nn.BatchNorm3d, mid_rule: MidRule = "block") -> None:
        super().__init__()
        if mid_rule == "block":
            mid1 = mid2 = midplanes(inplanes, planes)
        elif mid_rule == "conv":
            mid1, mid2 = midplanes(inplanes, planes), midplanes(planes, planes)
        else:
            raise ConfigError(f"BasicBlock: mid_rule must be 'block' or 'conv', got {mid_rule!r}")
        self.conv1 = nn.Sequential(
            conv_maker(inplanes, planes, mid1, stride, norm_layer=norm_layer),
            norm_layer(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(
            conv_maker(planes, planes, mid2, 1, norm_layer=norm_layer), norm_layer(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        return self.relu(out + identity)


# -------------------------------------------------------------------------------- network


class VideoResNet(nn.Module):
    """The generic network: stem, ``layer1..layer4``, ``AdaptiveAvgPool3d(1)``, ``fc``.

    Input ``(N, 3, T, H, W)``; :meth:`forward_features` gives ``(N, widths[-1])`` (512 for
    the full-size members), :meth:`forward` gives ``(N, num_classes)`` logits, or the
    features when ``num_classes`` is ``None`` (then there is no ``fc`` and no ``fc.*`` key).
    Layer 1 keeps the resolution; layers 2-4 stride 2 (in time too, except MC3's
    no-temporal convs).
    """

    def __init__(self, block: type[BasicBlock], conv_makers: Sequence[ConvMaker],
                 layers: Sequence[int], stem: Stem, num_classes: int | None = 400, *,
                 widths: Sequence[int] = (64, 128, 256, 512), bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, mid_rule: MidRule = "block",
                 input_spec: InputSpec | None = None) -> None:
        super().__init__()
        if not (len(conv_makers) == len(layers) == len(widths) == 4):
            raise ConfigError(
                f"VideoResNet: conv_makers, layers and widths need 4 entries each, got "
                f"{len(conv_makers)}, {len(layers)}, {len(widths)}")
        norm_layer: NormLayer = partial(nn.BatchNorm3d, eps=bn_eps, momentum=bn_momentum)
        self.block = block
        self.mid_rule = mid_rule
        self.input_spec = input_spec
        self.inplanes = widths[0]
        self.stem = stem(widths[0], norm_layer)
        self.layer1 = self._make_layer(conv_makers[0], widths[0], layers[0], 1, norm_layer)
        self.layer2 = self._make_layer(conv_makers[1], widths[1], layers[1], 2, norm_layer)
        self.layer3 = self._make_layer(conv_makers[2], widths[2], layers[2], 2, norm_layer)
        self.layer4 = self._make_layer(conv_makers[3], widths[3], layers[3], 2, norm_layer)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.feature_dim = widths[3] * block.expansion
        self.num_classes = num_classes
        self.fc = nn.Linear(self.feature_dim, num_classes) if num_classes is not None else None
        self._init_weights()

    def _make_layer(self, conv_maker: ConvMaker, planes: int, blocks: int, stride: int,
                    norm_layer: NormLayer) -> nn.Sequential:
        downsample = None
        out_planes = planes * self.block.expansion
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, out_planes, kernel_size=1,
                          stride=conv_maker.get_downsample_stride(stride), bias=False),
                norm_layer(out_planes),
            )
        parts = [self.block(self.inplanes, planes, conv_maker, stride, downsample, norm_layer,
                            self.mid_rule)]
        self.inplanes = out_planes
        parts += [self.block(self.inplanes, planes, conv_maker, 1, None, norm_layer,
                             self.mid_rule) for _ in range(1, blocks)]
        return nn.Sequential(*parts)

    def _init_weights(self) -> None:
        # torchvision's init (its VideoResNet's zero_init_residual only touches Bottleneck
        # blocks, which no member here uses).
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` -> clip features ``(N, feature_dim)`` (global average pool
        after layer4)."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` -> logits ``(N, num_classes)``, or the features
        ``(N, feature_dim)`` when the model has no ``fc``."""
        features = self.forward_features(x)
        return features if self.fc is None else self.fc(features)


# ------------------------------------------------------------------------------- builders

_ARCH_KEYS = frozenset({"block", "conv_makers", "layers", "stem", "widths", "bn_eps",
                        "bn_momentum", "mid_rule", "input_spec"})


def _build(name: str, arch: dict[str, Any], num_classes: int | None,
           overrides: Mapping[str, Any]) -> VideoResNet:
    unknown = sorted(set(overrides) - _ARCH_KEYS)
    if unknown:
        raise ConfigError(f"encoder {name!r}: unknown override(s) {unknown}; "
                          f"known: {sorted(_ARCH_KEYS)}")
    return VideoResNet(num_classes=num_classes, **{**arch, **overrides})


def r3d_18(num_classes: int | None = None, **overrides: Any) -> VideoResNet:
    """R3D-18 (Tran et al. 2018): 3x3x3 convs, [2, 2, 2, 2] blocks, 512-d features.

    Input ``(N, 3, T, 112, 112)`` (16 frames in TSP), frames in [0, 1] normalized with
    :data:`KINETICS_MEAN` / :data:`KINETICS_STD`; BN eps 1e-5, momentum 0.1. 33,371,472
    parameters with a 400-way fc.
    """
    arch = dict(block=BasicBlock, conv_makers=[Conv3DSimple] * 4, layers=[2, 2, 2, 2],
                stem=BasicStem, input_spec=KINETICS_112)
    return _build("r3d_18", arch, num_classes, overrides)


def mc3_18(num_classes: int | None = None, **overrides: Any) -> VideoResNet:
    """MC3-18: 3x3x3 convs in layer1, 1x3x3 (no temporal) convs in layers 2-4.

    Input ``(N, 3, T, 112, 112)``, frames in [0, 1] normalized with :data:`KINETICS_MEAN` /
    :data:`KINETICS_STD`; BN eps 1e-5. 11,695,440 parameters with a 400-way fc.
    """
    arch = dict(block=BasicBlock, conv_makers=[Conv3DSimple] + [Conv3DNoTemporal] * 3,
                layers=[2, 2, 2, 2], stem=BasicStem, input_spec=KINETICS_112)
    return _build("mc3_18", arch, num_classes, overrides)


def r2plus1d_18(num_classes: int | None = None, **overrides: Any) -> VideoResNet:
    """R(2+1)D-18 as in torchvision (its Kinetics weights, TSP's r2plus1d_18): one (2+1)D
    middle width per block. 31,505,325 parameters with a 400-way fc.

    Input ``(N, 3, T, 112, 112)``, frames in [0, 1] normalized with :data:`KINETICS_MEAN` /
    :data:`KINETICS_STD`; BN eps 1e-5, momentum 0.1.
    """
    arch = dict(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[2, 2, 2, 2],
                stem=R2Plus1dStem, mid_rule="block", input_spec=KINETICS_112)
    return _build("r2plus1d_18", arch, num_classes, overrides)


def r2plus1d_34(num_classes: int | None = None, **overrides: Any) -> VideoResNet:
    """R(2+1)D-34 as ported from Caffe2 (IG65M -> Kinetics weights; TSP's default backbone):
    [3, 4, 6, 3] blocks, each (2+1)D conv with its own middle width, BatchNorm eps 1e-3.
    63,697,175 parameters with a 400-way fc (63,491,975 without).

    Input ``(N, 3, T, 112, 112)`` (16 frames at 15 fps in TSP), frames in [0, 1] normalized
    with :data:`KINETICS_MEAN` / :data:`KINETICS_STD`.
    """
    # The TSP reference sets eps=1e-3, momentum=0.9 on every BN "for exact Caffe2 momentum".
    # PyTorch's momentum is the weight of the *new* batch statistic (Caffe2's is the weight
    # of the old running value), so 0.9 here makes running stats follow the latest batches
    # in training; we reproduce what the reference did. In eval mode only eps affects
    # outputs, and the ported weights need eps=1e-3 to give the reference's numbers.
    arch = dict(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3],
                stem=R2Plus1dStem, mid_rule="conv", bn_eps=1e-3, bn_momentum=0.9,
                input_spec=KINETICS_112)
    return _build("r2plus1d_34", arch, num_classes, overrides)


TINY_WIDTHS = (16, 32, 64, 128)


def r2plus1d_tiny(num_classes: int | None = None, **overrides: Any) -> VideoResNet:
    """CPU-sized R(2+1)D: the same classes as :func:`r2plus1d_34` (per-conv middle widths,
    BN eps 1e-3) with [1, 1, 1, 1] blocks, widths (16, 32, 64, 128), stem middle width 11;
    128-d features. 900,427 parameters without fc. Measured on CPU (2-core AMD EPYC, torch
    2.13, inference mode): a (4, 3, 16, 64, 64) batch in 50-70 ms.

    Input ``(N, 3, T, 64, 64)`` by default (:data:`TINY_64`); any T, H, W >= 1 works.
    """
    arch = dict(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[1, 1, 1, 1],
                stem=R2Plus1dStem, widths=TINY_WIDTHS, mid_rule="conv", bn_eps=1e-3,
                bn_momentum=0.9, input_spec=TINY_64)
    return _build("r2plus1d_tiny", arch, num_classes, overrides)


def r3d_tiny(num_classes: int | None = None, **overrides: Any) -> VideoResNet:
    """CPU-sized R3D: the classes of :func:`r3d_18` with [1, 1, 1, 1] blocks and widths
    (16, 32, 64, 128); 128-d features. 903,984 parameters without fc. Measured on CPU
    (2-core AMD EPYC, torch 2.13, inference mode): a (4, 3, 16, 64, 64) batch in 30-45 ms.

    Input ``(N, 3, T, 64, 64)`` by default (:data:`TINY_64`).
    """
    arch = dict(block=BasicBlock, conv_makers=[Conv3DSimple] * 4, layers=[1, 1, 1, 1],
                stem=BasicStem, widths=TINY_WIDTHS, input_spec=TINY_64)
    return _build("r3d_tiny", arch, num_classes, overrides)
