"""`tspipe encoder import / list`: a checkpoint file validated, recorded in the catalog and
registered as an MLflow model version."""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest
import torch
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from tspipe.doors.cli import app
from tspipe.models import TSPModel, build_encoder

runner = CliRunner()


@pytest.fixture
def project(tmp_path, repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def tsp_file(folder, arch="r2plus1d_tiny", seed=0):
    """A TSP reference training checkpoint, named like a released file (sha256 prefix)."""
    torch.manual_seed(seed)
    model = TSPModel(build_encoder(arch), num_classes=7, with_gvf=True)
    tmp = folder / "tmp.pth"
    torch.save({"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {},
                "epoch": 5, "args": argparse.Namespace(backbone=arch, lr=0.01)}, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{arch}-tsp_on_synth-max_gvf-epoch_5-{sha[:8]}.pth"
    tmp.rename(path)
    return path, sha, model


def invoke(*args):
    res = runner.invoke(app, list(args))
    return res


def test_import_infers_arch_records_catalog_and_mlflow_once(project):
    path, sha, _ = tsp_file(project)
    res = invoke("encoder", "import", str(path), "--root", str(project), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["sha256"], out["arch"], out["layout"]) == (sha, "r2plus1d_tiny", "tsp")
    assert sorted(out["dropped"]) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert out["model_version"] == "1"

    again = json.loads(invoke("encoder", "import", str(path), "--root", str(project),
                              "--json").stdout)
    assert again["model_version"] == "1"  # same file, same version

    rows = json.loads(invoke("encoder", "list", "--root", str(project), "--json").stdout)
    # The catalog names a file inside the run directory relative to it (the folder can
    # move); MLflow's model version holds the absolute URI MLflow needs.
    assert [(r["sha256"], r["arch"], r["origin"], r["uri"]) for r in rows] == [
        (sha, "r2plus1d_tiny", "official", path.resolve().relative_to(project.resolve())
         .as_posix())]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    (mv,) = client.search_model_versions("name = 'tspipe-encoder-r2plus1d_tiny'")
    assert mv.source == path.resolve().as_uri() and mv.tags["sha256"] == sha


def test_import_refuses_a_wrong_sha256_prefix(project):
    path, sha, _ = tsp_file(project)
    bad = path.with_name(path.name.replace(sha[:8], "deadbeef"))
    path.rename(bad)
    res = invoke("encoder", "import", str(bad), "--root", str(project))
    assert res.exit_code != 0
    assert "deadbeef" in str(res.exception) and sha in str(res.exception)
    assert not (project / "catalog.db").exists() or json.loads(invoke(
        "encoder", "list", "--root", str(project), "--json").stdout) == []


def test_import_with_the_wrong_arch_names_key_and_shapes(project):
    path, _, _ = tsp_file(project, arch="r3d_tiny")
    res = invoke("encoder", "import", str(path), "--arch", "r2plus1d_tiny",
                 "--root", str(project))
    assert res.exit_code != 0
    msg = str(res.exception)
    assert "stem.0.weight" in msg and "checkpoint" in msg and "model" in msg


def test_imported_weights_give_the_same_features(project):
    from tspipe.models.checkpoints import load_into

    path, _, model = tsp_file(project, seed=3)
    fresh = build_encoder("r2plus1d_tiny").eval()
    load_into(fresh, path)
    x = torch.rand(2, 3, 8, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fresh.forward_features(x),
                                   model.eval().features.forward_features(x))


def test_random_init_is_refused_unless_asked_and_then_recorded(project):
    from tspipe.config import load_params
    from tspipe.doors.encoders import resolve_encoder
    from tspipe.errors import TspipeError
    from tspipe.paths import RunPaths

    params, paths = load_params(project / "params.yaml"), RunPaths.at(project)
    with pytest.raises(TspipeError, match="--allow-random-init"):
        resolve_encoder(None, "r3d_tiny", params, paths)
    a = resolve_encoder(None, "r3d_tiny", params, paths, allow_random_init=True, seed=4)
    b = resolve_encoder(None, "r3d_tiny", params, paths, allow_random_init=True, seed=4)
    assert a.origin == "scratch" and a.sha256 == b.sha256  # seeded: same bytes, one row
    rows = json.loads(invoke("encoder", "list", "--root", str(project), "--json").stdout)
    assert [(r["arch"], r["origin"]) for r in rows] == [("r3d_tiny", "scratch")]
    # ... and it can be named by its catalog sha256 prefix afterwards
    again = resolve_encoder(a.sha256[:10], "r3d_tiny", params, paths)
    assert again == a
