"""InceptionI3d against the port's facts (shared/reference/i3d.md and the key layouts)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tspipe.errors import ConfigError
from tspipe.models.i3d import (
    ENDPOINTS,
    InceptionI3d,
    MaxPool3dSame,
    Unit3D,
    i3d,
    i3d_flow,
    i3d_tiny,
    normalize_flow,
    normalize_rgb,
    same_pad,
)
from tspipe.models.spec import InputSpec

# The reference key lists live beside the project (shared/reference); the layout tests
# below also derive the same list by hand from i3d.md's width table.


@torch.no_grad()
def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine and running statistics, so eval-mode BN is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3),
                              (m.running_mean, -0.3, 0.3), (m.running_var, 0.5, 2.0)):
                t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model.eval()


# ---- state_dict layout, parameter counts, BN settings ------------------------------------

# Hand-written from i3d.md: (in, [b0, b1a, b1b, b2a, b2b, b3b]) per Mixed block.
MIXED = {
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]), "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]), "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]), "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


def _unit(name, cin, cout, k):
    yield f"{name}.conv3d.weight", [cout, cin, k, k, k]
    for field in ("weight", "bias", "running_mean", "running_var"):
        yield f"{name}.bn.{field}", [cout]
    yield f"{name}.bn.num_batches_tracked", []


def _expected_layout(in_channels: int, classes: int | None) -> list[tuple[str, list[int]]]:
    """The port's keys in its order (logits first), derived from the width table."""
    keys = []
    if classes is not None:
        keys += [("logits.conv3d.weight", [classes, 1024, 1, 1, 1]),
                 ("logits.conv3d.bias", [classes])]
    keys += _unit("Conv3d_1a_7x7", in_channels, 64, 7)
    keys += _unit("Conv3d_2b_1x1", 64, 64, 1)
    keys += _unit("Conv3d_2c_3x3", 64, 192, 3)
    for name, (cin, (w0, w1a, w1b, w2a, w2b, w3b)) in MIXED.items():
        keys += _unit(f"{name}.b0", cin, w0, 1)
        keys += _unit(f"{name}.b1a", cin, w1a, 1)
        keys += _unit(f"{name}.b1b", w1a, w1b, 3)
        keys += _unit(f"{name}.b2a", cin, w2a, 1)
        keys += _unit(f"{name}.b2b", w2a, w2b, 3)
        keys += _unit(f"{name}.b3b", cin, w3b, 1)
    return keys


def _layout(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(key, list(t.shape)) for key, t in model.state_dict().items()]


@pytest.mark.parametrize(("builder", "channels"), [(i3d, 3), (i3d_flow, 2)])
def test_state_dict_equals_the_port_layout_in_order(builder, channels):
    expected = _expected_layout(channels, 400)
    assert len(expected) == 344
    assert _layout(builder(400)) == expected  # keys, shapes and the port's order


@pytest.mark.parametrize(("layout", "builder"), [("i3d_rgb", i3d), ("i3d_flow", i3d_flow)])
def test_state_dict_equals_the_reference_json(layout, builder, shared_data):
    path = shared_data.parent / "reference" / "i3d_state_dict_layouts.json"
    expected = [(key, list(shape)) for key, shape in json.loads(path.read_text())[layout]]
    got = _layout(builder(400))
    assert dict(got) == dict(expected)
    assert got == expected


def test_without_classes_there_are_no_logits_keys():
    assert _layout(i3d(None)) == _expected_layout(3, None)
    assert len(_expected_layout(3, None)) == 342


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_equal_the_reference():
    rgb, flow = i3d(400), i3d_flow(400)
    assert _n_params(rgb) == 12_697_264
    assert _n_params(flow) == 12_675_312
    assert _n_params(rgb.logits) == 410_000  # 1024 * 400 + 400
    assert _n_params(i3d(None)) == 12_697_264 - 410_000
    assert sum(b.numel() for b in rgb.buffers()) == 14_617  # 57 BN units' buffers


def test_batch_norm_and_bias_settings():
    model = i3d(400)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(bns) == 57
    assert all(bn.eps == 1e-3 and bn.momentum == 0.01 and bn.affine for bn in bns)
    units = {name: m for name, m in model.named_modules() if isinstance(m, Unit3D)}
    assert len(units) == 58
    for name, unit in units.items():
        if name == "logits":
            assert unit.conv3d.bias is not None and unit.bn is None and not unit.activation
            assert unit.conv3d.kernel_size == (1, 1, 1)
        else:
            assert unit.conv3d.bias is None and unit.bn is not None and unit.activation
        assert unit.conv3d.padding == (0, 0, 0)


def test_released_files_without_num_batches_tracked_load_strictly():
    # The port's .pt files date from PyTorch 0.3/0.4 and lack num_batches_tracked.
    old = {k: v for k, v in i3d(400).state_dict().items()
           if not k.endswith("num_batches_tracked")}
    assert len(old) == 344 - 57
    i3d(400).load_state_dict(old, strict=True)


# ---- SAME padding ------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    (16, 7, 2, (2, 3)),    # i3d.md: 16 frames into Conv3d_1a: pad 5, 2 front 3 back
    (224, 7, 2, (2, 3)),
    (25, 3, 2, (1, 1)),    # i3d.md: odd size 25 into MaxPool3d_4a: pad 2, out 13
    (56, 3, 2, (0, 1)),    # even size, k3 s2: pad 1, the odd element at the end
    (15, 7, 2, (3, 3)),    # odd size: k - s % st = 6
    (7, 2, 2, (0, 1)),     # MaxPool3d_5a on 7: out 4
    (8, 2, 2, (0, 0)),
    (8, 3, 1, (1, 1)),
    (8, 1, 1, (0, 0)),
])
def test_same_pad_hand_computed(size, kernel, stride, pads):
    assert same_pad(size, kernel, stride) == pads
    assert (size + sum(pads) - kernel) // stride + 1 == math.ceil(size / stride)


def test_odd_size_into_maxpool_4a_pads_one_each_side():
    pool = MaxPool3dSame(kernel_size=(3, 3, 3), stride=(2, 2, 2))
    x = torch.rand(1, 2, 25, 25, 25)
    out = pool(x)
    assert out.shape == (1, 2, 13, 13, 13)
    expected = F.max_pool3d(F.pad(x, (1, 1, 1, 1, 1, 1)), 3, 2)
    assert torch.equal(out, expected)


def test_conv1a_pads_two_front_three_back():
    unit = Unit3D(1, 1, 7, 2, batch_norm=False, activation=False)
    x = torch.randn(1, 1, 16, 16, 16)
    expected = F.conv3d(F.pad(x, (2, 3, 2, 3, 2, 3)), unit.conv3d.weight, stride=2)
    out = unit(x)
    assert out.shape == (1, 1, 8, 8, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_zero_padded_max_pool_equals_pooling_that_ignores_padding():
    x = torch.relu(torch.randn(1, 3, 5, 9, 9))  # pool inputs are post-ReLU in I3D
    ignore_pad = F.max_pool3d(F.pad(x, (1, 1, 1, 1, 1, 1), value=-math.inf), 3, 1)
    assert torch.equal(MaxPool3dSame(3, 1)(x), ignore_pad)


# (channels, T, H, W) by hand from i3d.md's table: a 16x224x224 clip.
SHAPES_224 = {
    "Conv3d_1a_7x7": (64, 8, 112, 112), "MaxPool3d_2a_3x3": (64, 8, 56, 56),
    "Conv3d_2b_1x1": (64, 8, 56, 56), "Conv3d_2c_3x3": (192, 8, 56, 56),
    "MaxPool3d_3a_3x3": (192, 8, 28, 28), "Mixed_3b": (256, 8, 28, 28),
    "Mixed_3c": (480, 8, 28, 28), "MaxPool3d_4a_3x3": (480, 4, 14, 14),
    "Mixed_4b": (512, 4, 14, 14), "Mixed_4c": (512, 4, 14, 14), "Mixed_4d": (512, 4, 14, 14),
    "Mixed_4e": (528, 4, 14, 14), "Mixed_4f": (832, 4, 14, 14),
    "MaxPool3d_5a_2x2": (832, 2, 7, 7), "Mixed_5b": (832, 2, 7, 7),
    "Mixed_5c": (1024, 2, 7, 7),
}
# 16x112x112: every H, W halves, except 7 -> ceil(7 / 2) = 4 at MaxPool3d_5a (pad 0 front, 1 back).
SHAPES_112 = {name: (c, t, 4 if h == 7 else h // 2, 4 if w == 7 else w // 2)
              for name, (c, t, h, w) in SHAPES_224.items()}


@pytest.mark.slow  # the one full-size CPU forward (~1.5 s on 2 cores)
@torch.no_grad()
def test_endpoint_shapes_for_a_16x224x224_clip():
    model = i3d(400).eval()
    ends = model.forward_endpoints(torch.randn(1, 3, 16, 224, 224))
    assert list(ends) == list(ENDPOINTS)
    assert {name: tuple(t.shape[1:]) for name, t in ends.items()} == SHAPES_224
    pooled = model.avg_pool(ends["Mixed_5c"])
    assert pooled.shape == (1, 1024, 1, 1, 1)  # T' = 1: one 1024-d vector per clip
    assert model.logits(pooled).shape == (1, 400, 1, 1, 1)


@torch.no_grad()
def test_endpoint_shapes_for_a_16x112x112_clip():
    assert SHAPES_112["Conv3d_1a_7x7"] == (64, 8, 56, 56)
    assert SHAPES_112["Mixed_5c"] == (1024, 2, 4, 4)
    ends = i3d(None).eval().forward_endpoints(torch.randn(1, 3, 16, 112, 112))
    assert {name: tuple(t.shape[1:]) for name, t in ends.items()} == SHAPES_112


@torch.no_grad()
def test_odd_sizes_follow_ceil_at_every_stride():
    # 25 x 200 x 200: T 25 -> 13 (conv1) -> 7 (pool 4a) -> 4 (pool 5a);
    # H 200 -> 100 -> 50 -> 25 -> 13 (pool 4a: the odd 25 of i3d.md) -> 7.
    ends = i3d_tiny().eval().forward_endpoints(torch.randn(1, 3, 25, 200, 200))
    thw = {name: tuple(t.shape[2:]) for name, t in ends.items()}
    assert thw["Conv3d_1a_7x7"] == (13, 100, 100)
    assert thw["MaxPool3d_3a_3x3"] == (13, 25, 25)
    assert thw["MaxPool3d_4a_3x3"] == (7, 13, 13)
    assert thw["Mixed_5c"] == (4, 7, 7)


# ---- reference behaviour: an independent functional re-implementation -------------------

def _tf_pad(x, kernel, stride):
    """TF's SAME rule: total = max((ceil(s / st) - 1) * st + k - s, 0), the odd one at the end."""
    pads = []
    for size, k, st in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        total = max((math.ceil(size / st) - 1) * st + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _ref_unit(x, unit, kernel, stride=(1, 1, 1)):
    y = F.conv3d(_tf_pad(x, kernel, stride), unit.conv3d.weight, None, stride)
    bn = unit.bn
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                     training=False, eps=1e-3)
    return F.relu(y)


def _ref_mixed(x, block):
    one, three = (1, 1, 1), (3, 3, 3)
    pooled = F.max_pool3d(_tf_pad(x, three, one), three, one)
    return torch.cat([
        _ref_unit(x, block.b0, one),
        _ref_unit(_ref_unit(x, block.b1a, one), block.b1b, three),
        _ref_unit(_ref_unit(x, block.b2a, one), block.b2b, three),
        _ref_unit(pooled, block.b3b, one),
    ], dim=1)


@torch.no_grad()
def test_unit_and_mixed_block_equal_a_functional_reimplementation():
    model = _randomize_bn(i3d(None))
    x = torch.randn(2, 3, 9, 15, 15)  # odd sizes: uneven SAME padding in every dim
    torch.testing.assert_close(model.Conv3d_1a_7x7(x),
                               _ref_unit(x, model.Conv3d_1a_7x7, (7, 7, 7), (2, 2, 2)))
    h = torch.randn(2, 192, 5, 9, 9)
    out = model.Mixed_3b(h)
    assert out.shape == (2, 256, 5, 9, 9)
    torch.testing.assert_close(out, _ref_mixed(h, model.Mixed_3b))
    h = torch.randn(1, 832, 2, 7, 7)
    torch.testing.assert_close(model.Mixed_5c(h), _ref_mixed(h, model.Mixed_5c))


# ---- forward, features, logits, flow -----------------------------------------------------

@pytest.mark.slow  # four full-width forwards at 112 x 112 (~3-8 s on 2 CPU cores)
@torch.no_grad()
def test_forward_features_logits_and_flow_at_112():
    rgb = _randomize_bn(i3d(400, input_size=112))
    flow = _randomize_bn(i3d_flow(400, input_size=112))
    assert rgb.avg_pool.kernel_size == (2, 4, 4)
    x = torch.rand(2, 3, 16, 112, 112) * 2 - 1
    feats = rgb.forward_features(x)
    assert feats.shape == (2, 1024)
    per_time = rgb.forward_per_time(x)
    assert per_time.shape == (2, 400, 1)
    clip_logits = rgb(x)
    torch.testing.assert_close(clip_logits, per_time[:, :, 0])
    # The logits unit is linear: the clip logits are the logits of the clip feature.
    from_feats = F.linear(feats, rgb.logits.conv3d.weight.flatten(1), rgb.logits.conv3d.bias)
    torch.testing.assert_close(clip_logits, from_feats, atol=1e-4, rtol=1e-4)
    f = torch.rand(1, 2, 16, 112, 112) * 2 - 1
    assert flow(f).shape == (1, 400)
    assert flow.feature_dim == 1024
    with pytest.raises(RuntimeError):
        flow(torch.zeros(1, 3, 16, 112, 112))


@torch.no_grad()
def test_longer_clips_average_per_time_outputs():
    model = _randomize_bn(i3d_tiny(7))
    x = torch.rand(1, 3, 32, 64, 64) * 2 - 1  # T5 = 4 -> T' = 3 avg-pool positions
    pooled = model.avg_pool(model.forward_endpoints(x, ["Mixed_5c"])["Mixed_5c"])
    assert pooled.shape == (1, 128, 3, 1, 1)
    torch.testing.assert_close(model.forward_features(x), pooled.mean(dim=(2, 3, 4)))
    per_time = model.forward_per_time(x)
    assert per_time.shape == (1, 7, 3)
    torch.testing.assert_close(model(x), per_time.mean(dim=2))


@torch.no_grad()
def test_feature_encoder_without_classes():
    model = i3d_tiny(None).eval()
    x = torch.rand(2, 3, 16, 64, 64)
    torch.testing.assert_close(model(x), model.forward_features(x))
    with pytest.raises(ConfigError, match="num_classes=None"):
        model.forward_per_time(x)
    model.replace_logits(5)
    assert model(x).shape == (2, 5)
    assert "logits.conv3d.bias" in model.state_dict()


def test_tiny_member():
    model = i3d_tiny()
    assert _n_params(model) == 200_784
    assert model.feature_dim == 128
    assert model.avg_pool.kernel_size == (2, 2, 2)
    assert list(model.state_dict()) == [key for key, _ in _expected_layout(3, None)]
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 16, 64, 64)).shape == (2, 128)


def test_final_endpoint_truncates_the_trunk():
    model = i3d(None, final_endpoint="Mixed_4f")
    assert model.endpoints[-1] == "Mixed_4f"
    assert model.feature_dim == 832
    assert model.avg_pool.kernel_size == (2, 14, 14)
    assert not any(k.startswith(("Mixed_5", "logits")) for k in model.state_dict())
    with pytest.raises(ConfigError, match="final_endpoint"):
        InceptionI3d(final_endpoint="Logits")
    with pytest.raises(ConfigError, match="width_divisor"):
        InceptionI3d(width_divisor=3)
    with pytest.raises(ConfigError, match="unknown endpoints"):
        model.forward_endpoints(torch.zeros(1, 3, 16, 32, 32), ["Mixed_5c"])


def test_input_spec_and_normalization():
    assert i3d().input_spec == InputSpec(frames=16, size=224, mean=(0.5,) * 3, std=(0.5,) * 3,
                                         value_range=(0.0, 1.0), channels=3, flow_clip=None)
    assert i3d_flow().input_spec == InputSpec(16, 224, (0.0, 0.0), (20.0, 20.0),
                                              (-20.0, 20.0), 2, 20.0)
    assert i3d_tiny().input_spec.size == 64
    pixels = torch.tensor([0, 127.5, 255])
    torch.testing.assert_close(normalize_rgb(pixels), torch.tensor([-1.0, 0.0, 1.0]))
    assert normalize_rgb(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
    # the shared InputSpec gives the same numbers: RGB on [0, 1] -> [-1, 1], flow / 20
    clip = torch.tensor([0, 127.5, 255]).view(1, 1, 3, 1, 1).expand(1, 3, 3, 1, 1) / 255
    torch.testing.assert_close(i3d().input_spec.normalize(clip)[0, :, :, 0, 0],
                               torch.tensor([[-1.0, 0.0, 1.0]] * 3))
    flow = torch.tensor([-30.0, -10.0, 0.0, 25.0]).view(1, 1, 4, 1, 1).expand(1, 2, 4, 1, 1)
    torch.testing.assert_close(i3d_flow().input_spec.normalize(flow)[0, 0, :, 0, 0],
                               torch.tensor([-1.0, -0.5, 0.0, 1.0]))
    flow = torch.tensor([-35.0, -20.0, 10.0, 25.0])
    torch.testing.assert_close(normalize_flow(flow), torch.tensor([-1.0, -1.0, 0.5, 1.0]))
