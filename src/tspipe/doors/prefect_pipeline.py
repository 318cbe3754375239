"""``tspipe_pipeline``: every enabled stage in order, under one MLflow parent run."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tspipe.doors.prefect_stages import STAGE_FLOWS, load
from tspipe.doors.recording import open_catalog
from tspipe.doors.run_lock import holding
from tspipe.doors.runner import pipeline_run
from tspipe.paths import RunPaths
from tspipe.provenance import dvc_out_md5, find_tool
from tspipe.stages import bind, instances
from tspipe.tracking import TAG_CACHED, TAG_FLOW_RUN, make_tracker

log = logging.getLogger(__name__)


def is_dvc_project(paths: RunPaths) -> bool:
    return (paths.root / "dvc.yaml").exists() and (paths.root / ".dvc").is_dir()


def empty_path_params(paths: RunPaths) -> list[str]:
    """The params keys dvc.yaml interpolates (``${a.b}``; not foreach's ``${key}``) that
    params.yaml leaves null or empty."""
    import re

    import yaml

    try:
        raw = yaml.safe_load((paths.root / "params.yaml").read_text(encoding="utf-8")) or {}
        text = (paths.root / "dvc.yaml").read_text(encoding="utf-8")
    except (OSError, yaml.YAMLError):
        return []
    empty = []
    for key in dict.fromkeys(re.findall(r"\$\{\s*([\w.]+)\s*\}", text)):
        value: Any = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if "." in key and value in (None, ""):
            empty.append(key)
    return empty


@task(name="dvc-commit")
def dvc_commit(root: str, stages: list[str]) -> bool:
    """Record in dvc.lock what the flow produced, so `dvc status` is clean and `dvc repro`
    does not redo it. Only when the run directory is a DVC project using its params.yaml.

    A commit DVC refuses (a dependency of a stage the params turn off, an empty path
    param) leaves dvc.lock as it was and says why in a warning: the run's products and
    records stand, and `dvc status` shows those stages as changed."""
    paths = RunPaths.at(root)
    dvc = find_tool("dvc")
    if dvc is None or not is_dvc_project(paths):
        return False
    if empty := empty_path_params(paths):
        log.warning("dvc commit skipped: dvc.yaml names %s as a dependency path and "
                    "params.yaml leaves it empty, which DVC cannot read (every dvc command "
                    "fails with 'unexpected error'); set it to a file (the weights the "
                    "stages start from) to use DVC: dvc.lock not updated", " and ".join(empty))
        return False
    done = subprocess.run([dvc, "commit", "--force", *stages], cwd=paths.root,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split())[-600:]
        log.warning("dvc commit of %d stage runs failed (exit %d: %s): dvc.lock "
                                 "not updated; `dvc status` lists them as changed",
                                 len(stages), done.returncode, why)
        return False
    return True


@task(name="record-dvc-md5", retries=2, retry_delay_seconds=2)
def record_dvc_md5(params_path: str, root: str, variant: str) -> str | None:
    """The md5 DVC now records for ``features/<variant>`` goes on that variant's current
    feature version, so the catalog names the DVC state that holds it (``dvc checkout``
    restores it)."""
    import json

    params, paths = load(params_path, root)
    paths = paths.for_variant(variant)
    md5 = dvc_out_md5(paths.root, f"extract@{variant}",
                      str(paths.features_root.relative_to(paths.root)))
    if md5 is None or not paths.features_current.exists():
        return None
    version = json.loads(paths.features_current.read_text(encoding="utf-8"))["feature_version"]
    with open_catalog(params, paths) as cat:
        row = cat.show(version)
        cat.set_feature_status(version, row.feature.status, dvc_md5=md5)
    return md5


@flow(name="tspipe-pipeline", flow_run_name="pipeline {params_path}")
def tspipe_pipeline(params_path: str = "params.yaml", root: str = ".") -> dict[str, Any]:
    """Run every enabled stage in order (synth -> ingest -> download -> decode -> flow -> base ->
    gvf -> pretrain, extract and evaluate per variant -> compare), each a subflow with its
    own MLflow run under the pipeline's; then record the state in dvc.lock. Refused while
    another process runs in the same run directory (:mod:`tspipe.doors.run_lock`)."""
    with holding(RunPaths.at(root)):
        return _pipeline(params_path, root)


def _pipeline(params_path: str, root: str) -> dict[str, Any]:
    params, paths = load(params_path, root)
    tags = {TAG_FLOW_RUN: str(flow_run.id)} if flow_run.id else {}
    ran = instances(params)
    # dvc.lock describes params.yaml: another params file must not be recorded there.
    to_dvc = (paths.resolve(params_path) == paths.root / "params.yaml"
              and is_dvc_project(paths) and find_tool("dvc") is not None)
    # dvc.yaml runs every stage: those the params turn off leave markers (`tspipe stage`
    # writes the same), which later stages' deps name; written first, so that each stage
    # run's DVC inputs hash finds them.
    markers = instances(params, disabled=True) if to_dvc else []
    for inst in markers:
        stage, p, pa = bind(inst, params, paths)
        stage.run_disabled(p, pa)
    rows: list[dict[str, Any]] = []
    with pipeline_run(make_tracker(params, paths), params, tags) as parent:
        for inst in ran:
            name, _, variant = inst.partition("@")
            rows.append(STAGE_FLOWS[name](params_path=params_path, root=root,
                                          parent_run_id=parent.run_id,
                                          **({"variant": variant} if variant else {})))
        # dvc.yaml's foreach knows the variants, not their other seeds' runs (NAME-seedS):
        # those stay out of dvc.lock (their products and records are the flow's).
        tracked = [i for i in [*markers, *ran]
                   if i.partition("@")[2] in ("", *params.compare.variants)]
        committed = dvc_commit(root, tracked) if to_dvc else False
        if committed:
            for inst in tracked:
                if inst.startswith("extract@"):
                    record_dvc_md5(params_path, root, inst.partition("@")[2])
        if "compare" in ran:  # the table on the pipeline's own run too
            parent.log_artifact(paths.reports_dir / "compare.md")
            parent.log_metrics({f"compare.{k}": v for k, v in rows[-1]["metrics"].items()})
        nothing_new = all(r["cached"] for r in rows)
        parent.set_tags({TAG_CACHED: str(nothing_new).lower(),
                         **({"mlflow.runName": "pipeline (nothing new)"} if nothing_new
                            else {})})
    table = "\n".join(f"| {r['stage']} | {'cached' if r['cached'] else 'ran'} | {r['summary']} |"
                      for r in rows)
    if "compare" in ran:
        table += "\n\n" + (paths.reports_dir / "compare.md").read_text(encoding="utf-8")
    create_markdown_artifact(f"| stage | state | summary |\n|---|---|---|\n{table}",
                             key="tspipe-pipeline", description="tspipe pipeline run")
    return {"stages": rows, "mlflow_run_id": parent.run_id, "dvc_committed": committed}
