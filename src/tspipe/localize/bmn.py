"""BMN, the Boundary-Matching Network (Lin et al., ICCV 2019), written from the facts in
``shared/reference/localization.md`` section 4.

Map convention (used by :mod:`tspipe.localize.targets`, :mod:`tspipe.localize.losses` and
inference alike): every proposal map is indexed ``[start, end]``. Cell ``(s, e)`` with
``s <= e`` is the proposal covering feature positions ``s..e``, i.e. the normalized interval
``[s / T, (e + 1) / T]``; cells with ``s > e`` are invalid (zero in the sampling mask and the
targets, outside :func:`valid_mask`, which is the upper triangle, diagonal included). The
facts state BMN's labels, valid mask and inference rule (candidate ``[i / T, (j + 1) / T]``
scored with ``cls[i, j]``) in these terms, so they read the map directly. Reference code
also stores maps as ``[duration, start]`` (G-TAD; :mod:`tspipe.localize.gtad` converts);
a reference checkpoint's 3x3 convs were trained on that layout and do not load here.

Parts: a base module (two grouped 1D convs), TEM start/end heads (a grouped 1D conv and a
1x1 conv, sigmoid), and the PEM: a 1D conv, the boundary-matching layer
(:class:`BoundaryMatchingLayer`: features ``(N, C, T)`` to ``(N, C, S, T, T)``, S sample
bins per proposal, by one matmul with a fixed mask), a Conv3d that folds the S bins, and 2D
convs to two sigmoid maps (channel 0: IoU regression, channel 1: classification).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tspipe.errors import ConfigError, ShapeError
from tspipe.localize.outputs import MapOutput

_GROUPS = 4  # the base and TEM 1D convs are grouped in 4 (facts, section 4)


def valid_mask(temporal_scale: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(T, T)`` bool: True where cell ``(start, end)`` is a proposal, i.e. ``start <= end``."""
    ones = torch.ones(temporal_scale, temporal_scale, dtype=torch.bool, device=device)
    return torch.triu(ones)


def bm_sampling_mask(temporal_scale: int, num_sample: int = 32, num_sample_perbin: int = 3,
                     prop_boundary_ratio: float = 0.5) -> torch.Tensor:
    """The boundary-matching sampling weights, ``(T, S, T, T)`` float32 indexed
    ``[position, bin, start, end]``; ``.reshape(T, S * T * T)`` is the matmul matrix.

    For cell ``(s, e)``, ``s <= e``, the proposal ``[s, e + 1]`` (length ``L = e + 1 - s``
    positions) is extended by ``prop_boundary_ratio * L`` on both sides (the facts'
    ``0.5 * (len + 1)`` with ``len = e - s``); ``S * num_sample_perbin`` evenly spaced points
    span the extended interval, ends included. A point ``x`` gives weight ``1 - frac(x)`` to
    position ``floor(x)`` and ``frac(x)`` to ``floor(x) + 1``; a position outside ``0..T-1``
    is dropped (so a bin running past the sequence sums to less than 1). Bin ``b`` averages
    points ``b * perbin .. (b + 1) * perbin - 1``. Cells with ``s > e`` are all zero.

    Built in float64 with numpy, vectorized over cells and points (T = 100, S = 32: 0.96 M
    points, well under a second), then cast.
    """
    t, n_bins, perbin = temporal_scale, num_sample, num_sample_perbin
    if t < 1 or n_bins < 1 or perbin < 1:
        raise ConfigError(f"BM mask: temporal_scale ({t}), num_sample ({n_bins}) and "
                          f"num_sample_perbin ({perbin}) must all be >= 1")
    if prop_boundary_ratio < 0:
        raise ConfigError(f"BM mask: prop_boundary_ratio must be >= 0, got {prop_boundary_ratio}")
    start, end = np.triu_indices(t)  # every valid cell, s <= e
    length = (end + 1 - start).astype(np.float64)
    lo = start - prop_boundary_ratio * length
    hi = end + 1 + prop_boundary_ratio * length
    n_points = n_bins * perbin
    frac_of_span = np.linspace(0.0, 1.0, n_points)  # (points,); one point: the span's start
    x = lo[:, None] + (hi - lo)[:, None] * frac_of_span[None, :]
    floor = np.floor(x)
    frac = x - floor
    floor = floor.astype(np.int64)
    bins = np.broadcast_to(np.arange(n_points) // perbin, x.shape)
    cell_flat = np.broadcast_to((start * t + end)[:, None], x.shape)
    pos = np.concatenate([floor, floor + 1])  # each point's two neighbours
    weight = np.concatenate([1.0 - frac, frac]) / perbin
    bins, cell_flat = np.concatenate([bins, bins]), np.concatenate([cell_flat, cell_flat])
    inside = (pos >= 0) & (pos < t)
    # flat index of [position, bin, start, end] in a C-ordered (T, S, T, T) array
    index = (pos[inside] * n_bins + bins[inside]) * (t * t) + cell_flat[inside]
    out = np.bincount(index, weights=weight[inside], minlength=t * n_bins * t * t)
    return torch.from_numpy(out.reshape(t, n_bins, t, t).astype(np.float32))


# BMNOutput: the shared record; this model's map is indexed [start, end] (T, T).
BMNOutput = MapOutput


class BoundaryMatchingLayer(nn.Module):
    """Samples every proposal's features: ``(N, C, T) -> (N, C, S, T, T)``.

    The mask (:func:`bm_sampling_mask`) is a non-persistent buffer: it moves with ``.to``,
    is built once, and stays out of checkpoints (128 MB at T = 100, S = 32, and derived from
    the config anyway).

    Memory: the plain output is ``N * C * S * T * T`` values; for N = 16, C = 256, S = 32,
    T = 100 that is 1.31e9, 5.2 GB in float32 (2.6 GB under bf16/fp16 autocast), kept for
    the Conv3d's backward and matched by a gradient of the same size.
    :meth:`sample_and_project` gives the Conv3d's output without that intermediate.
    """

    sample_mask: torch.Tensor

    def __init__(self, temporal_scale: int, num_sample: int = 32, num_sample_perbin: int = 3,
                 prop_boundary_ratio: float = 0.5) -> None:
        super().__init__()
        self.temporal_scale = temporal_scale
        self.num_sample = num_sample
        mask = bm_sampling_mask(temporal_scale, num_sample, num_sample_perbin,
                                prop_boundary_ratio)
        self.register_buffer("sample_mask", mask, persistent=False)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.temporal_scale:
            raise ShapeError(f"BM layer: expected features (N, C, {self.temporal_scale}), "
                              f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T)`` -> ``(N, C, S, T, T)`` indexed ``[video, channel, bin, start, end]``."""
        self._check(x)
        n, c, t = x.shape
        mask = self.sample_mask.to(x.dtype).reshape(t, -1)
        return torch.matmul(x, mask).reshape(n, c, self.num_sample, t, t)

    def sample_and_project(self, x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
        """``conv(self(x))`` for a Conv3d with kernel and stride ``(S, 1, 1)``, squeezed to
        ``(N, O, T, T)``, without the ``(N, C, S, T, T)`` intermediate.

        Both steps are linear, so the channel/bin weights are applied first, giving
        ``(N, O, T, S)``, then the mask: ``(N, O, T * S) @ (T * S, T * T)``. For N = 16,
        C = 256, O = 512, S = 32, T = 100 the largest intermediate is the output itself,
        82 M values (0.33 GB float32) instead of 5.2 GB, and the multiply-adds drop from
        8.0e11 to 2.7e11.
        """
        self._check(x)
        if conv.kernel_size != (self.num_sample, 1, 1) or conv.stride != conv.kernel_size:
            raise ShapeError(f"BM layer: the Conv3d must have kernel and stride "
                              f"({self.num_sample}, 1, 1), got {conv.kernel_size} and "
                              f"{conv.stride}")
        n, _, t = x.shape
        weight = conv.weight[..., 0, 0]  # (O, C, S)
        y = torch.einsum("ocs,nct->nots", weight.to(x.dtype), x)
        # (T, S, T, T) is C-contiguous, so this reshape is a view: [position, bin] rows.
        mask = self.sample_mask.to(y.dtype).reshape(t * self.num_sample, t * t)
        out = torch.matmul(y.reshape(n, y.shape[1], -1), mask)
        if conv.bias is not None:
            out = out + conv.bias.to(out.dtype)[:, None]
        return out.reshape(n, -1, t, t)


class BMN(nn.Module):
    """Boundary-Matching Network: features ``(N, C, T)`` -> :class:`BMNOutput`.

    ``fused_bm`` (default) computes the BM layer and the Conv3d together
    (:meth:`BoundaryMatchingLayer.sample_and_project`): the same numbers, without the
    5 GB intermediate of the reference. ``fused_bm=False`` runs them one after the other,
    as the reference does. Measured on one H100 (feat 400, T = 100, batch 16, forward,
    loss and backward): fused 34 ms and 1.15 GiB peak in float32, 14 ms and 0.82 GiB under
    bf16 autocast; unfused 268 ms and 15.6 GiB, 168 ms and 7.9 GiB; outputs within 1.2e-6.
    """

    def __init__(self, feat_dim: int, temporal_scale: int = 100, hidden_1d: int = 256,
                 hidden_2d: int = 128, hidden_3d: int = 512, num_sample: int = 32,
                 num_sample_perbin: int = 3, prop_boundary_ratio: float = 0.5,
                 fused_bm: bool = True) -> None:
        super().__init__()
        for name, value in (("feat_dim", feat_dim), ("hidden_1d", hidden_1d)):
            if value < _GROUPS or value % _GROUPS:
                raise ConfigError(f"BMN: {name} must be a positive multiple of {_GROUPS} "
                                  f"(grouped convs), got {value}")
        self.temporal_scale = temporal_scale
        self.fused_bm = fused_bm
        h1 = hidden_1d
        self.base = nn.Sequential(
            nn.Conv1d(feat_dim, h1, kernel_size=3, padding=1, groups=_GROUPS),
            nn.ReLU(inplace=True),
            nn.Conv1d(h1, h1, kernel_size=3, padding=1, groups=_GROUPS),
            nn.ReLU(inplace=True),
        )
        self.start_head = _boundary_head(h1)
        self.end_head = _boundary_head(h1)
        self.pem_1d = nn.Sequential(nn.Conv1d(h1, h1, kernel_size=3, padding=1),
                                    nn.ReLU(inplace=True))
        self.bm_layer = BoundaryMatchingLayer(temporal_scale, num_sample, num_sample_perbin,
                                              prop_boundary_ratio)
        # Folds the S bins of each cell; its ReLU is applied in forward (a bare Conv3d is
        # what sample_and_project takes).
        self.pem_3d = nn.Conv3d(h1, hidden_3d, kernel_size=(num_sample, 1, 1),
                                stride=(num_sample, 1, 1))
        self.pem_2d = nn.Sequential(
            nn.Conv2d(hidden_3d, hidden_2d, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_2d, hidden_2d, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_2d, hidden_2d, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_2d, 2, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> BMNOutput:
        """``(N, C, T)`` snippet features -> maps ``(N, 2, T, T)``, start/end ``(N, T)``."""
        base = self.base(x)
        start = self.start_head(base).squeeze(1)
        end = self.end_head(base).squeeze(1)
        pem = self.pem_1d(base)
        if self.fused_bm:
            proposals = self.bm_layer.sample_and_project(pem, self.pem_3d)
        else:
            proposals = self.pem_3d(self.bm_layer(pem)).squeeze(2)
        proposals = torch.relu(proposals)
        return BMNOutput(confidence_map=self.pem_2d(proposals), start=start, end=end)


def _boundary_head(hidden: int) -> nn.Sequential:
    """TEM head: grouped k3 conv, ReLU, 1x1 conv to one channel, sigmoid: ``(N, 1, T)``."""
    return nn.Sequential(
        nn.Conv1d(hidden, hidden, kernel_size=3, padding=1, groups=_GROUPS),
        nn.ReLU(inplace=True),
        nn.Conv1d(hidden, 1, kernel_size=1),
        nn.Sigmoid(),
    )
