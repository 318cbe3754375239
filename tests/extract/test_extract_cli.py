"""``tspipe extract``: ids from file stems, checkpoints, random init only when asked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from tspipe.doors.cli_extract import extract_command
from tspipe.errors import ConfigError
from tspipe.extract import read_attrs, read_features
from tspipe.extract.files import find_videos, run_extract, video_id_for
from tspipe.models import build_encoder
from tspipe.models.checkpoints import save_checkpoint

FAST = {"encoder": "r2plus1d_tiny", "batch_size": 4, "workers": 0, "device": "cpu"}


@pytest.fixture()
def folder(videos, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name, v in (("v_one", videos[0]), ("My clip (2)", videos[3])):
        shutil.copy(v.path, d / f"{name}.mp4")
    (d / "notes.txt").write_text("not a video")
    return d


def test_ids_from_stems(folder):
    assert video_id_for(folder / "My clip (2).mp4") == "My_clip__2_"
    assert [v.video_id for v in find_videos([folder])] == ["My_clip__2_", "v_one"]
    with pytest.raises(ConfigError, match="no such"):
        find_videos([folder / "missing.mp4"])


def test_refuses_random_weights_unless_asked(folder, tmp_path):
    with pytest.raises(ConfigError, match="allow-random-init"):
        run_extract([folder], out=tmp_path / "f.h5", **FAST)
    assert not (tmp_path / "f.h5").exists()


def test_random_init_then_checkpoint(folder, tmp_path, caplog):
    out = tmp_path / "rand.h5"
    with caplog.at_level("WARNING"):
        result = run_extract([folder], out=out, allow_random_init=True, seed=3, **FAST)
    assert "RANDOM WEIGHTS" in caplog.text
    assert sorted(result.written) == ["My_clip__2_", "v_one"]
    feats = read_features(out)
    assert feats["v_one"].shape == (3, 128) and feats["My_clip__2_"].shape == (1, 128)
    attrs = read_attrs(out)
    assert attrs["random_init_seed"] == 3 and attrs["encoder"] == "r2plus1d_tiny"
    assert len(attrs["feature_version"]) == 64

    # The same weights from a tspipe checkpoint give the same numbers, with its sha256.
    torch.manual_seed(3)
    model = build_encoder("r2plus1d_tiny")
    ckpt = tmp_path / "tiny.pt"
    sha = save_checkpoint(ckpt, model, arch="r2plus1d_tiny", num_classes=None,
                          clip={"frames": 16, "size": 64},
                          normalization=model.input_spec.to_dict())
    out2 = tmp_path / "ckpt.h5"
    run_extract([folder], out=out2, checkpoint=ckpt, **FAST)
    assert read_attrs(out2)["checkpoint_sha256"] == sha
    for vid, f in read_features(out2).items():
        np.testing.assert_allclose(f, feats[vid], atol=1e-6)
    with pytest.raises(ConfigError, match="not r3d_tiny"):
        run_extract([folder], out=tmp_path / "x.h5", checkpoint=ckpt,
                    **{**FAST, "encoder": "r3d_tiny"})


def test_typer_command(folder, tmp_path):
    app = typer.Typer()
    app.command("extract")(extract_command)
    app.command("other")(lambda: None)  # a group, as in tspipe's app
    out = tmp_path / "cli.h5"
    res = CliRunner().invoke(app, ["extract", str(folder), "--out", str(out), "--encoder",
                                   "r2plus1d_tiny", "--allow-random-init", "--workers", "0",
                                   "--device", "cpu", "--mode", "fast", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert sorted(summary["written"]) == ["My_clip__2_", "v_one"]
    assert read_attrs(out)["preprocessing"] == "fast"
    res = CliRunner().invoke(app, ["extract", str(folder), "--out", str(tmp_path / "n.h5"),
                                   "--encoder", "r2plus1d_tiny"])
    assert res.exit_code == 2


def test_preprocess_on_is_an_option_outside_the_version(folder, tmp_path):
    app = typer.Typer()
    app.command("extract")(extract_command)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"})
    assert "--preprocess-on" in res.output and "bit-identical" in res.output
    host = run_extract([folder], out=tmp_path / "h.h5", allow_random_init=True,
                       preprocess_on="host", **FAST)
    dev = run_extract([folder], out=tmp_path / "d.h5", allow_random_init=True,
                      preprocess_on="device", **FAST)
    assert (host.preprocess_on, dev.preprocess_on) == ("host", "device")
    assert read_attrs(tmp_path / "h.h5") == read_attrs(tmp_path / "d.h5")  # same version
    d = read_features(tmp_path / "d.h5")
    for vid, f in read_features(tmp_path / "h.h5").items():
        assert np.array_equal(d[vid], f)
    with pytest.raises(ConfigError, match="--preprocess-on"):
        run_extract([folder], out=tmp_path / "x.h5", allow_random_init=True,
                    preprocess_on="gpu", **FAST)
