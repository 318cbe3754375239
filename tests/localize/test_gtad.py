"""G-TAD parts: k-NN, GCNeXt, the 1-D RoIAlign matrix, SGAlign, the net and its presets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from tspipe.errors import ConfigError, ShapeError
from tspipe.localize.gcnext import GCNeXt, knn
from tspipe.localize.gtad import (
    GTAD,
    GTADOutput,
    RoIAlign1d,
    SGAlign,
    roi_align_matrix,
    to_duration_start,
    to_start_end,
    valid_mask,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Most tensors here are tiny: a second intra-op thread only adds sync cost, which grew a
    # 0.1 s test to 4 s when the 2-core test machine was shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ramp(t: int) -> torch.Tensor:
    """``(1, 1, T)`` features equal to position + 1 (non-zero at 0, so clamping shows)."""
    return (torch.arange(t, dtype=torch.float64) + 1).view(1, 1, t)


# ------------------------------------------------------------------------------------ knn


def test_knn_finds_feature_space_neighbours_self_first() -> None:
    # 2-D features; temporal order is shuffled so neighbours in time are not in feature space.
    pts = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 1.0], [10.0, 2.0], [0.0, 3.0],
                        [7.0, 0.0]])
    x = pts.T.unsqueeze(0)  # (1, 2, 6)
    idx = knn(x, 3)
    assert idx.shape == (1, 6, 3) and idx.dtype == torch.long
    # squared distances, e.g. from 0: to 2 = 1, to 4 = 9, to 5 = 49, to 1 = 100
    expected = [[0, 2, 4], [1, 3, 5], [2, 0, 4], [3, 1, 5], [4, 2, 0], [5, 1, 3]]
    assert idx[0].tolist() == expected


def test_knn_batched_and_duplicates_keep_self() -> None:
    # Video 0: all positions identical (every distance 0: self must still be first).
    # Video 1: a 1-D line, neighbours by |a - b|.
    x = torch.stack([torch.ones(1, 5), torch.tensor([[0.0, 1.0, 3.0, 6.0, 10.0]])])
    idx = knn(x, 2)
    assert idx[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert idx[1].tolist() == [[0, 1], [1, 0], [2, 1], [3, 2], [4, 3]]
    with pytest.raises(ConfigError):
        knn(x, 6)


# --------------------------------------------------------------------------------- GCNeXt


def test_gcnext_shape_and_identity_when_paths_are_zero() -> None:
    torch.manual_seed(0)
    block = GCNeXt()  # 256 channels, width 128
    x = torch.randn(2, 256, 10)
    y = block(x)
    assert y.shape == (2, 256, 10)
    assert (y >= 0).all() and not torch.allclose(y, torch.relu(x))
    with torch.no_grad():
        for p in [*block.temporal.parameters(), *block.semantic.parameters()]:
            p.zero_()
    assert torch.equal(block(x), torch.relu(x))


def test_gcnext_semantic_path_reads_only_the_knn() -> None:
    # Position 3's feature-space neighbours are 3 and 0 (k = 2): changing position 1 (close in
    # time, far in features) must not change position 3's semantic output.
    torch.manual_seed(0)
    block = GCNeXt(channels=4, k=2, groups=2, width_per_group=2)
    x = torch.tensor([[0.0, 50.0, 90.0, 0.5, 30.0]]).repeat(4, 1).unsqueeze(0)
    out = block.semantic(x)
    x2 = x.clone()
    x2[..., 1] = 60.0
    assert torch.allclose(block.semantic(x2)[..., 3], out[..., 3])
    x3 = x.clone()
    x3[..., 0] = 1.0  # position 0 is a neighbour of 3: its output moves
    assert not torch.allclose(block.semantic(x3)[..., 3], out[..., 3])


# ------------------------------------------------------------------------------- RoIAlign


def test_roi_align_on_a_ramp_gives_the_interpolated_positions() -> None:
    t, d, p = 16, 8, 4
    align = RoIAlign1d(t, d, p).double()
    out = align(_ramp(t)).view(p, d, t)  # [bin, duration, start]; ramp value = position + 1
    # Cell (d=3, s=6): anchor [6, 9], extended by 0.5 * 4 = 2 -> RoI [4, 11], width 7,
    # bins of 1.75, ceil(1.75) = 2 samples each at 4 + 1.75 p + {0.4375, 1.3125}; the mean of
    # a ramp is its value at the bin centre 4.875 + 1.75 p -> 4.875, 6.625, 8.375, 10.125.
    assert out[:, 3, 6].tolist() == [5.875, 7.625, 9.375, 11.125]
    # Cell (d=1, s=0): RoI [-1, 2], bins of 0.75, one sample each at -0.625, 0.125, 0.875,
    # 1.625; -0.625 lies in [-1, 0) so it reads position 0 (value 1).
    assert out[:, 1, 0].tolist() == [1.0, 1.125, 1.875, 2.625]
    # Cell (d=1, s=14): RoI [13, 16]: 13.375, 14.125, 14.875, 15.625; the last is past
    # T - 1 = 15 so it reads position 15 (value 16).
    assert out[:, 1, 14].tolist() == [14.375, 15.125, 15.875, 16.0]
    # Cell (d=7, s=0): RoI [-4, 11], bins of 3.75, 4 samples; bin 0's samples at -3.53,
    # -2.59, -1.66 lie beyond -1 (zero), -0.72 reads position 0: (0 + 0 + 0 + 1) / 4.
    assert out[0, 7, 0].item() == 0.25
    # Cells past the end are zero: (d=2, s=14) ends at 16 >= T.
    assert (out[:, 2, 14] == 0).all() and (out[:, 7, 9:] == 0).all()


def test_roi_align_matrix_rows_sum_to_one_inside() -> None:
    # Each bin's weights are an average of samples, so they sum to 1 when no sample falls
    # beyond [-1, T], and never more.
    m = roi_align_matrix(20, 10, 8)
    sums = m.sum(dim=0)  # (P, D, T)
    assert sums.max().item() <= 1 + 1e-6
    assert torch.allclose(sums[:, 2, 5], torch.ones(8))  # RoI [3.5, 8.5]: inside
    assert (sums[:, ~valid_mask(20, 10)] == 0).all()


def test_valid_mask() -> None:
    mask = valid_mask(6, 4)
    assert mask.shape == (4, 6)
    assert mask.sum().item() == 6 + 5 + 4 + 3
    assert mask[0].all() and mask[3].tolist() == [True, True, True, False, False, False]


def test_map_conversions_round_trip() -> None:
    cells = torch.arange(1, 4 * 6 + 1, dtype=torch.float32).view(4, 6) * valid_mask(6, 4)
    se = to_start_end(cells)
    assert se.shape == (6, 6)
    assert se[2, 5].item() == cells[3, 2].item()  # start 2, end 5: duration index 3
    assert se[1, 0].item() == 0 and se[0, 5].item() == 0  # end < start; too long for D = 4
    assert torch.equal(to_duration_start(se, 4), cells)
    assert torch.equal(to_start_end(valid_mask(6, 4)), torch.ones(6, 6, dtype=torch.bool)
                       .triu() & ~torch.ones(6, 6, dtype=torch.bool).triu(4))


# -------------------------------------------------------------------------------- SGAlign


def test_sgalign_channels_and_context() -> None:
    t, d = 8, 4
    align = SGAlign(t, d, points=2, context_points=1, k=2).double()
    sq = torch.arange(t, dtype=torch.float64) ** 2
    x = torch.stack([sq, 2 * sq]).unsqueeze(0)  # (1, 2, T): values t^2 and 2 t^2
    out = align(x)
    assert out.shape == (1, 2 * (2 + 1), d, t)
    # On t^2 the nearest other position is t - 1 (gap 2t - 1 < 2t + 1), so with k = 2 the
    # context at 3 is (9 + 4) / 2 = 6.5 (channel 1: 13), at 0 it is (0 + 1) / 2.
    ctx = align.context_features(x)
    assert ctx[0, 0, :4].tolist() == [0.5, 0.5, 2.5, 6.5]
    # Cell (d=0, s=3): RoI [2.5, 3.5], width 1. Features: 2 bins of 0.5, one sample each at
    # 2.75 -> 4 + 0.75 * 5 = 7.75 and 3.25 -> 9 + 0.25 * 7 = 10.75 (channel c * P + p).
    # Context: 1 bin, one sample at 3.0 -> channels C * P + c = 4, 5.
    assert out[0, :, 0, 3].tolist() == [7.75, 10.75, 15.5, 21.5, 6.5, 13.0]
    assert out[0, :, 3, 5:].abs().sum().item() == 0  # invalid cells: 5 + 3 >= 8


def test_fused_align_matches_plain() -> None:
    torch.manual_seed(0)
    align = SGAlign(12, 6, points=4, context_points=2, k=3).double()
    conv = nn.Conv2d(align.out_channels(5), 7, kernel_size=1).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    assert torch.allclose(align.align_and_project(x, conv), conv(align(x)), atol=1e-12)


# ---------------------------------------------------------------------------------- G-TAD


def _small(**kwargs: object) -> GTAD:
    return GTAD(feat_dim=8, temporal_scale=16, max_duration=8, channels=32, roi_points=4,
                context_points=2, **kwargs)


def test_gtad_small_shapes_and_fused_equals_plain() -> None:
    torch.manual_seed(0)
    model = _small()
    x = torch.randn(2, 8, 16)
    out = model(x)
    assert isinstance(out, GTADOutput)
    assert out.confidence_map.shape == (2, 2, 8, 16)
    assert out.start.shape == out.end.shape == (2, 16)
    assert out.reg_map.shape == out.cls_map.shape == (2, 8, 16)
    for tensor in out:
        assert ((tensor > 0) & (tensor < 1)).all()
    model.fused_align = False
    assert torch.allclose(model(x).confidence_map, out.confidence_map, atol=1e-5)
    with pytest.raises(ShapeError, match=r"\(N, 8, 16\)"):
        model(torch.randn(2, 8, 15))


def test_gtad_gradients_reach_the_stem() -> None:
    torch.manual_seed(0)
    model = _small()
    out = model(torch.randn(2, 8, 16))
    (out.confidence_map.sum() + out.start.sum() + out.end.sum()).backward()
    grad = model.stem[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    map_only = _small()
    map_only(torch.randn(1, 8, 16)).confidence_map.sum().backward()
    assert map_only.stem[0].weight.grad.abs().sum() > 0  # through SGAlign, not the heads


def test_anet_preset_runs() -> None:
    torch.manual_seed(0)
    model = GTAD.anet().eval()
    assert model.align.out_channels(256) == 256 * 36
    with torch.no_grad():
        out = model(torch.randn(1, 400, 100))
    assert out.confidence_map.shape == (1, 2, 100, 100)
    assert out.start.shape == (1, 100)
    assert ((out.confidence_map >= 0) & (out.confidence_map <= 1)).all()
    assert not any(key.endswith("matrix") for key in model.state_dict())  # not checkpointed


def test_thumos_preset_map_shape() -> None:
    model = GTAD.thumos().eval()
    assert model.map_head.body[3].kernel_size == (3, 3)
    assert model.align.features.matrix.shape == (256, 16, 64, 256)
    # Shapes only: on the meta device the forward allocates and computes nothing (a real
    # one costs 3.4e10 multiply-adds, seconds on a CPU).
    out = model.to("meta")(torch.empty(1, 2048, 256, device="meta"))
    assert out.confidence_map.shape == (1, 2, 64, 256)
    assert out.start.shape == out.end.shape == (1, 256)
    assert valid_mask(256, 64).shape == (64, 256)
