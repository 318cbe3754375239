"""``tspipe_pipeline``: every enabled stage in order, under one MLflow parent run."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tspipe.flows.stages import STAGE_FLOWS, load
from tspipe.paths import RunPaths
from tspipe.stages import PIPELINE, STAGES
from tspipe.tracking import TAG_FLOW_RUN, TAG_KIND, make_tracker


@task(name="dvc-commit")
def dvc_commit(root: str, stages: list[str]) -> bool:
    """Record in dvc.lock what the flow produced, so `dvc status` is clean and `dvc repro`
    does not redo it. Only when the run directory is a DVC project using its params.yaml."""
    paths = RunPaths.at(root)
    dvc = shutil.which("dvc")
    if dvc is None or not (paths.root / "dvc.yaml").exists() or not (paths.root / ".dvc").is_dir():
        return False
    subprocess.run([dvc, "commit", "--force", "--quiet", *stages], cwd=paths.root, check=True,
                   timeout=600)
    return True


@flow(name="tspipe-pipeline")
def tspipe_pipeline(params_path: str = "params.yaml", root: str = ".") -> dict[str, Any]:
    """Run the pipeline: synth (if enabled) -> ingest (later: download -> decode -> ...)."""
    params, paths = load(params_path, root)
    tracker = make_tracker(params, paths)
    rows: list[dict[str, Any]] = []
    tags = {TAG_KIND: "pipeline", **({TAG_FLOW_RUN: str(flow_run.id)} if flow_run.id else {})}
    parent_id = None
    ran = [n for n in PIPELINE if STAGES[n].enabled(params)]
    if tracker is not None:
        ctx = tracker.run("pipeline", params=params.model_dump(mode="json"),
                          tags={**tracker.base_tags(params), **tags})
    else:
        import contextlib

        ctx = contextlib.nullcontext(None)
    with ctx as parent:
        parent_id = parent.run_id if parent is not None else None
        for name in ran:
            rows.append(STAGE_FLOWS[name](params_path=params_path, root=root,
                                          parent_run_id=parent_id))
        uses_default_params = paths.resolve(params_path) == paths.root / "params.yaml"
        committed = dvc_commit(root, ran) if uses_default_params else False
    table = "\n".join(f"| {r['stage']} | {'cached' if r['cached'] else 'ran'} | {r['summary']} |"
                      for r in rows)
    create_markdown_artifact(f"| stage | state | summary |\n|---|---|---|\n{table}",
                             key="tspipe-pipeline", description="tspipe pipeline run")
    return {"stages": rows, "mlflow_run_id": parent_id, "dvc_committed": committed}
