"""The video ResNet family against the official state_dict layouts, hand-computed shapes and
a functional re-implementation of its parts."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tspipe.errors import ConfigError
from tspipe.models import video_resnet as vr
from tspipe.models.video_resnet import (
    KINETICS_MEAN,
    KINETICS_STD,
    BasicBlock,
    BasicStem,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
    InputSpec,
    R2Plus1dStem,
    VideoResNet,
)

FULL = ["r3d_18", "mc3_18", "r2plus1d_18", "r2plus1d_34"]
# Measured (parameters, not buffers), 400-way fc; torchvision documents r3d_18 33.4M,
# mc3_18 11.7M, r2plus1d_18 31.5M; checkpoints.md says 63.7M for r2plus1d_34.
PARAMS_400 = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325,
              "r2plus1d_34": 63_697_175}


@pytest.fixture(scope="module")
def layouts(shared_data):
    path = shared_data.parent / "reference" / "video_resnet_state_dict_layouts.json"
    return json.loads(path.read_text())


def build_meta(name: str, **kwargs) -> VideoResNet:
    """Shapes, keys and hyper-parameters without allocating or initializing weights."""
    with torch.device("meta"):
        return getattr(vr, name)(**kwargs)


@pytest.fixture(scope="module")
def r2plus1d_34_model():
    torch.manual_seed(0)
    return vr.r2plus1d_34(num_classes=400).eval()


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("name", FULL)
def test_state_dict_keys_and_shapes_match_official_layout_in_order(name, layouts):
    model = build_meta(name, num_classes=400)
    got = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert got == layouts[name]


@pytest.mark.parametrize("name", FULL)
def test_parameter_counts(name):
    model = build_meta(name, num_classes=400)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_400[name]


def test_r2plus1d_34_is_63_7m_parameters():
    model = build_meta("r2plus1d_34", num_classes=400)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 63.7


@pytest.mark.parametrize(("inp", "out", "mid"), [
    (64, 64, 144), (64, 128, 230), (128, 128, 288), (128, 256, 460), (256, 256, 576),
    (256, 512, 921), (512, 512, 1152),
])
def test_midplanes_by_hand(inp, out, mid):
    # (in * out * 27) // (in * 9 + 3 * out), e.g. 64*128*27 = 221184, / 960 = 230.4
    assert vr.midplanes(inp, out) == mid


def test_mid_rule_block_vs_conv_differs_only_in_conv2_of_a_widening_block():
    mid = {}
    for rule in ("block", "conv"):
        block = BasicBlock(64, 128, Conv2Plus1D, stride=2, mid_rule=rule)
        mid[rule] = (block.conv1[0][0].out_channels, block.conv2[0][0].out_channels)
    assert mid == {"block": (230, 230), "conv": (230, 288)}
    with pytest.raises(ConfigError, match="mid_rule"):
        BasicBlock(64, 128, Conv2Plus1D, mid_rule="layer")


@pytest.mark.parametrize(("name", "eps", "momentum"), [
    ("r3d_18", 1e-5, 0.1), ("mc3_18", 1e-5, 0.1), ("r2plus1d_18", 1e-5, 0.1),
    ("r2plus1d_34", 1e-3, 0.9), ("r2plus1d_tiny", 1e-3, 0.9), ("r3d_tiny", 1e-5, 0.1),
])
def test_every_batchnorm_eps_and_momentum(name, eps, momentum):
    bns = [m for m in build_meta(name).modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns
    assert {m.eps for m in bns} == {eps}
    assert {m.momentum for m in bns} == {momentum}


def test_eps_changes_eval_outputs_and_momentum_does_not():
    torch.manual_seed(0)
    ref = vr.r2plus1d_tiny(num_classes=None)
    with torch.no_grad():  # small running variances (as trained nets have), scale kept by
        for m in ref.modules():  # gamma = sqrt(var) so activations stay finite
            if isinstance(m, nn.BatchNorm3d):
                m.running_var.uniform_(1e-4, 1e-2)
                m.weight.copy_(m.running_var.sqrt())
    outs = {}
    for eps, momentum in [(1e-3, 0.9), (1e-5, 0.9), (1e-3, 0.1)]:
        model = vr.r2plus1d_tiny(num_classes=None, bn_eps=eps, bn_momentum=momentum)
        model.load_state_dict(ref.state_dict())
        x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            outs[eps, momentum] = model.eval()(x)
    assert torch.equal(outs[1e-3, 0.9], outs[1e-3, 0.1])
    assert torch.isfinite(outs[1e-3, 0.9]).all()
    rel = (outs[1e-3, 0.9] - outs[1e-5, 0.9]).norm() / outs[1e-3, 0.9].norm()
    assert rel > 0.05


# ------------------------------------------------------------------------ output shapes

# Input (1, 3, 7, 57, 57). By hand, out = floor((n + 2p - k) / s) + 1:
# stem: T (7 + 2 - 3) / 1 + 1 = 7 (R(2+1)D: 1x7x7 keeps T, then 3x1x1 pad 1 keeps 7);
#       H (57 + 6 - 7) // 2 + 1 = 29.
# layer1: stride 1, unchanged. layers 2-4, k 3 p 1 s 2 -> (n - 1) // 2 + 1:
#       T 7 -> 4 -> 2 -> 1, H 29 -> 15 -> 8 -> 4. (2+1)D: spatial then temporal stride, same.
# MC3 layers 2-4 stride (1, 2, 2): T stays 7.
SHAPES_3D = [(64, 7, 29, 29), (64, 7, 29, 29), (128, 4, 15, 15), (256, 2, 8, 8),
             (512, 1, 4, 4)]
SHAPES_MC3 = [(64, 7, 29, 29), (64, 7, 29, 29), (128, 7, 15, 15), (256, 7, 8, 8),
              (512, 7, 4, 4)]


def _stage_shapes_and_features(model: VideoResNet, x: torch.Tensor):
    """One pass of forward_features, recording (C, T, H, W) after the stem and each layer."""
    shapes: list[tuple[int, ...]] = []
    parts = (model.stem, model.layer1, model.layer2, model.layer3, model.layer4)
    hooks = [p.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
             for p in parts]
    try:
        with torch.no_grad():
            features = model.forward_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes, features


@pytest.mark.parametrize(("name", "expected"), [
    ("r3d_18", SHAPES_3D), ("mc3_18", SHAPES_MC3), ("r2plus1d_18", SHAPES_3D),
])
def test_odd_input_sizes_through_each_stage(name, expected):
    torch.manual_seed(0)
    model = getattr(vr, name)(num_classes=400).eval()
    shapes, features = _stage_shapes_and_features(model, torch.randn(1, 3, 7, 57, 57))
    assert shapes == expected
    assert features.shape == (1, 512)
    assert model.fc(features).shape == (1, 400)


@pytest.mark.slow  # 2-3.5 s on 2 CPU cores: one 7x57x57 pass through 63.7M parameters
def test_r2plus1d_34_odd_sizes_and_features(r2plus1d_34_model):
    shapes, features = _stage_shapes_and_features(r2plus1d_34_model,
                                                  torch.randn(1, 3, 7, 57, 57))
    assert shapes == SHAPES_3D
    assert features.shape == (1, 512)
    x = torch.randn(2, 3, 2, 16, 16)
    with torch.no_grad():
        logits = r2plus1d_34_model(x)
        assert logits.shape == (2, 400)
        assert torch.allclose(logits, r2plus1d_34_model.fc(r2plus1d_34_model.forward_features(x)))


def test_without_classifier_no_fc_keys_and_forward_returns_features():
    torch.manual_seed(0)
    model = vr.r3d_18(num_classes=None).eval()
    assert model.fc is None
    assert not [k for k in model.state_dict() if k.startswith("fc")]
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 512)
        assert torch.equal(out, model.forward_features(x))
    assert model.feature_dim == 512


def test_features_are_global_average_of_layer4():
    torch.manual_seed(0)
    model = vr.r2plus1d_tiny().eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        layer4 = model.layer4(model.layer3(model.layer2(model.layer1(model.stem(x)))))
        assert torch.allclose(model.forward_features(x), layer4.mean(dim=(2, 3, 4)), atol=1e-6)


# ------------------------------------------------------- functional re-implementation


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _bn(x: torch.Tensor, bn: nn.BatchNorm3d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        training=False, eps=bn.eps)


def _conv_maker_ref(x: torch.Tensor, maker: nn.Module, stride: int) -> torch.Tensor:
    s = stride
    if isinstance(maker, Conv2Plus1D):
        spatial, bn, _, temporal = maker
        x = F.relu(_bn(F.conv3d(x, spatial.weight, stride=(1, s, s), padding=(0, 1, 1)), bn))
        return F.conv3d(x, temporal.weight, stride=(s, 1, 1), padding=(1, 0, 0))
    if isinstance(maker, Conv3DNoTemporal):
        return F.conv3d(x, maker.weight, stride=(1, s, s), padding=(0, 1, 1))
    return F.conv3d(x, maker.weight, stride=s, padding=1)


def _block_ref(x: torch.Tensor, block: BasicBlock, stride: int) -> torch.Tensor:
    out = F.relu(_bn(_conv_maker_ref(x, block.conv1[0], stride), block.conv1[1]))
    out = _bn(_conv_maker_ref(out, block.conv2[0], 1), block.conv2[1])
    if block.downsample is None:
        identity = x
    else:
        ds_stride = (1, stride, stride) if isinstance(block.conv1[0], Conv3DNoTemporal) \
            else stride
        identity = _bn(F.conv3d(x, block.downsample[0].weight, stride=ds_stride),
                       block.downsample[1])
    return F.relu(out + identity)


@pytest.mark.parametrize(("maker", "mid_rule"), [
    (Conv3DSimple, "block"), (Conv3DNoTemporal, "block"), (Conv2Plus1D, "block"),
    (Conv2Plus1D, "conv"),
])
@pytest.mark.parametrize(("inplanes", "planes", "stride"), [(8, 8, 1), (8, 16, 2)])
def test_block_matches_functional_reference(maker, mid_rule, inplanes, planes, stride):
    torch.manual_seed(0)
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv3d(inplanes, planes, 1, stride=maker.get_downsample_stride(stride),
                      bias=False),
            nn.BatchNorm3d(planes))
    block = BasicBlock(inplanes, planes, maker, stride, downsample, mid_rule=mid_rule)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, inplanes, 5, 9, 9)
    with torch.no_grad():
        got, want = block(x), _block_ref(x, block, stride)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)


def test_stems_match_functional_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 19, 19)
    basic = BasicStem(16)
    r21d = R2Plus1dStem(16, mid_channels=7)
    for stem in (basic, r21d):
        _randomize_bn(stem)
        stem.eval()
    with torch.no_grad():
        want = F.relu(_bn(F.conv3d(x, basic[0].weight, stride=(1, 2, 2), padding=(1, 3, 3)),
                          basic[1]))
        assert torch.allclose(basic(x), want, atol=1e-5)
        mid = F.relu(_bn(F.conv3d(x, r21d[0].weight, stride=(1, 2, 2), padding=(0, 3, 3)),
                         r21d[1]))
        want = F.relu(_bn(F.conv3d(mid, r21d[3].weight, padding=(1, 0, 0)), r21d[4]))
        assert torch.allclose(r21d(x), want, atol=1e-5)
    assert r21d[0].weight.shape == (7, 3, 1, 7, 7)
    assert R2Plus1dStem(64)[0].out_channels == 45


def test_whole_network_matches_composition_of_its_parts():
    torch.manual_seed(0)
    model = vr.mc3_18(num_classes=10, widths=(8, 8, 16, 16), layers=(1, 1, 1, 1))
    _randomize_bn(model)
    model.eval()
    x = torch.randn(1, 3, 6, 23, 23)
    with torch.no_grad():
        h = model.stem(x)
        for layer, stride in zip((model.layer1, model.layer2, model.layer3, model.layer4),
                                 (1, 2, 2, 2), strict=True):
            h = _block_ref(h, layer[0], stride)
        want = F.linear(h.mean(dim=(2, 3, 4)), model.fc.weight, model.fc.bias)
        assert torch.allclose(model(x), want, atol=1e-5)


# ------------------------------------------------------------------------------ init


def test_weight_init_like_torchvision():
    torch.manual_seed(0)
    model = vr.r3d_18(num_classes=1000)
    conv = model.layer4[1].conv2[0].weight  # (512, 512, 3, 3, 3); fan_out = 512 * 27
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (512 * 27)), rel=0.02)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.count_nonzero(model.fc.bias) == 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert torch.all(m.weight == 1)
            assert torch.all(m.bias == 0)
        if isinstance(m, nn.Conv3d):
            assert m.bias is None


# ------------------------------------------------------------------- tiny and specs


@pytest.mark.parametrize(("name", "maker", "stem"), [
    ("r2plus1d_tiny", Conv2Plus1D, R2Plus1dStem), ("r3d_tiny", Conv3DSimple, BasicStem),
])
def test_tiny_members_share_the_classes_and_run(name, maker, stem):
    torch.manual_seed(0)
    model = getattr(vr, name)(num_classes=5).eval()
    assert isinstance(model, VideoResNet)
    assert isinstance(model.stem, stem)
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
              for b in layer]
    assert len(blocks) == 4
    assert all(isinstance(b, BasicBlock) and isinstance(b.conv1[0], maker) for b in blocks)
    assert model.feature_dim == 128
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        assert model.forward_features(x).shape == (2, 128)


def test_tiny_parameter_counts_and_widths_override():
    assert sum(p.numel() for p in build_meta("r2plus1d_tiny").parameters()) == 900_427
    assert sum(p.numel() for p in build_meta("r3d_tiny").parameters()) == 903_984
    small = build_meta("r3d_tiny", widths=(8, 8, 16, 24))
    assert small.feature_dim == 24
    assert small.stem[0].out_channels == 8


def test_input_spec_attached_and_round_trips():
    for name in FULL:
        spec = build_meta(name).input_spec
        assert spec == InputSpec(frames=16, size=112, mean=KINETICS_MEAN, std=KINETICS_STD,
                                 value_range=(0.0, 1.0))
    spec = build_meta("r2plus1d_tiny").input_spec
    assert spec.size == 64
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    custom = InputSpec(frames=8, size=32, mean=KINETICS_MEAN, std=KINETICS_STD)
    assert build_meta("r3d_tiny", input_spec=custom).input_spec is custom


def test_unknown_override_names_builder_and_known_keys():
    with pytest.raises(ConfigError, match=r"r3d_18.*'widht'.*known:.*widths"):
        build_meta("r3d_18", widht=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="4 entries"):
        build_meta("r3d_18", layers=(1, 1, 1))
