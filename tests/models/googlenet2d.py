"""A 2D Inception-v1 (GoogLeNet) for the inflation tests: torchvision's module names, so its
state_dict has torchvision's ``googlenet`` keys (aux classifiers included), but TF "SAME"
zero padding on every conv and max-pool, as I3D pads in space. Written independently of
``tspipe.models.i3d`` (the pad rule here is TF's ``(out - 1) * stride + k - size``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (in, ch1x1, ch3x3red, ch3x3, ch5x5red, "ch5x5" (3x3 in torchvision), pool_proj)
INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


def tf_same_pad_2d(x: Tensor, kernel: int, stride: int) -> Tensor:
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(tf_same_pad_2d(x, self.kernel, self.stride))))


class MaxPool2dSame(nn.Module):
    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(tf_same_pad_2d(x, self.kernel, self.stride), self.kernel,
                            self.stride)


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int,
                 pool: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3))
        self.branch4 = nn.Sequential(MaxPool2dSame(3, 1), BasicConv2d(cin, pool, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Present only so the state_dict carries torchvision's aux keys; never run."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)


class GoogLeNet2d(nn.Module):
    def __init__(self, num_classes: int = 1000, aux_logits: bool = True) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, 2)
        self.maxpool1 = MaxPool2dSame(3, 2)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3)
        self.maxpool2 = MaxPool2dSame(3, 2)
        self.inception3a = Inception(*INCEPTIONS["inception3a"])
        self.inception3b = Inception(*INCEPTIONS["inception3b"])
        self.maxpool3 = MaxPool2dSame(3, 2)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d",
                     "inception4e"):
            self.add_module(name, Inception(*INCEPTIONS[name]))
        self.maxpool4 = MaxPool2dSame(2, 2)
        self.inception5a = Inception(*INCEPTIONS["inception5a"])
        self.inception5b = Inception(*INCEPTIONS["inception5b"])
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes)
            self.aux2 = InceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    ORDER = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
             "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
             "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b")

    def forward_endpoints(self, x: Tensor) -> dict[str, Tensor]:
        """(N, 3, H, W) -> every stage's output, plus ``pooled`` (N, 1024) and ``logits``."""
        out = {}
        for name in self.ORDER:
            x = getattr(self, name)(x)
            out[name] = x
        out["pooled"] = torch.flatten(self.avgpool(x), 1)
        out["logits"] = self.fc(self.dropout(out["pooled"]))
        return out


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random conv/linear weights (He-normal, so activations keep their scale over 20
    layers), random BN affine and running statistics; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen)
                                * math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                uniform(module.bias, -0.5, 0.5)
        elif isinstance(module, nn.BatchNorm2d):
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.3, 0.3)
            uniform(module.running_mean, -0.3, 0.3)
            uniform(module.running_var, 0.5, 2.0)
            module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    return model.eval()
