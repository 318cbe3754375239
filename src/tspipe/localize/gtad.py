"""G-TAD, sub-graph localization for temporal action detection (Xu et al., CVPR 2020),
written from the facts in ``shared/reference/localization.md`` section 5.

Map convention: G-TAD's proposal map is indexed ``[duration, start]``, shape ``(D, T)``, as
the reference stores it. Cell ``(d, s)`` is the anchor covering feature positions
``s..s + d``, i.e. the normalized interval ``[s / T, (s + d + 1) / T]``. Cells with
``s + d >= T`` run past the end: they are invalid, their SGAlign features are zero and
their scores mean nothing (:func:`valid_mask` is what losses and post-processing must use).
With ``D < T`` (THUMOS: 64 of 256) the map holds only the short anchors, which a
``[start, end]`` map cannot do without T x T cells; :func:`to_start_end` and
:func:`to_duration_start` convert to and from ``[start, end]`` maps (BMN's targets and
losses use those).

Parts, one interface each (the graph blocks, :func:`~tspipe.localize.gcnext.knn` and
:class:`~tspipe.localize.gcnext.GCNeXt`, ``(N, C, T) -> (N, C, T)``, live in
:mod:`tspipe.localize.gcnext`):

- :func:`valid_mask` and the map conversions :func:`to_start_end` /
  :func:`to_duration_start`;
- :class:`RoIAlign1d`, a fixed 1-D RoIAlign of every anchor by one matmul, and
  :class:`SGAlign` (backbone features plus k-NN context), ``(N, C, T) -> (N, C', D, T)``;
- :class:`GTAD`: stem, backbone GCNeXt, start/end heads, second GCNeXt, SGAlign, 2-D head.
"""

from __future__ import annotations

import torch
from torch import nn

from tspipe.errors import ConfigError, ShapeError
from tspipe.localize.gcnext import GCNeXt, gather_neighbours, knn
from tspipe.localize.outputs import MapOutput

_STEM_GROUPS = 4  # the first Conv1d (feat -> 256, k3) is grouped in 4 (facts, section 5)
_MAP_HIDDEN = (512, 128)  # 2-D head widths (facts, section 5)


# ------------------------------------------------------------------------ anchors, RoIAlign


def valid_mask(temporal_scale: int, max_duration: int,
               device: torch.device | str | None = None) -> torch.Tensor:
    """``(D, T)`` bool: True where anchor ``(d, s)`` ends inside the video, ``s + d < T``."""
    d = torch.arange(max_duration, device=device)[:, None]
    s = torch.arange(temporal_scale, device=device)[None, :]
    return s + d < temporal_scale


def roi_align_matrix(temporal_scale: int, max_duration: int, points: int,
                     extension: float = 0.5) -> torch.Tensor:
    """Fixed 1-D RoIAlign weights of every anchor: ``(T, P, D, T)`` float32, entry
    ``[t, p, d, s]`` = weight of feature position ``t`` in bin ``p`` of cell ``(d, s)``.

    Anchor ``(d, s)`` spans positions ``[s, s + d]``; its RoI is extended by
    ``extension * (d + 1)`` on each side (facts: 0.5). The RoI is split into ``P`` equal
    bins; each bin averages ``ceil(bin width)`` evenly spaced samples (torchvision's
    ``roi_align`` with ``sampling_ratio=-1``, ``aligned=False``), each linearly interpolated
    between integer positions. Boundary rule of that op: a sample beyond ``[-1, T]`` is 0
    (still counted in the bin's average), one in ``[-1, 0)`` reads position 0, one at or past
    ``T - 1`` reads position ``T - 1``. Invalid cells (``s + d >= T``) are all zero.
    """
    if min(temporal_scale, max_duration, points) < 1 or max_duration > temporal_scale:
        raise ConfigError(f"RoIAlign: need 1 <= D <= T and points >= 1, got T={temporal_scale},"
                          f" D={max_duration}, points={points}")
    t, dd, p = temporal_scale, max_duration, points
    f64 = torch.float64
    d = torch.arange(dd, dtype=f64)
    s = torch.arange(t, dtype=f64)
    length = d + 1  # positions covered by the anchor
    bin_w = (d + 2 * extension * length) / p  # (D,)
    ratio = torch.ceil(bin_w).clamp(min=1)  # samples per bin, (D,)
    r_max = int(ratio.max())
    x1 = s[None, :] - extension * length[:, None]  # (D, T) RoI starts
    pi = torch.arange(p, dtype=f64)[:, None, None, None]
    j = torch.arange(r_max, dtype=f64)[None, None, None, :]
    bw, rt = bin_w[None, :, None, None], ratio[None, :, None, None]
    x = x1[None, :, :, None] + pi * bw + (j + 0.5) * bw / rt  # (P, D, T, R) sample positions
    cell_ok = valid_mask(t, dd)[None, :, :, None]
    keep = (j < rt) & cell_ok & (x >= -1) & (x <= t)
    cols = torch.arange(p * dd * t).view(p, dd, t, 1).expand_as(x)[keep]  # flat (p, d, s)
    weight = (1.0 / rt).expand_as(x)[keep]
    xc = x[keep].clamp(min=0)
    lo = xc.floor().clamp(max=t - 1)
    frac = torch.where(lo >= t - 1, 0.0, xc - lo)
    hi = (lo + 1).clamp(max=t - 1)
    rows = torch.cat([lo, hi]).long()
    vals = torch.cat([(1 - frac) * weight, frac * weight]).float()
    # Several samples land on one (position, cell); float32 sums of <= 2 * R terms.
    matrix = torch.zeros(t * p * dd * t, dtype=torch.float32)
    matrix.index_add_(0, rows * (p * dd * t) + torch.cat([cols, cols]), vals)
    return matrix.view(t, p, dd, t)


class RoIAlign1d(nn.Module):
    """1-D RoIAlign of every anchor of the ``(D, T)`` map by one matmul with
    :func:`roi_align_matrix`: ``(N, C, T) -> (N, C * P, D, T)``, channel ``c * P + p``.

    The matrix is a non-persistent buffer: it moves with ``.to``, is built once, and stays
    out of checkpoints (it follows from the config). Size ``T * P * D * T`` float32 values:
    128 MB at T = D = 100, P = 32; 268 MB at THUMOS's T = 256, D = 64, P = 16.
    """

    matrix: torch.Tensor

    def __init__(self, temporal_scale: int, max_duration: int, points: int,
                 extension: float = 0.5) -> None:
        super().__init__()
        self.temporal_scale = temporal_scale
        self.max_duration = max_duration
        self.points = points
        matrix = roi_align_matrix(temporal_scale, max_duration, points, extension)
        self.register_buffer("matrix", matrix, persistent=False)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.temporal_scale:
            raise ShapeError(f"RoIAlign: expected features (N, C, {self.temporal_scale}), "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        n, c, t = x.shape
        m = self.matrix.to(x.dtype).view(t, -1)  # (T, P * D * T), a view
        return (x.reshape(n * c, t) @ m).view(n, c * self.points, self.max_duration, t)

    def project(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``einsum('ocp,ncpds->nods', weight, self(x))`` without the ``(N, C * P, D, T)``
        intermediate: both steps are linear, so the channel/bin weights ``(O, C, P)`` are
        applied first, ``(N, O, T * P)``, then the matrix. Returns ``(N, O, D, T)``."""
        self._check(x)
        n, _, t = x.shape
        y = torch.einsum("ocp,nct->notp", weight.to(x.dtype), x).reshape(n, weight.shape[0], -1)
        m = self.matrix.to(y.dtype).view(t * self.points, -1)  # rows (t, p): a view
        return (y @ m).view(n, -1, self.max_duration, t)


class SGAlign(nn.Module):
    """Sub-graph alignment: ``(N, C, T) -> (N, C * (P + Pc), D, T)``.

    Channels ``[0, C * P)`` are the RoIAlign of the features to ``P`` points (channel
    ``c * P + p``); channels ``C * P + c * Pc + q`` are the RoIAlign to ``Pc`` points of the
    context, each position's mean over its ``k`` nearest neighbours in feature space (self
    included, :func:`knn` of this module's input). Both use the same extended RoI.

    Memory at T = D = 100, C = 256, P = 32, Pc = 4, batch 16: matrices 144 MB; the plain
    output is 16 * 9216 * 1e4 = 1.47e9 values, 5.9 GB float32, kept for the next conv's
    backward and matched by its gradient (about 1.5e11 + 7.5e11 multiply-adds with a k1
    conv to 512). :meth:`align_and_project` gives that conv's output directly: largest
    intermediate 16 * 512 * 1e4 = 8.2e7 values (0.33 GB), about 3.0e11 multiply-adds.
    """

    def __init__(self, temporal_scale: int, max_duration: int, points: int = 32,
                 context_points: int = 4, k: int = 3, extension: float = 0.5) -> None:
        super().__init__()
        self.k = k
        self.features = RoIAlign1d(temporal_scale, max_duration, points, extension)
        self.context = RoIAlign1d(temporal_scale, max_duration, context_points, extension)

    def context_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of each position's k-NN features: ``(N, C, T) -> (N, C, T)``."""
        return gather_neighbours(x, knn(x, self.k)).mean(dim=-1)

    def out_channels(self, channels: int) -> int:
        return channels * (self.features.points + self.context.points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.features(x), self.context(self.context_features(x))], dim=1)

    def align_and_project(self, x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """``conv(self(x))`` for a 1x1 ``conv`` over :meth:`out_channels` channels, without
        the ``(N, C * (P + Pc), D, T)`` intermediate: ``(N, C, T) -> (N, O, D, T)``."""
        c = x.shape[1]
        p, pc = self.features.points, self.context.points
        if conv.kernel_size != (1, 1) or conv.in_channels != self.out_channels(c) \
                or conv.groups != 1:
            raise ConfigError(f"SGAlign: need an ungrouped 1x1 Conv2d over "
                              f"{self.out_channels(c)} channels, got kernel "
                              f"{conv.kernel_size}, {conv.in_channels} in, groups {conv.groups}")
        w = conv.weight[:, :, 0, 0]  # (O, C * (P + Pc))
        out = self.features.project(x, w[:, : c * p].reshape(-1, c, p))
        out = out + self.context.project(self.context_features(x),
                                         w[:, c * p:].reshape(-1, c, pc))
        if conv.bias is not None:
            out = out + conv.bias.to(out.dtype)[:, None, None]
        return out


def to_start_end(cells: torch.Tensor) -> torch.Tensor:
    """``[duration, start]`` map ``(..., D, T)`` -> ``[start, end]`` map ``(..., T, T)``;
    cells with ``end < start`` or ``end - start >= D`` are zero."""
    dd, t = cells.shape[-2:]
    s = torch.arange(t, device=cells.device)[:, None]
    e = torch.arange(t, device=cells.device)[None, :]
    d = e - s
    ok = (d >= 0) & (d < dd)
    out = cells[..., d.clamp(0, dd - 1), s.expand(t, t)]
    return torch.where(ok, out, torch.zeros((), dtype=out.dtype, device=out.device))


def to_duration_start(cells: torch.Tensor, max_duration: int) -> torch.Tensor:
    """``[start, end]`` map ``(..., T, T)`` -> ``[duration, start]`` map ``(..., D, T)``;
    anchors past the end (``s + d >= T``) are zero."""
    t = cells.shape[-1]
    d = torch.arange(max_duration, device=cells.device)[:, None]
    s = torch.arange(t, device=cells.device)[None, :]
    ok = valid_mask(t, max_duration, cells.device)
    out = cells[..., s.expand(max_duration, t), (s + d).clamp(max=t - 1)]
    return torch.where(ok, out, torch.zeros((), dtype=out.dtype, device=out.device))


# ------------------------------------------------------------------------------------ G-TAD


# GTADOutput: the shared record; this model's map is indexed [duration, start] (D, T).
GTADOutput = MapOutput


class BoundaryHead(nn.Sequential):
    """Start or end head: GCNeXt, 1x1 conv to one channel, sigmoid: ``(N, C, T) -> (N, 1, T)``."""

    def __init__(self, channels: int, k: int) -> None:
        super().__init__(GCNeXt(channels, k), nn.Conv1d(channels, 1, kernel_size=1),
                         nn.Sigmoid())


class MapHead(nn.Module):
    """2-D head over the ``(D, T)`` map: ``reduce`` (1x1 to 512) then ``body`` (ReLU, 1x1 to
    128, ReLU, two ``kernel_2d`` convs with ReLU, 1x1 to 2, sigmoid). ``reduce`` is apart so
    that :meth:`SGAlign.align_and_project` can fold it into the alignment."""

    def __init__(self, in_channels: int, kernel_2d: int = 1) -> None:
        super().__init__()
        if kernel_2d < 1 or kernel_2d % 2 == 0:
            raise ConfigError(f"G-TAD: kernel_2d must be odd (same-size map), got {kernel_2d}")
        wide, narrow = _MAP_HIDDEN
        pad = kernel_2d // 2
        self.reduce = nn.Conv2d(in_channels, wide, kernel_size=1)
        self.body = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(wide, narrow, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(narrow, narrow, kernel_size=kernel_2d, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(narrow, narrow, kernel_size=kernel_2d, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(narrow, 2, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.reduce(x))


class GTAD(nn.Module):
    """G-TAD: snippet features ``(N, feat_dim, T)`` -> :class:`GTADOutput`.

    stem (grouped k3 conv + ReLU) -> ``backbone1`` (GCNeXt) -> start/end heads; and
    ``backbone1`` -> ``backbone2`` (GCNeXt) -> ``align`` (SGAlign) -> ``map_head``.
    ``fused_align`` (default) computes SGAlign and the head's first 1x1 conv together
    (:meth:`SGAlign.align_and_project`): the same numbers up to float rounding, without the
    5.9 GB intermediate of batch 16 at T = D = 100 (measured on one H100, ANet preset, batch
    16, forward + backward in float32 without TF32: fused 1.3 GiB peak and 40 ms, plain
    17.5 GiB and 166 ms; THUMOS preset, batch 8, fused: 1.4 GiB, 47 ms). Use :meth:`anet` /
    :meth:`thumos` for the paper's sizes.
    """

    def __init__(self, feat_dim: int, temporal_scale: int = 100, max_duration: int = 100,
                 channels: int = 256, k: int = 3, roi_points: int = 32,
                 context_points: int = 4, kernel_2d: int = 1, *,
                 fused_align: bool = True) -> None:
        super().__init__()
        for name, value in (("feat_dim", feat_dim), ("channels", channels)):
            if value < _STEM_GROUPS or value % _STEM_GROUPS:
                raise ConfigError(f"G-TAD: {name} must be a positive multiple of "
                                  f"{_STEM_GROUPS} (grouped stem conv), got {value}")
        if not 1 <= k <= temporal_scale:
            raise ConfigError(f"G-TAD: k must be in [1, temporal_scale], got {k}")
        self.feat_dim = feat_dim
        self.temporal_scale = temporal_scale
        self.max_duration = max_duration
        self.fused_align = fused_align
        self.stem = nn.Sequential(
            nn.Conv1d(feat_dim, channels, kernel_size=3, padding=1, groups=_STEM_GROUPS),
            nn.ReLU(inplace=True),
        )
        self.backbone1 = GCNeXt(channels, k)
        self.start_head = BoundaryHead(channels, k)
        self.end_head = BoundaryHead(channels, k)
        self.backbone2 = GCNeXt(channels, k)
        self.align = SGAlign(temporal_scale, max_duration, roi_points, context_points, k)
        self.map_head = MapHead(self.align.out_channels(channels), kernel_2d)

    @classmethod
    def anet(cls, feat_dim: int = 400, **overrides: object) -> GTAD:
        """ActivityNet: T = 100, D = 100, 32 + 4 points, 1x1 2-D convs."""
        kwargs: dict = {"temporal_scale": 100, "max_duration": 100, "roi_points": 32,
                        "context_points": 4, "kernel_2d": 1, **overrides}
        return cls(feat_dim, **kwargs)

    @classmethod
    def thumos(cls, feat_dim: int = 2048, **overrides: object) -> GTAD:
        """THUMOS14: T = 256 (a window), D = 64, 16 + 4 points, 3x3 2-D convs."""
        kwargs: dict = {"temporal_scale": 256, "max_duration": 64, "roi_points": 16,
                        "context_points": 4, "kernel_2d": 3, **overrides}
        return cls(feat_dim, **kwargs)

    def forward(self, x: torch.Tensor) -> GTADOutput:
        """``(N, feat_dim, T)`` -> maps ``(N, 2, D, T)``, start/end ``(N, T)``."""
        if x.ndim != 3 or x.shape[1:] != (self.feat_dim, self.temporal_scale):
            raise ShapeError(f"G-TAD: expected features (N, {self.feat_dim}, "
                             f"{self.temporal_scale}), got {tuple(x.shape)}")
        base = self.backbone1(self.stem(x))
        start = self.start_head(base).squeeze(1)
        end = self.end_head(base).squeeze(1)
        graph = self.backbone2(base)
        if self.fused_align:
            reduced = self.align.align_and_project(graph, self.map_head.reduce)
            confidence = self.map_head.body(reduced)
        else:
            confidence = self.map_head(self.align(graph))
        return GTADOutput(confidence_map=confidence, start=start, end=end)
