"""TSP / TAC heads: checkpoint key layouts, init, GVF concatenation order, named outputs."""

from __future__ import annotations

import json

import pytest
import torch

from tspipe.errors import TspipeError
from tspipe.models import video_resnet as vr
from tspipe.models.heads import REGION_LABELS, ActionHead, RegionHead, TSPModel, TSPOutput


@pytest.fixture(scope="module")
def layouts(shared_data):
    path = shared_data.parent / "reference" / "video_resnet_state_dict_layouts.json"
    return json.loads(path.read_text())


def _meta_tsp(arch: str, num_classes: int, **kwargs) -> TSPModel:
    with torch.device("meta"):
        return TSPModel(getattr(vr, arch)(num_classes=None), num_classes, **kwargs)


def _backbone_layout(layouts, arch):
    # checkpoints.md: backbone keys prefixed `features.`, no `features.fc.*`.
    return [[f"features.{k}", s] for k, s in layouts[arch] if not k.startswith("fc.")]


@pytest.mark.parametrize("arch", ["r2plus1d_34", "r2plus1d_18", "r3d_18"])
@pytest.mark.parametrize(("kwargs", "heads"), [
    ({"mode": "tsp", "with_gvf": True},
     [["fc1.weight", [200, 512]], ["fc1.bias", [200]], ["fc2.weight", [2, 1024]],
      ["fc2.bias", [2]]]),
    ({"mode": "tsp", "with_gvf": False},
     [["fc1.weight", [200, 512]], ["fc1.bias", [200]], ["fc2.weight", [2, 512]],
      ["fc2.bias", [2]]]),
    ({"mode": "tac"}, [["fc.weight", [200, 512]], ["fc.bias", [200]]]),
])
def test_state_dict_equals_reference_checkpoint_layout(layouts, arch, kwargs, heads):
    model = _meta_tsp(arch, 200, **kwargs)
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == _backbone_layout(layouts, arch) + heads


def test_tac_ignores_with_gvf():
    model = _meta_tsp("r3d_tiny", 7, mode="tac", with_gvf=True)
    assert not model.with_gvf
    assert {k for k in model.state_dict() if not k.startswith("features.")} == {
        "fc.weight", "fc.bias"}


def test_head_init_normal_001_zero_bias():
    torch.manual_seed(0)
    action = ActionHead(512, 2000)  # 1M weights: the empirical std is tight
    region = RegionHead(512, with_gvf=True)
    assert action.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert action.weight.mean().abs().item() < 1e-3
    assert region.weight.shape == (2, 1024)
    assert region.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.count_nonzero(action.bias) == 0
    assert torch.count_nonzero(region.bias) == 0
    assert len(REGION_LABELS) == 2


def test_region_head_concatenates_clip_feature_first():
    head = RegionHead(4, with_gvf=True)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, :4] = 1.0  # class 0 reads the clip feature half
        head.weight[1, 4:] = 1.0  # class 1 reads the GVF half
        head.bias.zero_()
    clip = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    gvf = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert torch.equal(head(clip, gvf), torch.tensor([[10.0, 100.0]]))


def test_region_head_without_gvf_and_errors():
    head = RegionHead(4, with_gvf=False)
    assert head.weight.shape == (2, 4)
    assert head(torch.randn(3, 4)).shape == (3, 2)
    with_gvf = RegionHead(4)
    with pytest.raises(TspipeError, match="gvf"):
        with_gvf(torch.randn(3, 4))
    with pytest.raises(TspipeError, match="shape"):
        with_gvf(torch.randn(3, 4), torch.randn(3, 5))


def test_tsp_forward_returns_named_outputs_consistent_with_heads():
    torch.manual_seed(0)
    model = TSPModel(vr.r2plus1d_tiny(num_classes=None), 5).eval()
    assert model.input_spec == vr.TINY_64
    x, gvf = torch.randn(2, 3, 8, 32, 32), torch.rand(2, 128)
    with torch.no_grad():
        out = model(x, gvf)
        features = model.features.forward_features(x)
    assert isinstance(out, TSPOutput)
    assert out.action_logits.shape == (2, 5)
    assert out.region_logits.shape == (2, 2)
    assert torch.allclose(out.features, features)
    assert torch.allclose(out.action_logits, features @ model.fc1.weight.T + model.fc1.bias)
    assert torch.allclose(out.region_logits,
                          torch.cat([features, gvf], 1) @ model.fc2.weight.T + model.fc2.bias)


def test_tac_forward_has_no_region_logits():
    torch.manual_seed(0)
    model = TSPModel(vr.r3d_tiny(num_classes=None), 4, mode="tac").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 32, 32))
    assert out.action_logits.shape == (2, 4)
    assert out.region_logits is None
    assert out.features.shape == (2, 128)


def test_tsp_model_refuses_bad_backbone_and_mode():
    with pytest.raises(TspipeError, match="num_classes=None"):
        _meta_tsp_with_fc()
    with pytest.raises(TspipeError, match="mode"):
        _meta_tsp("r3d_tiny", 3, mode="tsn")
    with pytest.raises(TspipeError, match="feature_dim"):
        TSPModel(torch.nn.Identity(), 3)
    assert TSPModel(torch.nn.Identity(), 3, feature_dim=8).fc2.weight.shape == (2, 16)


def _meta_tsp_with_fc() -> TSPModel:
    with torch.device("meta"):
        return TSPModel(vr.r3d_tiny(num_classes=10), 3)


def test_reference_checkpoint_model_dict_loads_strictly():
    """A state dict in the reference's layout (built by hand with its names) loads."""
    torch.manual_seed(0)
    source = TSPModel(vr.r3d_tiny(num_classes=None), 6)
    ckpt = {"model": {k: v.clone() for k, v in source.state_dict().items()}}
    target = TSPModel(vr.r3d_tiny(num_classes=None), 6)
    target.load_state_dict(ckpt["model"], strict=True)
    assert torch.equal(target.fc2.weight, source.fc2.weight)
    assert torch.equal(target.features.stem[0].weight, source.features.stem[0].weight)
