from __future__ import annotations

import argparse
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from ckpt_helpers import (
    MarkerMaker,
    SneakyDict,
    TinyTSP,
    TinyVideoResNet,
    assert_same,
    randomized,
)

from tspipe.io import sha256_file
from tspipe.models.checkpoint_formats import CheckpointError
from tspipe.models.checkpoints import (
    LoadedCheckpoint,
    load_into,
    read_checkpoint,
    save_checkpoint,
    sha256_prefix_from_name,
)
from tspipe.models.heads import TSPModel
from tspipe.models.registry import build_encoder

CLIP = {"clip_len": 4, "frame_rate": 15.0, "stride": 4, "size": 112}
NORM = {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989],
        "scale": "0-1"}


def _backbone_sd(seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    return randomized(TinyVideoResNet(**kw), seed).state_dict()


def _tsp_file(path: Path, *, mode: str = "tsp", num_classes: int = 7) -> TinyTSP:
    model = randomized(TinyTSP(num_classes, mode=mode), 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 4])
    args = argparse.Namespace(backbone="r2plus1d_34", clip_len=16, frame_rate=15,
                              lr=[0.0001, 0.002], global_video_features="gvf.h5", debug=None)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "lr_scheduler": sched.state_dict(), "epoch": 5, "args": args}, path)
    return model


# -- one test per layout ---------------------------------------------------------------------


def test_plain_state_dict_loads_every_tensor(tmp_path):
    sd = _backbone_sd()
    torch.save(sd, tmp_path / "plain.pth")
    ckpt = read_checkpoint(tmp_path / "plain.pth")
    assert ckpt.layout == "plain" and ckpt.heads == {}
    assert ckpt.sha256 == sha256_file(tmp_path / "plain.pth")
    model = randomized(TinyVideoResNet(), 99)
    report = load_into(model, ckpt)
    assert_same(sd, model)
    assert sorted(report.loaded) == sorted(sd)
    assert report.missing == report.unexpected == report.dropped == []


def test_torchvision_file_fc_dropped_without_fc_and_loaded_with_it(tmp_path):
    sd = randomized(TinyVideoResNet(num_classes=5), 2).state_dict()
    torch.save(sd, tmp_path / "r2plus1d_tiny.pth")
    ckpt = read_checkpoint(tmp_path / "r2plus1d_tiny.pth")
    assert ckpt.layout == "torchvision" and sorted(ckpt.heads) == ["fc.bias", "fc.weight"]

    encoder = TinyVideoResNet()  # num_classes=None: no fc
    report = load_into(encoder, ckpt)
    assert report.dropped == ["fc.bias", "fc.weight"]
    assert report.missing == report.unexpected == []
    assert_same({k: v for k, v in sd.items() if not k.startswith("fc.")}, encoder)

    classifier = TinyVideoResNet(num_classes=5)
    report = load_into(classifier, tmp_path / "r2plus1d_tiny.pth")  # a path works too
    assert report.dropped == [] and "fc.weight" in report.loaded
    assert_same(sd, classifier)


def test_tsp_training_checkpoint_backbone_and_all(tmp_path):
    path = tmp_path / "r2plus1d_34-tsp_on_activitynet-max_gvf-epoch_5.pth"
    source = _tsp_file(path)
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "tsp"
    assert sorted(ckpt.heads) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert all(k.startswith("features.") for k in ckpt.state_dict if k not in ckpt.heads)
    assert ckpt.metadata["epoch"] == 5
    assert ckpt.metadata["arch"] == "r2plus1d_34"
    assert ckpt.metadata["args"]["lr"] == [0.0001, 0.002]
    assert ckpt.metadata["other_keys"] == ["lr_scheduler", "optimizer"]
    # Loading with the Namespace allowed must not leave it allowed for everyone after.
    assert argparse.Namespace not in torch.serialization.get_safe_globals()

    encoder = TinyVideoResNet()
    report = load_into(encoder, ckpt)
    assert report.dropped == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert_same(source.features.state_dict(), encoder)

    whole = TinyTSP(7)
    report = load_into(whole, ckpt, part="all")
    assert report.dropped == [] and len(report.loaded) == len(source.state_dict())
    assert_same(source.state_dict(), whole)

    # part="backbone" into a TSP model goes to its `features`, leaving the heads alone.
    fresh = TinyTSP(3)
    heads_before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("fc")}
    report = load_into(fresh, ckpt)
    assert all(k.startswith("features.") for k in report.loaded)
    assert_same(source.features.state_dict(), fresh.features)
    assert_same(heads_before, fresh)


def test_tac_checkpoint_head_is_fc(tmp_path):
    path = tmp_path / "r2plus1d_34-tac_on_kinetics.pth"
    source = _tsp_file(path, mode="tac", num_classes=6)
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "tac" and sorted(ckpt.heads) == ["fc.bias", "fc.weight"]
    encoder = TinyVideoResNet()
    assert load_into(encoder, ckpt).dropped == ["fc.bias", "fc.weight"]
    assert_same(source.features.state_dict(), encoder)
    whole = TinyTSP(6, mode="tac")
    load_into(whole, ckpt, part="all")
    assert_same(source.state_dict(), whole)


def test_ddp_module_prefix_is_stripped(tmp_path):
    sd = randomized(TinyVideoResNet(num_classes=4), 3).state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    ckpt = read_checkpoint(tmp_path / "ddp.pth")
    assert ckpt.layout == "torchvision"
    assert all(k.startswith("module.") for k in ckpt.state_dict)  # kept as in the file
    model = TinyVideoResNet(num_classes=4)
    report = load_into(model, ckpt, part="all")
    assert report.missing == report.unexpected == []
    assert_same(sd, model)
    encoder = TinyVideoResNet()
    assert load_into(encoder, ckpt).dropped == ["fc.bias", "fc.weight"]


def test_tspipe_checkpoint_round_trip_carries_metadata(tmp_path):
    source = randomized(TinyTSP(7), 4)
    path = tmp_path / "models" / "run1" / "checkpoint.pt"
    digest = save_checkpoint(path, source, arch="r2plus1d_tiny", num_classes=7, clip=CLIP,
                             normalization=NORM, extra={"epoch": 2, "with_gvf": True})
    assert digest == sha256_file(path)
    assert not [p for p in path.parent.iterdir() if p.name != "checkpoint.pt"]  # no temp left
    # Plain types only: torch's own strict loader reads it with no allow-list at all.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "tspipe-checkpoint" and raw["version"] == 1

    ckpt = read_checkpoint(path)
    assert ckpt.layout == "tspipe"
    assert ckpt.metadata["arch"] == "r2plus1d_tiny"
    assert ckpt.metadata["num_classes"] == 7
    assert ckpt.metadata["clip"] == CLIP and ckpt.metadata["normalization"] == NORM
    assert ckpt.metadata["extra"] == {"epoch": 2, "with_gvf": True}
    whole = TinyTSP(7)
    load_into(whole, ckpt, part="all")
    assert_same(source.state_dict(), whole)
    encoder = TinyVideoResNet()
    load_into(encoder, ckpt)
    assert_same(source.features.state_dict(), encoder)

    # Same model, same settings -> same bytes, whatever the file is called.
    again = save_checkpoint(tmp_path / "other-name.pt", source, arch="r2plus1d_tiny",
                            num_classes=7, clip=CLIP, normalization=NORM,
                            extra={"epoch": 2, "with_gvf": True})
    assert again == digest


def test_save_refuses_values_weights_only_cannot_read(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match=r"clip\.frame_rate is a Fraction"):
        save_checkpoint(path, TinyVideoResNet(), arch="x", num_classes=None,
                        clip={"frame_rate": Fraction(30000, 1001)}, normalization=NORM)
    with pytest.raises(CheckpointError, match=r"extra\.paths\[0\] is a PosixPath|is a \w*Path"):
        save_checkpoint(path, TinyVideoResNet(), arch="x", num_classes=None, clip=CLIP,
                        normalization=NORM, extra={"paths": [tmp_path]})
    assert not path.exists()


def test_safetensors_file_loads(tmp_path):
    import safetensors.torch as st  # a core dependency: never skipped
    sd = randomized(TinyVideoResNet(num_classes=3), 5).state_dict()
    path = tmp_path / "model.safetensors"
    st.save_file(sd, str(path), metadata={"arch": "r2plus1d_tiny"})
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "safetensors"
    assert ckpt.metadata["safetensors_metadata"] == {"arch": "r2plus1d_tiny"}
    encoder = TinyVideoResNet()
    report = load_into(encoder, ckpt)
    assert report.dropped == ["fc.bias", "fc.weight"]
    assert_same({k: v for k, v in sd.items() if not k.startswith("fc.")}, encoder)


def test_safetensors_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*pip install safetensors"):
        read_checkpoint(path)


# -- refusing code ---------------------------------------------------------------------------


def test_pickled_callable_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": torch.zeros(1), "payload": MarkerMaker(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "refusing to unpickle arbitrary objects" in message
    assert "system" in message  # the refused global, e.g. posix.system
    assert not marker.exists()


def test_custom_container_class_is_refused(tmp_path):
    path = tmp_path / "sneaky.pth"
    torch.save({"model": SneakyDict(_backbone_sd()), "epoch": 1}, path)
    with pytest.raises(CheckpointError, match=r"ckpt_helpers\.SneakyDict"):
        read_checkpoint(path)


def test_non_checkpoint_files_are_named_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a zip, not a pickle")
    with pytest.raises(CheckpointError,
                       match=r"junk\.pth: cannot be read safely .*Unsupported operand"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match=r"tensor\.pth: holds a Tensor"):
        read_checkpoint(tmp_path / "tensor.pth")
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"no state_dict found .*epoch, notes"):
        read_checkpoint(tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.pth")


# -- names and shapes ------------------------------------------------------------------------


def test_shape_mismatch_names_key_and_both_shapes_and_leaves_model_alone(tmp_path):
    # The r2plus1d_18-into-r2plus1d_34 case at toy size: one middle width differs.
    torch.save(_backbone_sd(mid2=12), tmp_path / "r18_style.pth")
    model = randomized(TinyVideoResNet(mid2=16), 7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_into(model, tmp_path / "r18_style.pth", strict=False)
    message = str(info.value)
    assert "r18_style.pth" in message
    assert "layer2.0.conv2.0.0.weight: checkpoint (12, 16, 1, 3, 3) vs model (16, 16, 1, 3, 3)" \
        in message
    assert "layer2.0.conv2.0.1.weight: checkpoint (12,) vs model (16,)" in message
    assert_same(before, model)


def test_missing_and_unexpected_keys_strict_and_not(tmp_path):
    sd = _backbone_sd(seed=8)
    del sd["layer1.0.conv2.1.weight"]
    sd["layer9.0.extra.weight"] = torch.ones(2)
    torch.save(sd, tmp_path / "odd.pth")
    model = randomized(TinyVideoResNet(), 9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_into(model, tmp_path / "odd.pth")
    message = str(info.value)
    assert "1 missing key(s): layer1.0.conv2.1.weight" in message
    assert "1 unexpected key(s): layer9.0.extra.weight" in message
    assert_same(before, model)  # strict failure copies nothing

    report = load_into(model, tmp_path / "odd.pth", strict=False)
    assert report.missing == ["layer1.0.conv2.1.weight"]
    assert report.unexpected == ["layer9.0.extra.weight"]
    assert_same({k: v for k, v in sd.items() if k != "layer9.0.extra.weight"}, model)
    assert torch.equal(model.state_dict()["layer1.0.conv2.1.weight"],
                       before["layer1.0.conv2.1.weight"])


def test_strict_message_lists_ten_names_and_the_count(tmp_path):
    sd = _backbone_sd()
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer2.")},
               tmp_path / "half.pth")
    n_missing = sum(k.startswith("layer2.") and not k.endswith("num_batches_tracked")
                    for k in sd)
    with pytest.raises(CheckpointError, match=rf"{n_missing} missing key\(s\): layer2\..*"
                       rf"\.\.\. \({n_missing - 10} more\)"):
        load_into(TinyVideoResNet(), tmp_path / "half.pth")


def test_tsp_file_with_part_all_into_encoder_hints_backbone(tmp_path):
    _tsp_file(tmp_path / "tsp.pth")
    with pytest.raises(CheckpointError, match="did you mean part='backbone'"):
        load_into(TinyVideoResNet(), tmp_path / "tsp.pth", part="all")


def test_old_file_without_num_batches_tracked_loads_and_reports_it(tmp_path):
    # PyTorch 0.3-era files (the I3D ports) have no BN counters and use the legacy format.
    sd = {k: v for k, v in _backbone_sd(seed=10).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    model = TinyVideoResNet()
    report = load_into(model, path)  # strict
    assert report.missing == []
    assert "stem.1.num_batches_tracked" in report.missing_num_batches_tracked
    assert len(report.missing_num_batches_tracked) == sum(
        k.endswith("num_batches_tracked") for k in model.state_dict())
    assert_same(sd, model)


# -- sha256 in the file name -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "prefix"), [
    ("r2plus1d_34-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-fc_lr_0.002-epoch_5-0d2cf854.pth",
     "0d2cf854"),
    ("r3d_18-tac_on_kinetics-0bb96a2c.pt", "0bb96a2c"),
    ("/some/dir/r2plus1d_18-tsp_on_thumos14-4e9bd7b2.pth", "4e9bd7b2"),
    ("checkpoint.pt", None),
    ("model-0D2CF854.pth", None),  # upper case is not what the releases use
    ("model-0d2cf85.pth", None),
    ("model-0d2cf854.safetensors", None),
    ("model_0d2cf854.pth", None),
])
def test_sha256_prefix_from_name(name, prefix):
    assert sha256_prefix_from_name(name) == prefix


def test_sha256_prefix_in_name_is_checked(tmp_path):
    sd = _backbone_sd()
    scratch = tmp_path / "scratch.pth"
    torch.save(sd, scratch)
    digest = sha256_file(scratch)
    good = tmp_path / f"r2plus1d_tiny-tsp_on_x-epoch_5-{digest[:8]}.pth"
    scratch.rename(good)
    assert read_checkpoint(good).sha256 == digest

    wrong = "00000000" if not digest.startswith("00000000") else "11111111"
    bad = tmp_path / f"r2plus1d_tiny-tsp_on_x-epoch_5-{wrong}.pth"
    good.rename(bad)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(bad)
    message = str(info.value)
    assert bad.name in message and wrong in message and digest in message


def test_loaded_checkpoint_backbone_view_strips_prefixes(tmp_path):
    sd = _backbone_sd()
    torch.save({f"module.backbone.{k}": v for k, v in sd.items()}
               | {"module.cls_head.fc_cls.weight": torch.zeros(3, 16)}, tmp_path / "mm.pth")
    ckpt = read_checkpoint(tmp_path / "mm.pth")
    assert isinstance(ckpt, LoadedCheckpoint)
    assert list(ckpt.heads) == ["cls_head.fc_cls.weight"]
    assert sorted(ckpt.backbone) == sorted(sd)
    report = load_into(TinyVideoResNet(), ckpt)
    assert report.dropped == ["cls_head.fc_cls.weight"]


def test_empty_file_is_a_named_error(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth: cannot be read as a torch"):
        read_checkpoint(tmp_path / "empty.pth")


# -- tspipe's own encoders -------------------------------------------------------------------

# The released files' key lists live beside the project (shared/reference), not in the repo.
LAYOUTS = [Path(__file__).resolve().parents[2] / "shared/reference/"
           "video_resnet_state_dict_layouts.json",
           Path("/work/shared/reference/video_resnet_state_dict_layouts.json")]


def _r2plus1d_34_layout() -> list[tuple[str, list[int]]]:
    """Every key and shape of the released r2plus1d_34 files; tspipe's own build if the
    reference list is not beside the checkout."""
    for path in LAYOUTS:
        if path.exists():
            return json.loads(path.read_text())["r2plus1d_34"]
    model = build_encoder("r2plus1d_34", num_classes=400)
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def test_r2plus1d_18_file_into_r2plus1d_18_and_into_r2plus1d_34(tmp_path):
    source = build_encoder("r2plus1d_18", num_classes=400)
    path = tmp_path / "r2plus1d_18-kinetics.pth"
    torch.save(source.state_dict(), path)
    ckpt = read_checkpoint(path)
    assert ckpt.layout == "torchvision"

    encoder = build_encoder("r2plus1d_18")
    report = load_into(encoder, ckpt)
    assert report.dropped == ["fc.bias", "fc.weight"] and report.missing == []
    assert_same({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")},
                encoder)

    # The mistake TSP users make: a per-block-mid (r2plus1d_18) file into r2plus1d_34.
    with pytest.raises(CheckpointError, match=re.escape(
            "layer2.0.conv2.0.0.weight: checkpoint (230, 128, 1, 3, 3) "
            "vs model (288, 128, 1, 3, 3)")):
        load_into(build_encoder("r2plus1d_34"), ckpt, strict=False)


def test_released_tsp_r2plus1d_34_layout_loads_strictly(tmp_path):
    model_sd = {
        f"features.{key}": torch.zeros(shape, dtype=torch.long if key.endswith(
            "num_batches_tracked") else torch.float32)
        for key, shape in _r2plus1d_34_layout() if not key.startswith("fc.")
    }
    model_sd |= {"fc1.weight": torch.ones(200, 512), "fc1.bias": torch.ones(200),
                 "fc2.weight": torch.ones(2, 1024), "fc2.bias": torch.ones(2)}
    scratch = tmp_path / "scratch.pth"
    torch.save({"model": model_sd, "optimizer": {}, "lr_scheduler": {}, "epoch": 5,
                "args": argparse.Namespace(backbone="r2plus1d_34")}, scratch)
    path = tmp_path / ("r2plus1d_34-tsp_on_activitynet-max_gvf-backbone_lr_0.0001-"
                       f"fc_lr_0.002-epoch_5-{sha256_file(scratch)[:8]}.pth")
    scratch.rename(path)

    ckpt = read_checkpoint(path)
    assert (ckpt.layout, ckpt.metadata["arch"]) == ("tsp", "r2plus1d_34")
    whole = TSPModel(build_encoder("r2plus1d_34"), 200, with_gvf=True)
    report = load_into(whole, ckpt, part="all")
    assert report.missing == report.unexpected == report.dropped == []
    assert torch.equal(whole.fc1.weight, torch.ones(200, 512))
    assert int(torch.count_nonzero(whole.features.stem[0].weight)) == 0

    encoder = whole.features  # build_encoder("r2plus1d_34") itself; saves a second build
    report = load_into(encoder, ckpt)
    assert report.dropped == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert report.missing == [] and len(report.loaded) == len(encoder.state_dict())


@pytest.mark.parametrize("mode", ["tsp", "tac"])
def test_tiny_tsp_training_file_into_tspipe_models(tmp_path, mode):
    torch.manual_seed(0)
    source = randomized(TSPModel(build_encoder("r2plus1d_tiny"), 5, mode=mode), 11)
    opt = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    args = argparse.Namespace(backbone="r2plus1d_tiny", clip_len=4)
    torch.save({"model": source.state_dict(), "optimizer": opt.state_dict(),
                "lr_scheduler": {"milestones": [1]}, "epoch": 1, "args": args},
               tmp_path / "tiny.pth")
    ckpt = read_checkpoint(tmp_path / "tiny.pth")
    assert ckpt.layout == mode

    whole = TSPModel(build_encoder("r2plus1d_tiny"), 5, mode=mode)
    load_into(whole, ckpt, part="all")
    assert_same(source.state_dict(), whole)

    encoder = build_encoder("r2plus1d_tiny")
    report = load_into(encoder, ckpt)
    assert report.dropped == (["fc.bias", "fc.weight"] if mode == "tac" else
                              ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"])
    clips = torch.randn(2, 3, 4, 32, 32)
    encoder.eval()
    source.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(clips), source.features(clips))


def test_tspipe_checkpoint_of_a_tspipe_model_round_trips(tmp_path):
    source = randomized(TSPModel(build_encoder("r2plus1d_tiny"), 4), 12)
    digest = save_checkpoint(tmp_path / "checkpoint.pt", source, arch="r2plus1d_tiny",
                             num_classes=4, clip=CLIP, normalization=NORM)
    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt.sha256 == digest and ckpt.metadata["arch"] == "r2plus1d_tiny"
    rebuilt = TSPModel(build_encoder(ckpt.metadata["arch"]), ckpt.metadata["num_classes"])
    load_into(rebuilt, ckpt, part="all")
    assert_same(source.state_dict(), rebuilt)


def test_old_i3d_file_without_counters_loads_and_logits_drop(tmp_path):
    # The I3D ports' .pt files date from PyTorch 0.3/0.4: legacy format, no BN counters.
    source = randomized(build_encoder("i3d_tiny", num_classes=10), 13)
    sd = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "rgb_imagenet.pt", _use_new_zipfile_serialization=False)
    ckpt = read_checkpoint(tmp_path / "rgb_imagenet.pt")
    assert ckpt.layout == "plain"
    assert sorted(ckpt.heads) == ["logits.conv3d.bias", "logits.conv3d.weight"]

    classifier = build_encoder("i3d_tiny", num_classes=10)
    report = load_into(classifier, ckpt)  # strict
    assert report.missing == [] and report.dropped == []
    assert len(report.missing_num_batches_tracked) == 57  # one per BN unit
    assert_same(sd, classifier)

    features_only = build_encoder("i3d_tiny")
    report = load_into(features_only, ckpt)
    assert report.dropped == ["logits.conv3d.bias", "logits.conv3d.weight"]


def test_tspipe_checkpoint_from_a_newer_format_is_refused(tmp_path):
    torch.save({"format": "tspipe-checkpoint", "version": 2, "arch": "x", "clip": {},
                "normalization": {}, "state_dict": _backbone_sd()}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new\.pt: tspipe checkpoint version 2"):
        read_checkpoint(tmp_path / "new.pt")
