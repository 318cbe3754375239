"""The encoder registry: every name builds, overrides reach the builder, errors list names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tspipe.errors import ConfigError, TspipeError
from tspipe.models import ENCODERS, VideoResNet, build_encoder, encoder_info, encoder_names

RESNETS = ["r2plus1d_34", "r2plus1d_18", "r3d_18", "mc3_18", "r2plus1d_tiny", "r3d_tiny"]
I3DS = ["i3d", "i3d_flow", "i3d_tiny", "i3d_flow_tiny"]


def test_names_and_families():
    assert encoder_names() == RESNETS + I3DS
    assert {n: ENCODERS[n].family for n in encoder_names()} == {
        **dict.fromkeys(RESNETS, "video_resnet"), **dict.fromkeys(I3DS, "i3d")}
    # the input stream, and the channels the built model asks for
    with torch.device("meta"):
        for name in encoder_names():
            stream = ENCODERS[name].stream
            assert stream == ("flow" if "flow" in name else "rgb"), name
            assert build_encoder(name).input_spec.channels == (2 if stream == "flow" else 3)


@pytest.mark.parametrize("name", RESNETS + I3DS)
def test_every_name_builds_with_its_feature_dim(name):
    with torch.device("meta"):  # shapes only: no weights allocated
        bare = build_encoder(name)
        classifier = build_encoder(name, num_classes=7)
    assert isinstance(bare, nn.Module)
    assert bare.feature_dim == ENCODERS[name].feature_dim
    assert bare.input_spec is not None
    assert not any(p.shape[0] == 7 for p in bare.parameters())
    assert sum(p.numel() for p in classifier.parameters()) > sum(
        p.numel() for p in bare.parameters())
    if ENCODERS[name].family == "video_resnet":
        assert isinstance(bare, VideoResNet)
        assert classifier.fc.weight.shape == (7, bare.feature_dim)


@pytest.mark.parametrize("name", ["r2plus1d_tiny", "r3d_tiny", "i3d_tiny", "i3d_flow_tiny"])
def test_tiny_encoders_return_features_without_classifier(name):
    torch.manual_seed(0)
    model = build_encoder(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, model.input_spec.channels, 16, 64, 64))
    assert out.shape == (1, ENCODERS[name].feature_dim)


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as info:
        build_encoder("r2plus1d_50")
    message = str(info.value)
    assert "'r2plus1d_50'" in message
    assert all(name in message for name in encoder_names())
    assert isinstance(info.value, TspipeError)
    with pytest.raises(ConfigError, match="r3d_18"):
        encoder_info("resnet50")


def test_overrides_reach_the_builder():
    with torch.device("meta"):
        model = build_encoder("r2plus1d_tiny", bn_eps=1e-5, widths=(8, 16, 24, 32))
    assert model.feature_dim == 32
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm3d)} == {1e-5}
    with torch.device("meta"):
        assert build_encoder("r2plus1d_34", bn_eps=1e-5).layer1[0].conv1[1].eps == 1e-5


@pytest.mark.parametrize("name", ["r3d_18", "i3d_tiny"])
def test_bad_override_is_a_config_error_naming_the_encoder(name):
    with pytest.raises(ConfigError, match=name), torch.device("meta"):
        build_encoder(name, no_such_option=1)


def test_listing_encoders_does_not_import_i3d():
    code = ("import sys; from tspipe.models import build_encoder, encoder_names; "
            "encoder_names(); build_encoder('r3d_tiny'); "
            "print('tspipe.models.i3d' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
