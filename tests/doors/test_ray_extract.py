"""Extraction scaled out the way a cluster runs it: the Prefect extract flow with
prefect-ray's RayTaskRunner on a local Ray instance, one task per shard. Its features
equal a single-process run's."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import yaml

from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.extract import read_features
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytestmark = pytest.mark.slow

VARIANT = "main"


def set_extract(root, **values):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["extract"].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def one_variant(root):
    """One variant without overrides, no base stage and no pretraining: extraction from
    seeded random weights, as this test needs nothing trained."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["compare"] = {"variants": {VARIANT: {}}}
    raw["base"]["enabled"] = False
    raw["synth"]["corpus_videos"] = 0
    raw["pretrain"]["init_checkpoint"] = None
    raw["pretrain"]["enabled"] = False  # a missing pretrain checkpoint is an error
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_three_shards_on_ray_equal_one_process(run_dir, tmp_path):
    root = run_dir
    one_variant(root)
    set_extract(root, shard_size=1, export=["h5"])
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    for stage in ("synth", "ingest", "download", "decode"):
        run_stage(stage, params, paths, NullReporter(), track=False)
    ray_root = tmp_path / "ray-run"
    shutil.copytree(root, ray_root)

    single = run_stage(f"extract@{VARIANT}", params, paths, NullReporter(),
                       track=False).result
    assert single.shards == 3

    set_extract(ray_root, runner="ray", ray_cpus_per_shard=1)
    from tspipe.doors.prefect_stages import STAGE_FLOWS

    summary = STAGE_FLOWS["extract"](params_path="params.yaml", root=str(ray_root),
                                     variant=VARIANT)
    assert summary["metrics"]["shards"] == 3.0 and summary["metrics"]["ok"] == 3.0
    folder = ray_root / "features" / VARIANT / single.feature_version  # same inputs, same id
    reports = [json.loads(p.read_text()) for p in sorted(folder.glob("shard-*.json"))]
    assert len(reports) == 3
    # The shards ran in Ray's worker processes, not in this one.
    assert all(r["pid"] not in (0, os.getpid()) for r in reports)
    a = read_features(single.features_dir / "features.h5")
    b = read_features(folder / "features.h5")
    assert sorted(a) == sorted(b) and len(a) == 3
    for vid in a:
        np.testing.assert_allclose(b[vid], a[vid], rtol=0, atol=1e-5)
