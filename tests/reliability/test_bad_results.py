"""Bad results never pass for good ones: a version that is not whole and finite never
becomes current, a damaged shard is repaired, evaluate refuses what it cannot use whole.

Each case runs the CLI as a user does (``tspipe stage NAME``) on a copy of one prepared
tiny run, breaks one thing, and checks the outcome: exit code 2 with a message naming
the file, the video and what is wrong (no traceback), and the finished outputs from
before untouched (``current.json``, ``gvf.h5``, the evaluate metrics); or, for a damaged
shard the extract stage can rebuild, a repair it names and a whole version again.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from reliability_helpers import assert_clean_failure, cli_env, tspipe, write_params

from tspipe.catalog import Catalog
from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

VARIANT = "main"
EXTRACT, EVALUATE = f"extract@{VARIANT}", f"evaluate@{VARIANT}"
CHAIN = ("synth", "ingest", "download", "decode", "gvf", f"pretrain@{VARIANT}", EXTRACT)
# One video per shard: a damaged shard takes one video of three (synth_001, training),
# so an evaluation of the rest could still run, and would, silently, without the check.
SHARDS = {"shard_size": 1}
WIDE = cli_env(COLUMNS="1000")  # log lines unwrapped: paths stay whole


def paths_of(root: Path) -> RunPaths:
    return RunPaths.at(root).for_variant(VARIANT)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Decoded videos, GVF, a trained encoder and its features (current.json)."""
    root = tmp_path_factory.mktemp("prepared") / "run"
    write_params(root, extract=SHARDS)
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    for name in CHAIN:
        run_stage(name, params, paths, NullReporter(), track=False)
    return root


def copy_run(src: Path, dest: Path, **sections: dict) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".tspipe"))
    write_params(dest, extract=SHARDS, **sections)
    return dest


def current_dir(root: Path) -> Path:
    return root / json.loads(paths_of(root).features_current.read_text())["dir"]


def nan_checkpoint(root: Path) -> str:
    """The trained encoder with NaN in its first convolution: NaN features everywhere."""
    ckpt = torch.load(paths_of(root).pretrain_checkpoint, map_location="cpu",
                      weights_only=False)
    ckpt["state_dict"]["stem.0.weight"][0].fill_(float("nan"))
    torch.save(ckpt, root / "nan.pt")
    return "nan.pt"


def damage(shard: Path, how: str) -> None:
    """Cut a finished shard in half, or drop a video it holds."""
    if how == "truncated":
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    else:
        with h5py.File(shard, "a") as f:
            del f[next(iter(f))]


def test_nan_weights_make_no_current_version(prepared, tmp_path, ledger):
    root = copy_run(prepared, tmp_path / "run")
    current = paths_of(root).features_current
    before = current.read_bytes()
    write_params(root, extract={**SHARDS, "checkpoint": nan_checkpoint(root)})
    proc = tspipe(root, "stage", EXTRACT, env=WIDE)
    assert_clean_failure(proc, "is not whole: 3 of 3 videos failed",
                         "video 'synth_000' (shard-00000.h5)", "are not finite (NaN or inf)",
                         "nan.pt", f"{current} still names version")
    assert current.read_bytes() == before  # still the good version
    [bad] = [p for p in paths_of(root).features_root.iterdir()
             if p.is_dir() and p != current_dir(root)]
    for shard in bad.glob("shard-*.h5"):  # nothing of the NaN features was written
        with h5py.File(shard) as f:
            assert list(f) == []
    index = json.loads((bad / "index.json").read_text())
    assert {v["status"] for v in index["videos"].values()} == {"failed"}
    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        assert bad.name not in {v.id for v in cat.list_feature_versions()}
    ledger.record("bad_input", "features-nan")


def test_nan_weights_leave_the_gvf_file_as_it_was(prepared, tmp_path, ledger):
    root = copy_run(prepared, tmp_path / "run")
    gvf = paths_of(root).gvf_file
    before = gvf.read_bytes()
    write_params(root, extract=SHARDS, gvf={"checkpoint": nan_checkpoint(root)})
    proc = tspipe(root, "stage", "gvf", env=WIDE)
    assert_clean_failure(proc, "gvf: version", "is not whole: 3 of 3 videos failed",
                         "video 'synth_000' (shard-00000.h5)", "not finite (NaN or inf)",
                         f"{gvf} stays as it was")
    assert gvf.read_bytes() == before
    ledger.record("bad_input", "gvf-nan")


@pytest.mark.parametrize("how", ["truncated", "video-dropped"])
def test_extract_repairs_a_damaged_finished_shard(prepared, tmp_path, how, ledger):
    root = copy_run(prepared, tmp_path / "run")
    folder = current_dir(root)
    shard = folder / "shard-00001.h5"
    with h5py.File(shard) as f:
        want = {k: f[k][()] for k in f}
    current = paths_of(root).features_current.read_bytes()
    damage(shard, how)

    proc = tspipe(root, "stage", EXTRACT, env=WIDE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"extract: {shard}: " in out and "extracting its videos again (repair)" in out
    with h5py.File(shard) as f:  # the same numbers again
        assert sorted(f) == sorted(want)
        for key, data in want.items():
            np.testing.assert_array_equal(f[key][()], data)
    assert paths_of(root).features_current.read_bytes() == current
    index = json.loads((folder / "index.json").read_text())
    assert {v["status"] for v in index["videos"].values()} == {"ok"}
    ledger.record("bad_input", f"feature-shard-{how}:extract")


def test_gvf_repairs_a_damaged_finished_shard(prepared, tmp_path, ledger):
    root = copy_run(prepared, tmp_path / "run")
    gvf = paths_of(root).gvf_file
    before = gvf.read_bytes()
    [shard] = gvf.parent.glob("*/shard-00000.h5")
    damage(shard, "truncated")
    proc = tspipe(root, "stage", "gvf", env=WIDE)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"gvf: {shard}: " in out and "extracting its videos again (repair)" in out
    with h5py.File(gvf) as new, h5py.File(io.BytesIO(before)) as old:
        assert sorted(new) == sorted(old)
        for key in old:
            np.testing.assert_array_equal(new[key][()], old[key][()])
    ledger.record("bad_input", "gvf-shard-truncated")


@pytest.mark.parametrize("how", ["truncated", "video-dropped"])
def test_evaluate_refuses_a_version_with_a_damaged_shard(prepared, tmp_path, how, ledger):
    root = copy_run(prepared, tmp_path / "run")
    shard = current_dir(root) / "shard-00001.h5"
    damage(shard, how)
    proc = tspipe(root, "stage", EVALUATE, env=WIDE)
    assert_clean_failure(proc, "not a whole feature version", "synth_001",
                         "run the extract stage again",
                         str(shard) if how == "truncated" else "not a dataset")
    assert not paths_of(root).metrics("localize").exists()
    ledger.record("bad_input", f"feature-shard-{how}:evaluate")


def test_evaluate_names_features_of_the_wrong_width(prepared, tmp_path, ledger):
    root = copy_run(prepared, tmp_path / "run")
    proc = tspipe(root, "stage", EVALUATE, env=WIDE)  # a first, good evaluation
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    metrics = paths_of(root).metrics("localize")
    before = metrics.read_bytes()
    shard = current_dir(root) / "shard-00001.h5"
    with h5py.File(shard, "a") as f:  # synth_001 cut to half its width
        data, attrs = f["synth_001"][()], dict(f["synth_001"].attrs)
        del f["synth_001"]
        f.create_dataset("synth_001", data=data[:, :64]).attrs.update(attrs)

    proc = tspipe(root, "stage", EVALUATE, env=WIDE)
    assert_clean_failure(proc, f"{shard}: video 'synth_001': features 64 wide, expected 128",
                         "index.json says feature_dim 128", "extract it again")
    assert metrics.read_bytes() == before  # the finished evaluation stays
    ledger.record("bad_input", "features-wrong-width")
