"""Small models with the VideoResNet / TSP key names, and files in each checkpoint layout."""

from __future__ import annotations

import collections
import os
import shlex
from pathlib import Path

import torch
from torch import nn


def _conv2plus1d(inp: int, out: int, mid: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(inp, mid, (1, 3, 3), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(),
        nn.Conv3d(mid, out, (3, 1, 1), padding=(1, 0, 0), bias=False),
    )


class TinyBlock(nn.Module):
    def __init__(self, inp: int, out: int, mid1: int, mid2: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_conv2plus1d(inp, out, mid1), nn.BatchNorm3d(out), nn.ReLU())
        self.conv2 = nn.Sequential(_conv2plus1d(out, out, mid2), nn.BatchNorm3d(out))
        self.downsample = (
            nn.Sequential(nn.Conv3d(inp, out, 1, bias=False), nn.BatchNorm3d(out))
            if inp != out else None
        )


class TinyVideoResNet(nn.Module):
    """Keys `stem.0.weight`, `layer1.0.conv1.0.0.weight`, ..., `fc.weight` (if num_classes).

    ``mid2`` is layer2's second middle width: 12 or 16 mimics r2plus1d_18 (one mid per block)
    vs r2plus1d_34 (one per conv) at toy size.
    """

    feature_dim = 16

    def __init__(self, num_classes: int | None = None, mid2: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, 6, (1, 7, 7), bias=False), nn.BatchNorm3d(6), nn.ReLU(),
            nn.Conv3d(6, 8, (3, 1, 1), bias=False), nn.BatchNorm3d(8), nn.ReLU(),
        )
        self.layer1 = nn.Sequential(TinyBlock(8, 8, 8, 8))
        self.layer2 = nn.Sequential(TinyBlock(8, 16, 12, mid2))
        self.fc = nn.Linear(16, num_classes) if num_classes is not None else None


class TinyTSP(nn.Module):
    """`features.*` + `fc1`/`fc2` (TSP) or `fc` (TAC), as TSP's training script names them."""

    def __init__(self, num_classes: int, *, with_gvf: bool = True, mode: str = "tsp",
                 mid2: int = 16) -> None:
        super().__init__()
        self.features = TinyVideoResNet(None, mid2=mid2)
        dim = TinyVideoResNet.feature_dim
        if mode == "tsp":
            self.fc1 = nn.Linear(dim, num_classes)
            self.fc2 = nn.Linear(2 * dim if with_gvf else dim, 2)
        else:
            self.fc = nn.Linear(dim, num_classes)


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Fill every tensor (BN statistics and counters too) so that loads are visible."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):  # a variance: positive, or the outputs are NaN
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
            else:
                tensor.fill_(int(torch.randint(1, 1000, (), generator=gen)))
    return model


def assert_same(expected: dict[str, torch.Tensor], model: nn.Module) -> None:
    got = model.state_dict()
    assert set(expected) <= set(got)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key


class MarkerMaker:
    """Pickles as a call to os.system that would create ``marker``: a malicious file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class SneakyDict(collections.OrderedDict):
    """A harmless-looking container class that is still not on the allow-list."""
