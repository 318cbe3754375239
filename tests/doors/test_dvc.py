"""The three `dvc repro` behaviours, with the real dvc on a copy of this project."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tspipe.config import load_params
from tspipe.dvc_inputs import locked_inputs_hashes
from tspipe.stages import STAGES, instances
from tspipe.tracking import LOCATION_COLUMNS

pytestmark = pytest.mark.slow


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_repro_runs_then_skips_then_reruns_only_what_a_param_touches(dvc_project, run_git):
    # The data half of the graph (a target and what it depends on): the whole graph runs
    # in test_prefect_flow_and_dvc_agree and, from nothing, under `make reliability`.
    root = dvc_project
    first = dvc(root, "repro", "decode")
    assert "Running stage 'synth'" in first.stdout and "Running stage 'ingest'" in first.stdout
    assert "Running stage 'base'" not in first.stdout
    ann = json.loads((root / "data/annotations/annotations.json").read_text())
    assert len(ann["database"]) == 3
    assert json.loads((root / "metrics/ingest.json").read_text())["videos"] == 3.0
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"synth", "ingest", "download", "decode"}
    assert set(lock["stages"]) < set(instances(load_params(root / "params.yaml")))
    # dvc.lock is committed, as DVC's guide says (README): git sees it, and takes it.
    assert run_git(root, "status", "--porcelain", "dvc.lock").strip() == "?? dvc.lock"
    run_git(root, "add", "dvc.lock", "params.yaml")
    run_git(root, "commit", "-qm", "the data half, as run")
    assert "dvc.lock" in run_git(root, "ls-files")
    manifest = json.loads((root / "data/manifest/downloads.json").read_text())
    assert [e["status"] for e in manifest["videos"]] == ["ok"] * 3
    decode = json.loads((root / "metrics/decode.json").read_text())
    assert decode["ok"] == 3.0 and decode["action_rows"] >= 3
    assert json.loads(dvc(root, "status", "--json", "decode").stdout) == {}
    first_lock = locked_inputs_hashes(root)

    upstream = ("data/synth", "data/annotations", "data/videos", "data/manifest")
    before = {d: mtimes(root / d) for d in upstream}
    clips_before = mtimes(root / "data/clips")
    second = dvc(root, "repro", "decode")
    assert "Running stage" not in second.stdout
    assert {d: mtimes(root / d) for d in upstream} == before
    assert mtimes(root / "data/clips") == clips_before

    # A param only `decode` reads: only `decode` is out of date and reruns.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["decode"]["min_background_clips"] = 1000
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(dvc(root, "status", "--json", "decode").stdout)) == {"decode"}
    third = dvc(root, "repro", "decode")
    assert "Running stage 'decode'" in third.stdout
    for other in ("synth", "ingest", "download"):
        assert f"Running stage '{other}'" not in third.stdout
    assert {d: mtimes(root / d) for d in upstream} == before
    assert json.loads((root / "metrics/decode.json").read_text())["background_rows"] == 0
    assert json.loads(dvc(root, "status", "--json", "decode").stdout) == {}

    # dvc repro went through the same door: the catalog holds the dataset of each run.
    from tspipe.catalog import Catalog

    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        assert [(d.name, d.num_videos) for d in cat.datasets()] == [("synthactions", 3)]
        rows = cat.videos("synthactions")
    assert [r.status for r in rows] == ["ok"] * 3
    assert all(r.sha256 and r.fps == 30.0 for r in rows)

    # Each stage run's MLflow run names the dvc.lock entry of its inputs, from the first
    # run on: computed before the stage ran, equal to what DVC recorded after it.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tspipe").experiment_id],
                              order_by=["attributes.start_time ASC"])
    tags = [(r.info.run_name, r.data.tags.get("tspipe.dvc_stage_hash")) for r in runs]
    final_lock = locked_inputs_hashes(root)
    assert tags == [(name, first_lock[name]) for name in ("synth", "ingest", "download",
                                                          "decode")] + [
        ("decode", final_lock["decode"])]
    assert final_lock["decode"] != first_lock["decode"]


def test_dvc_yaml_agrees_with_the_stage_registry(repo_root):
    spec = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert list(spec) == list(STAGES)
    for name, stage in STAGES.items():
        entry = spec[name]
        params = [*stage.sections, *stage.extra_params]
        if stage.per_variant:  # DVC's foreach: one stage NAME@VARIANT per variant
            assert entry["foreach"] == "${compare.variants}", name
            entry = entry["do"]
            assert entry["cmd"] == f"tspipe stage {name}@${{key}}"
            if {"pretrain", "extract"} & set(stage.sections):  # what variants override
                params.append("compare.variants.${key}")
        else:
            assert entry["cmd"] == f"tspipe stage {name}"
        assert entry["params"] == params, name
        # The stage's one list of code modules is what DVC watches: a module as its
        # file, a package as its folder, nothing more and nothing less.
        code = {"src/" + module.replace(".", "/")
                + ("" if importlib.util.find_spec(module).submodule_search_locations else ".py")
                for module in stage.code}
        assert {d for d in entry["deps"] if d.startswith("src/")} == code, name


def stage_states(stdout: str) -> dict[str, str]:
    """``tspipe run``'s table: stage -> "ran" or "cached"."""
    return dict(re.findall(r"^\s*(\S+): (ran|cached)\b", stdout, re.MULTILINE))


def files_outside(base: Path, *inside: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in base.rglob("*")
            if p.is_file() and not any(p.is_relative_to(d) for d in inside)}


def test_prefect_flow_and_dvc_agree(dvc_project):
    """`tspipe run` (the Prefect pipeline, as `make demo` runs it) leaves DVC nothing to
    do; the run directory moved elsewhere still is: DVC, the catalog and a second
    `tspipe run` (all from the cache, writing only into the new folder); `dvc repro` of the
    TSP chain from its fine-tune on gives the same catalog rows (feature version ids and
    scores); the outputs push to the local remote configured by default.

    Both doors run in fresh processes, as a user runs them: training's numbers depend on
    process-wide torch state (the intra-op thread count, at least), and an in-process run
    inside this test session would inherit whatever earlier tests left."""
    from tspipe.catalog import Catalog

    root = dvc_project
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PREFECT_HOME": str(root.parent / "prefect-home")}  # its own API database
    proc = subprocess.run([str(Path(sys.executable).parent / "tspipe"), "run"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "compare: ran" in proc.stdout and "| tsp |" in proc.stdout
    ran = stage_states(proc.stdout)
    assert set(ran.values()) == {"ran"} and len(ran) > 10

    # Moved (DVC's cache in .dvc/cache along): everything below runs in the new folder.
    old, root = root, root.parent / "moved" / "proj"
    shutil.copytree(old, root, symlinks=True)
    shutil.rmtree(old)
    assert json.loads(dvc(root, "status", "--json").stdout) == {}
    # The catalog's feature version names the DVC state of features/ that holds it.
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    for variant in ("tsp", "tac"):
        [out] = [o for o in lock["stages"][f"extract@{variant}"]["outs"]
                 if o["path"] == f"features/{variant}"]
        current = json.loads((root / f"features/{variant}/current.json").read_text())
        with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
            version = cat.show(current["feature_version"]).feature
        assert version.dvc_md5 == out["md5"] and out["md5"].endswith(".dir")
    assert "Running stage" not in dvc(root, "repro").stdout
    show = subprocess.run([str(Path(sys.executable).parent / "tspipe"), "catalog", "show",
                           current["feature_version"]], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stdout + show.stderr
    assert current["feature_version"] in show.stdout
    assert f"features/tac/{current['feature_version'][:12]}" in show.stdout  # relative

    # The Prefect pipeline again: every stage from the cache, every write in the new folder.
    elsewhere = files_outside(root.parent.parent, root, Path(env["PREFECT_HOME"]))
    again = subprocess.run([str(Path(sys.executable).parent / "tspipe"), "run"], cwd=root,
                           env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert stage_states(again.stdout) == dict.fromkeys(ran, "cached"), again.stdout[-3000:]
    assert not old.exists()
    assert files_outside(root.parent.parent, root, Path(env["PREFECT_HOME"])) == elsewhere
    with sqlite3.connect(root / "mlflow.db") as con:  # runs old and new, the registry
        locations = [v for t, c in LOCATION_COLUMNS for (v,) in
                     con.execute(f"SELECT {c} FROM {t} WHERE {c} IS NOT NULL")]
    assert locations and all(str(root) in v and str(old) not in v for v in locations)
    assert json.loads(dvc(root, "status", "--json").stdout) == {}

    def rows() -> dict[str, set[tuple[str, str, float]]]:
        with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
            return {v.id: {(e.method, e.metric, e.value) for e in cat.show(v.id).evaluations}
                    for v in cat.list_feature_versions()}

    before = rows()
    assert len(before) == 2 and all(len(s) > 20 for s in before.values())
    # The TSP chain from its training on (sized for the suite: base, gvf and the TAC
    # chain are the same code through the same door).
    rerun = dvc(root, "repro", "--force", "--downstream", "pretrain@tsp")
    assert "Running stage 'evaluate@tsp'" in rerun.stdout
    assert "Running stage 'gvf'" not in rerun.stdout
    assert rows() == before

    dvc(root, "push")
    remote = root / ".dvc-remote"
    pushed = [p for p in remote.rglob("*") if p.is_file()]
    # every video, the two annotation JSONs, the synth manifest and ingest's report
    assert len(pushed) >= 3 + 4
