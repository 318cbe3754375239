"""A disk that fills up during a stage: the stage ends with a named error (exit code 2, no
traceback) that says what to do, leaves no temporary or half-written file, keeps what it
had finished, and after space is freed the same command ends with the products of an
uninterrupted run. Two places fill: the stage's own outputs (the stores elsewhere), and
the run directory with its SQLite stores (MLflow's, the catalog's) on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from disk_helpers import small_disk, used_bytes
from kill_helpers import differences, fingerprint
from reliability_helpers import FULL, assert_clean_failure, cli_env, tspipe

from tspipe.config import load_params
from tspipe.paths import RunPaths
from tspipe.stages import bind

pytestmark = pytest.mark.slow

STAGES = (["decode", "flow", "base", "gvf", "pretrain@main", "extract@main", "evaluate@main"]
          if FULL else ["decode", "extract@main"])


def _drop_outputs(root: Path, stage: str) -> int:
    """Remove ``stage``'s outputs from a copied run directory; their size in bytes."""
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    st, params, paths = bind(stage, params, paths)
    size = 0
    for out in st.outputs(params, paths):
        if out.is_dir():
            size += used_bytes(out)
            shutil.rmtree(out)
        elif out.exists():
            size += out.stat().st_size
            out.unlink()
    return size


def _fill_then_resume(reference, tmp_path: Path, stage: str, *, stores_inside: bool) -> None:
    work = tmp_path / "copy"
    shutil.copytree(reference.root, work, ignore=shutil.ignore_patterns(".tspipe"))
    out_size = _drop_outputs(work, stage)
    assert out_size > 0
    env = cli_env()
    stores = tmp_path / "stores"
    if not stores_inside:  # the stores on a disk with room: the stage's writes fill
        stores.mkdir()
        for name in ("catalog.db", "mlflow.db"):
            shutil.move(work / name, stores / name)
        env = cli_env(TSPIPE_CATALOG_URL=f"sqlite:///{stores / 'catalog.db'}",
                      MLFLOW_TRACKING_URI=f"sqlite:///{stores / 'mlflow.db'}")
    with small_disk(tmp_path / "disk", 4 * (used_bytes(work) + out_size),
                    file_limit=max(out_size // 4, 4096)) as disk:
        root = disk.root / "run"
        shutil.copytree(work, root)
        disk.leave_free(out_size // 2 if not stores_inside else 0)
        proc = tspipe(root, "stage", stage, env=env, **disk.popen)
        out = assert_clean_failure(proc, "is full", "rerun")
        # Names what it could not write: a file of the run, or the SQLite store.
        assert str(root) in out or "SQLite store" in out or "under the run directory" in out
        assert "None:" not in out
        assert [p for p in root.rglob("*") if ".tmp" in p.name] == []
        disk.grow(4 * (used_bytes(work) + out_size))
        again = tspipe(root, "stage", stage, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        catalog = None if stores_inside else stores / "catalog.db"
        assert differences(fingerprint(root, reference.root, work, catalog=catalog),
                           reference.fingerprint) == []


@pytest.mark.parametrize("stage", STAGES)
def test_outputs_fill_the_disk(reference, tmp_path, stage, ledger) -> None:
    _fill_then_resume(reference, tmp_path, stage, stores_inside=False)
    ledger.record("full_disk", stage.partition("@")[0])


def test_the_stores_fill_the_disk(reference, tmp_path, ledger) -> None:
    _fill_then_resume(reference, tmp_path, "extract@main", stores_inside=True)
    ledger.record("full_disk", "sqlite-stores")
