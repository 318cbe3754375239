"""G-TAD's graph building blocks (Xu et al., CVPR 2020), written from the facts in
``shared/reference/localization.md`` section 5: the k-NN graph in feature space and the
GCNeXt block, each ``(N, C, T)`` in.

- :func:`knn` (each position's nearest positions) and :func:`gather_neighbours` (their
  features); :class:`~tspipe.localize.gtad.SGAlign` reuses both for its context;
- :class:`GCNeXt`: :class:`TemporalPath` + :class:`SemanticPath` (edge convolution over the
  k-NN graph) + identity, ``(N, C, T) -> (N, C, T)``.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from tspipe.errors import ConfigError

# ------------------------------------------------------------------------------ k-NN graph


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each position's ``k`` nearest positions in feature space: ``(N, C, T) -> (N, T, k)``
    long, nearest first.

    Nearness is the negative squared Euclidean distance (facts), so a position is its own
    nearest neighbour (distance 0). Its slot is pinned first: the Gram expansion
    ``2 x.y - |x|^2 - |y|^2`` can round a near-duplicate above 0, and exact duplicates tie;
    with identical features which duplicate is picked changes no output.
    """
    t = x.shape[-1]
    if not 1 <= k <= t:
        raise ConfigError(f"knn: k must be in [1, T={t}], got {k}")
    # Indices carry no gradient; float32 even under autocast (fp16 Grams overflow).
    with torch.no_grad(), _no_autocast(x.device):
        f = x.detach().float()
        gram = f.transpose(1, 2) @ f  # (N, T, T)
        sq = gram.diagonal(dim1=1, dim2=2)  # (N, T), the same numbers as the Gram's
        neg_dist = 2 * gram - sq[:, :, None] - sq[:, None, :]
        neg_dist.diagonal(dim1=1, dim2=2).fill_(math.inf)
        return neg_dist.topk(k, dim=-1).indices


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off for ``device`` (a no-op where it has none, e.g. ``meta``)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def gather_neighbours(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Features of each position's neighbours: ``x (N, C, T)``, ``index (N, T, k)`` ->
    ``(N, C, T, k)``."""
    n, c, t = x.shape
    k = index.shape[-1]
    flat = index.reshape(n, 1, t * k).expand(n, c, t * k)
    return x.gather(2, flat).view(n, c, t, k)


# ---------------------------------------------------------------------------------- GCNeXt


class TemporalPath(nn.Sequential):
    """ResNeXt-style bottleneck along time: 1x1 to ``width``, grouped k3, 1x1 back."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__(
            nn.Conv1d(channels, width, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, width, kernel_size=3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, channels, kernel_size=1),
        )


class SemanticPath(nn.Module):
    """Edge convolution over the k-NN graph in feature space: edge features
    ``[neighbour, self]`` ``(N, 2C, T, k)``, three 1x1 convs (the middle one grouped), max
    over the ``k`` neighbours: ``(N, C, T) -> (N, C, T)``."""

    def __init__(self, channels: int, width: int, groups: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.edge_convs = nn.Sequential(
            nn.Conv2d(2 * channels, width, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neighbours = gather_neighbours(x, knn(x, self.k))  # (N, C, T, k)
        edges = torch.cat([neighbours, x.unsqueeze(-1).expand_as(neighbours)], dim=1)
        return self.edge_convs(edges).amax(dim=-1)


class GCNeXt(nn.Module):
    """G-TAD's graph block: ``relu(temporal(x) + semantic(x) + x)``, ``(N, C, T) -> (N, C, T)``.

    ``width = groups * width_per_group`` (128 in the paper) is the bottleneck of both paths.
    """

    def __init__(self, channels: int = 256, k: int = 3, groups: int = 32,
                 width_per_group: int = 4) -> None:
        super().__init__()
        if min(channels, k, groups, width_per_group) < 1:
            raise ConfigError(f"GCNeXt: channels, k, groups, width_per_group must be >= 1, "
                              f"got {channels}, {k}, {groups}, {width_per_group}")
        width = groups * width_per_group
        self.temporal = TemporalPath(channels, width, groups)
        self.semantic = SemanticPath(channels, width, groups, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.temporal(x) + self.semantic(x) + x)
