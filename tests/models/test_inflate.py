"""2D -> 3D inflation: the kernel rule, torchvision GoogLeNet -> I3D keys, and the identity
the I3D paper builds on (a repeated frame gives the 2D activations)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from googlenet2d import GoogLeNet2d, randomize_

from tspipe.models.i3d import i3d
from tspipe.models.inflate import (
    GOOGLENET_TO_I3D,
    InflationError,
    inflate_2d_to_3d,
    inflate_conv_weight,
    inflate_inception_v1,
)


def _shapes(state):
    return {key: tuple(t.shape) for key, t in state.items()}


@pytest.fixture(scope="module")
def googlenet():
    return randomize_(GoogLeNet2d(num_classes=1000, aux_logits=True), seed=0)


# ---- the kernel rule ---------------------------------------------------------------------

def test_conv_weight_is_repeated_over_time_and_divided():
    w = torch.randn(4, 3, 5, 5)
    w3 = inflate_conv_weight(w, 3)
    assert w3.shape == (4, 3, 3, 5, 5)
    for t in range(3):
        torch.testing.assert_close(w3[:, :, t], w / 3)
    torch.testing.assert_close(w3.sum(dim=2), w)


def test_one_conv_on_a_repeated_frame_gives_the_2d_output():
    w = torch.randn(6, 3, 3, 3)
    frame = torch.randn(1, 3, 9, 9)
    video = frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)
    out3 = F.conv3d(video, inflate_conv_weight(w, 5))  # no padding: every position is inside
    assert out3.shape == (1, 6, 4, 7, 7)
    torch.testing.assert_close(out3, F.conv2d(frame, w).unsqueeze(2).expand_as(out3))


def test_state_inflation_copies_everything_but_conv_kernels():
    state = {"conv.weight": torch.randn(8, 3, 7, 7), "bn.weight": torch.rand(8),
             "bn.running_var": torch.rand(8), "bn.num_batches_tracked": torch.tensor(5),
             "fc.bias": torch.randn(2)}
    out = inflate_2d_to_3d(state, 7)
    assert _shapes(out) == {**_shapes(state), "conv.weight": (8, 3, 7, 7, 7)}
    for key in ("bn.weight", "bn.running_var", "bn.num_batches_tracked", "fc.bias"):
        assert torch.equal(out[key], state[key])
        assert out[key].data_ptr() != state[key].data_ptr()  # copies, not views
    per_key = inflate_2d_to_3d({"a.weight": torch.randn(2, 2, 3, 3),
                                "b.weight": torch.randn(2, 2, 1, 1)},
                               {"a.weight": 3, "b.weight": 1})
    assert _shapes(per_key) == {"a.weight": (2, 2, 3, 3, 3), "b.weight": (2, 2, 1, 1, 1)}


def test_per_key_time_kernels_must_name_exactly_the_conv_kernels():
    state = {"a.weight": torch.randn(2, 2, 3, 3), "a.bias": torch.randn(2)}
    with pytest.raises(InflationError, match="missing"):
        inflate_2d_to_3d(state, {})
    with pytest.raises(InflationError, match="not conv kernels"):
        inflate_2d_to_3d(state, {"a.weight": 3, "a.bias": 1})
    with pytest.raises(InflationError, match="time kernel 0"):
        inflate_2d_to_3d(state, 0)


# ---- torchvision GoogLeNet -> I3D keys ---------------------------------------------------

def test_googlenet_state_maps_onto_every_i3d_key(googlenet):
    state2d = googlenet.state_dict()
    assert any(key.startswith("aux1.") for key in state2d)  # torchvision layout, aux included
    state3d = inflate_inception_v1(state2d)
    assert _shapes(state3d) == _shapes(i3d(None).state_dict())
    i3d(None).load_state_dict(state3d, strict=True)
    assert len(GOOGLENET_TO_I3D) == 3 + 9 * 6  # 57 units, one per BN of I3D
    # Spot checks of the table: stem t = 7, 3x3 branches t = 3, the pool branch's 1x1.
    assert state3d["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    torch.testing.assert_close(state3d["Mixed_4f.b2b.conv3d.weight"],
                               inflate_conv_weight(state2d["inception4e.branch3.1.conv.weight"], 3))
    assert torch.equal(state3d["Mixed_3b.b3b.bn.running_var"],
                       state2d["inception3a.branch4.1.bn.running_var"])
    assert torch.equal(state3d["Mixed_5c.b0.bn.num_batches_tracked"],
                       state2d["inception5b.branch1.bn.num_batches_tracked"])


def test_fc_maps_to_logits_only_when_asked(googlenet):
    state2d = googlenet.state_dict()
    state3d = inflate_inception_v1(state2d, include_fc=True)
    i3d(1000).load_state_dict(state3d, strict=True)
    assert state3d["logits.conv3d.weight"].shape == (1000, 1024, 1, 1, 1)
    assert torch.equal(state3d["logits.conv3d.weight"].flatten(1), state2d["fc.weight"])
    assert torch.equal(state3d["logits.conv3d.bias"], state2d["fc.bias"])
    assert not any(key.startswith("logits.") for key in inflate_inception_v1(state2d))


def test_unknown_or_missing_keys_are_errors(googlenet):
    state2d = googlenet.state_dict()
    with pytest.raises(InflationError, match=r"no known layout.*'extra\.weight'"):
        inflate_inception_v1({**state2d, "extra.weight": torch.zeros(1)})
    with pytest.raises(InflationError, match="lacks 285 keys"):  # 57 x (conv + 4 BN)
        inflate_inception_v1({f"module.{k}": v for k, v in state2d.items()})
    partial = {k: v for k, v in state2d.items() if k != "conv3.bn.running_mean"}
    with pytest.raises(InflationError, match=r"conv3\.bn\.running_mean"):
        inflate_inception_v1(partial)
    no_fc = {k: v for k, v in state2d.items() if not k.startswith("fc.")}
    with pytest.raises(InflationError, match=r"fc\.weight"):
        inflate_inception_v1(no_fc, include_fc=True)
    # PyTorch <= 0.4 files have no num_batches_tracked: still a strict load.
    old = {k: v for k, v in state2d.items() if not k.endswith("num_batches_tracked")}
    i3d(None).load_state_dict(inflate_inception_v1(old), strict=True)


# ---- the acceptance test: inflated I3D on a repeated frame == the 2D net on the frame ----
#
# T = 112 frames (7 x 16, the shortest multiple of 16 that leaves a pooled position whose
# whole receptive field lies inside the clip). Zero "SAME" padding in time makes positions
# near either end differ from the 2D net; a position matches when every input it reads is a
# real, matching position. By hand (front/back pads from same_pad):
#   Conv3d_1a (k7 s2, 112 -> 56, pads 2/3): j reads frames 2j-2 .. 2j+4 -> j in [1, 53]
#   MaxPool3d_2a, Conv3d_2b (time k1) keep [1, 53]; Conv3d_2c (k3, j-1 .. j+1) -> [2, 52]
#   MaxPool3d_3a (time k1) [2, 52]; Mixed_3b (3x3x3 branches) [3, 51]; Mixed_3c [4, 50]
#   MaxPool3d_4a (k3 s2, 56 -> 28, pads 0/1): j reads 2j .. 2j+2 -> [2, 24]
#   Mixed_4b..4f shrink one per side: [3, 23] .. Mixed_4f [7, 19]
#   MaxPool3d_5a (k2 s2, 28 -> 14, no pad): j reads 2j, 2j+1 -> [4, 9]
#   Mixed_5b [5, 8]; Mixed_5c [6, 7]; avg_pool (time k2): position p reads p, p+1 -> [6, 6]
# (A max-pool's zero padding alone never changes a post-ReLU maximum; its window must still
# avoid corrupted real positions.) Float64 makes "equal" mean ~1e-13, so the positions just
# outside each range, which differ by >= 1e-4, show the ranges are exact, not loose.
FRAMES = 112
SIZE = 64  # both nets are SAME-padded, so any size works; Mixed_5c is 2 x 2 here
CLEAN = {  # I3D endpoint: (2D stage, first matching position, last matching position)
    "Conv3d_1a_7x7": ("conv1", 1, 53),
    "Conv3d_2c_3x3": ("conv3", 2, 52),
    "Mixed_3b": ("inception3a", 3, 51),
    "Mixed_4f": ("inception4e", 7, 19),
    "Mixed_5c": ("inception5b", 6, 7),
}


@pytest.mark.slow  # ~2-7 s on 2 CPU cores: 112 frames in float64
@torch.no_grad()
def test_inflated_i3d_on_a_repeated_frame_equals_the_2d_network(googlenet):
    net2d = copy.deepcopy(googlenet).double()
    model = i3d(1000, input_size=SIZE).double().eval()  # float64 before loading: no rounding
    model.load_state_dict(inflate_inception_v1(net2d.state_dict(), include_fc=True))
    gen = torch.Generator().manual_seed(1)
    frame = torch.rand(1, 3, SIZE, SIZE, generator=gen, dtype=torch.float64) * 2 - 1
    video = frame.unsqueeze(2).expand(-1, -1, FRAMES, -1, -1).contiguous()

    out2d = net2d.forward_endpoints(frame)
    out3d = model.forward_endpoints(video)
    for name, (name2d, first, last) in CLEAN.items():
        act3d, act2d = out3d[name], out2d[name2d]
        assert act2d.std() > 0.3, name  # random weights keep real activations at every depth
        per_time = (act3d - act2d.unsqueeze(2)).abs().amax(dim=(0, 1, 3, 4))
        assert per_time[first:last + 1].max() < 1e-10, name
        assert per_time[first - 1] > 1e-5 and per_time[last + 1] > 1e-5, name

    pooled = model.avg_pool(out3d["Mixed_5c"])  # (1, 1024, 13, 1, 1)
    assert pooled.shape == (1, 1024, 13, 1, 1)
    feature_diff = (pooled[0, :, :, 0, 0] - out2d["pooled"][0, :, None]).abs().amax(dim=0)
    assert feature_diff[6] < 1e-10
    assert feature_diff[5] > 1e-5 and feature_diff[7] > 1e-5
    # The logits at that position are the 2D net's ImageNet logits (fc mapped to logits).
    logits = model.logits(model.dropout(pooled))[0, :, 6, 0, 0]
    torch.testing.assert_close(logits, out2d["logits"][0], rtol=0, atol=1e-9)


def test_encoder_import_inflate_from_writes_i3d_and_records_the_2d_parent(
        googlenet, tmp_path, repo_root):
    """`tspipe encoder import FILE --inflate-from 2D.pth`: FILE is the inflated I3D (RGB,
    or flow with the first layer averaged over RGB), the catalog holds it with the 2D file
    as its parent, and extraction's loader reads it."""
    import hashlib

    import yaml
    from typer.testing import CliRunner

    from tspipe.catalog import Catalog
    from tspipe.doors.cli import app
    from tspipe.models.loading import load_encoder

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    source = tmp_path / "googlenet.pth"
    torch.save(googlenet.state_dict(), source)
    sha2d = hashlib.sha256(source.read_bytes()).hexdigest()
    expected = inflate_inception_v1(googlenet.state_dict())

    runner = CliRunner()
    for stream, arch in (("rgb", "i3d"), ("flow", "i3d_flow")):
        out = tmp_path / f"{arch}_imagenet.pt"
        res = runner.invoke(app, ["encoder", "import", str(out), "--inflate-from", str(source),
                                  "--stream", stream, "--root", str(tmp_path), "--params",
                                  str(tmp_path / "params.yaml"), "--json"])
        assert res.exit_code == 0, res.output
        record = json.loads(res.output[res.output.index("{\n"):])
        assert record["arch"] == arch
        loaded = load_encoder(arch, out)
        state = loaded.model.state_dict()
        for key, value in expected.items():
            if key == "Conv3d_1a_7x7.conv3d.weight" and stream == "flow":
                assert state[key].shape == (64, 2, 7, 7, 7)
                mean = value.mean(dim=1)
                assert torch.equal(state[key][:, 0], mean) and torch.equal(state[key][:, 1], mean)
            else:
                assert torch.equal(state[key], value), key
        with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as cat:
            rows = {r.sha256: r for r in cat.checkpoints()}
        assert rows[record["sha256"]].parent_sha256 == sha2d
        assert rows[sha2d].arch == "inception_v1_2d"

    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    res = runner.invoke(app, ["encoder", "import", str(tmp_path / "x.pt"), "--inflate-from",
                              str(bad), "--root", str(tmp_path), "--params",
                              str(tmp_path / "params.yaml")])
    assert res.exit_code != 0 and "GoogLeNet state_dict lacks" in str(res.exception)
    assert not (tmp_path / "x.pt").exists()
