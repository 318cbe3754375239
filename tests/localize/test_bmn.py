"""BMN: the boundary-matching sampling mask on hand-computed cells, the BM layer against a
direct interpolation, the network's shapes, parameters and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tspipe.errors import ConfigError, ShapeError
from tspipe.localize.bmn import (
    BMN,
    BMNOutput,
    BoundaryMatchingLayer,
    bm_sampling_mask,
    valid_mask,
)

SMALL = {"feat_dim": 8, "temporal_scale": 16, "hidden_1d": 16, "hidden_2d": 8,
         "hidden_3d": 12, "num_sample": 4, "num_sample_perbin": 2}


def test_mask_hand_computed_cells() -> None:
    # T = 4, S = 2 bins of 2 points, ratio 0.5: 4 points, linspace over the extended span.
    m = bm_sampling_mask(4, num_sample=2, num_sample_perbin=2, prop_boundary_ratio=0.5)
    assert m.shape == (4, 2, 4, 4) and m.dtype == torch.float32
    # Cell (1, 1): proposal [1, 2], L = 1, span [0.5, 2.5], points 0.5, 7/6, 11/6, 2.5.
    # bin 0: 0.5 -> 1/2 on 0, 1/2 on 1; 7/6 -> 5/6 on 1, 1/6 on 2; averaged:
    #        (1/4, 2/3, 1/12, 0).  bin 1: 11/6 -> 1/6 on 1, 5/6 on 2; 2.5 -> 1/2 on 2, 1/2 on 3:
    #        (0, 1/12, 2/3, 1/4).
    expected_11 = torch.tensor([[1 / 4, 0], [2 / 3, 1 / 12], [1 / 12, 2 / 3], [0, 1 / 4]])
    torch.testing.assert_close(m[:, :, 1, 1], expected_11, rtol=0, atol=1e-7)
    # bins fully inside the sequence sum to 1
    torch.testing.assert_close(m[:, :, 1, 1].sum(0), torch.ones(2), rtol=0, atol=1e-6)
    # Cell (0, 2): proposal [0, 3], L = 3, span [-1.5, 4.5], points -1.5, 0.5, 2.5, 4.5.
    # -1.5 (positions -2, -1) and 4.5 (4, 5) fall outside and are dropped; 0.5 -> 1/2 on 0
    # and 1; 2.5 -> 1/2 on 2 and 3; each halved by the bin average: bins sum to 1/2.
    expected_02 = torch.tensor([[1 / 4, 0], [1 / 4, 0], [0, 1 / 4], [0, 1 / 4]])
    torch.testing.assert_close(m[:, :, 0, 2], expected_02, rtol=0, atol=1e-7)
    # Cell (2, 1) is not a proposal (start > end): all zero; so is every s > e.
    assert not m[:, :, 2, 1].any()
    assert not m[..., ~valid_mask(4)].any()
    assert m[..., valid_mask(4)].sum(dim=0).gt(0).all()  # every valid bin samples something


def test_mask_bins_inside_the_sequence_sum_to_one() -> None:
    t, ratio = 20, 0.5
    m = bm_sampling_mask(t, num_sample=8, num_sample_perbin=3, prop_boundary_ratio=ratio)
    s, e = np.triu_indices(t)
    length = e + 1 - s
    inside = (s - ratio * length >= 0) & (e + 1 + ratio * length <= t - 1)
    sums = m.sum(dim=0)[:, s[inside], e[inside]]  # (bins, cells)
    assert inside.sum() > 20
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-5)
    outside = m.sum(dim=0)[:, s[~inside], e[~inside]]
    assert outside.max() <= 1 + 1e-6 and outside.min() < 0.99  # dropped weight shows


def test_valid_mask_is_the_upper_triangle() -> None:
    v = valid_mask(3)
    assert v.tolist() == [[True, True, True], [False, True, True], [False, False, True]]
    assert int(valid_mask(100).sum()) == 100 * 101 // 2


def test_mask_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="num_sample"):
        bm_sampling_mask(10, num_sample=0)
    with pytest.raises(ConfigError, match="feat_dim"):
        BMN(feat_dim=10)


def _reference_bm(x: torch.Tensor, n_bins: int, perbin: int, ratio: float) -> torch.Tensor:
    """Each cell's bins by direct linear interpolation of the features (hat functions
    max(0, 1 - |x - k|) over positions k = 0..T-1), one cell at a time."""
    n, c, t = x.shape
    out = torch.zeros(n, c, n_bins, t, t, dtype=torch.float64)
    positions = np.arange(t)
    for s in range(t):
        for e in range(s, t):
            length = e + 1 - s
            points = np.linspace(s - ratio * length, e + 1 + ratio * length, n_bins * perbin)
            hat = np.maximum(0.0, 1.0 - np.abs(points[:, None] - positions[None, :]))
            w = torch.from_numpy(hat.reshape(n_bins, perbin, t).mean(axis=1))  # (bins, T)
            out[:, :, :, s, e] = torch.einsum("nct,bt->ncb", x.double(), w)
    return out


def test_bm_layer_equals_direct_interpolation() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7)
    layer = BoundaryMatchingLayer(7, num_sample=3, num_sample_perbin=2, prop_boundary_ratio=0.5)
    got = layer(x)
    assert got.shape == (2, 3, 3, 7, 7)
    torch.testing.assert_close(got.double(), _reference_bm(x, 3, 2, 0.5), rtol=0, atol=1e-5)


def test_fused_projection_equals_layer_then_conv3d() -> None:
    torch.manual_seed(1)
    layer = BoundaryMatchingLayer(9, num_sample=4, num_sample_perbin=3)
    conv = nn.Conv3d(5, 6, kernel_size=(4, 1, 1), stride=(4, 1, 1))
    x = torch.randn(2, 5, 9)
    plain = conv(layer(x)).squeeze(2)
    fused = layer.sample_and_project(x, conv)
    assert fused.shape == (2, 6, 9, 9)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match="kernel"):
        layer.sample_and_project(x, nn.Conv3d(5, 6, kernel_size=(3, 1, 1)))


def test_mask_is_a_buffer_outside_checkpoints() -> None:
    net = BMN(**SMALL)
    assert "bm_layer.sample_mask" in dict(net.named_buffers())
    assert not any("sample_mask" in key for key in net.state_dict())
    assert net.double().bm_layer.sample_mask.dtype == torch.float64  # moves with the module


def test_forward_shapes_default_sizes() -> None:
    torch.manual_seed(0)
    net = BMN(feat_dim=400, temporal_scale=16)
    with torch.no_grad():
        out = net(torch.randn(2, 400, 16))
    assert isinstance(out, BMNOutput)
    assert out.confidence_map.shape == (2, 2, 16, 16)
    assert out.start.shape == (2, 16) and out.end.shape == (2, 16)
    assert out.reg_map.shape == out.cls_map.shape == (2, 16, 16)
    for t in out:
        assert float(t.min()) > 0 and float(t.max()) < 1  # sigmoids
    with pytest.raises(ShapeError, match=r"\(N, C, 16\)"):
        net(torch.randn(2, 400, 15))


def test_fused_and_plain_networks_agree() -> None:
    torch.manual_seed(2)
    net = BMN(**SMALL)
    x = torch.randn(2, 8, 16)
    fused = net(x)
    net.fused_bm = False
    plain = net(x)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_parameter_count_matches_hand_sum() -> None:
    # feat 8, hidden 1D 16 / 2D 8 / 3D 12, S = 4; weights + biases:
    base = (16 * 8 // 4 * 3 + 16) + (16 * 16 // 4 * 3 + 16)           # 112 + 208
    head = (16 * 16 // 4 * 3 + 16) + (16 * 1 + 1)                      # 208 + 17, twice
    pem_1d = 16 * 16 * 3 + 16                                          # 784
    pem_3d = 12 * 16 * 4 + 12                                          # 780
    pem_2d = (8 * 12 + 8) + 2 * (8 * 8 * 9 + 8) + (2 * 8 + 2)          # 104 + 1168 + 18
    expected = base + 2 * head + pem_1d + pem_3d + pem_2d
    assert expected == 3624
    assert sum(p.numel() for p in BMN(**SMALL).parameters()) == expected


def test_gradients_reach_every_parameter_and_the_input() -> None:
    torch.manual_seed(3)
    net = BMN(**SMALL)
    x = torch.randn(2, 8, 16, requires_grad=True)
    out = net(x)
    (out.confidence_map.sum() + out.start.sum() + out.end.sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    assert float(x.grad.abs().sum()) > 0


def test_forward_under_cpu_autocast() -> None:
    torch.manual_seed(4)
    net = BMN(**SMALL)
    x = torch.randn(2, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.confidence_map.dtype == torch.bfloat16
    torch.testing.assert_close(out.confidence_map.float(), net(x).confidence_map,
                               rtol=0, atol=0.03)
