"""What a rehearsal run left in the catalog, MLflow and dvc.lock, and whether a later run
kept the earlier records (``benchmarks/scale.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tspipe.catalog import Catalog
from tspipe.tracking import TAG_FEATURE_VERSION, TAG_KIND


def snapshot(root: Path) -> dict[str, Any]:
    """Catalog rows, MLflow runs and dvc.lock outputs of the run directory ``root``."""
    from mlflow import MlflowClient

    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        datasets = {d.id: (d.name, d.annotation_sha256, d.num_videos) for d in cat.datasets()}
        versions = {v.id: (v.dataset_id, v.status, v.num_videos, v.dvc_md5, v.mlflow_run_id)
                    for v in cat.list_feature_versions()}
        checkpoints = sorted(c.sha256 for c in cat.checkpoints())
        videos = {d: {v.video_id: (v.status, v.sha256, v.duration)
                      for v in cat.videos(d)} for d in datasets}
        current = json.loads((root / "features/scale/current.json").read_text())[
            "feature_version"]
        rows = cat.feature_videos(current)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tspipe")
    runs = {r.info.run_id: (r.info.run_name, r.data.tags.get(TAG_KIND),
                            r.data.tags.get(TAG_FEATURE_VERSION), r.info.status)
            for r in client.search_runs([exp.experiment_id], max_results=5000)}
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() \
        else {"stages": {}}
    outs = {stage: {o["path"]: o.get("md5") for o in entry.get("outs", [])}
            for stage, entry in lock.get("stages", {}).items()}
    gvf = json.loads((root / "metrics/gvf.json").read_text())
    return {"datasets": datasets, "versions": versions, "checkpoints": checkpoints,
            "videos": videos, "current": current, "runs": runs, "dvc_outs": outs,
            "gvf_ok": int(gvf["ok"]), "gvf_reused": int(gvf["reused"]),
            "current_ok": sum(r.status == "ok" for r in rows),
            "current_reused": sum(r.reused_from is not None for r in rows)}


def compare(before: dict[str, Any], after: dict[str, Any], *, nothing_new: bool
            ) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) rows: every earlier record kept as it was; with
    ``nothing_new``, no record added and the same current version."""
    out = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        out.append((name, bool(ok), detail))

    kept = all(after["datasets"].get(k) == v for k, v in before["datasets"].items())
    check("catalog: earlier dataset rows unchanged", kept,
          f"{len(before['datasets'])} -> {len(after['datasets'])} rows")
    changed = [k[:12] for k, v in before["versions"].items() if after["versions"].get(k) != v]
    check("catalog: earlier feature versions unchanged (id, status, videos, dvc md5)",
          not changed, f"{len(before['versions'])} -> {len(after['versions'])} versions"
          + (f"; changed {changed}" if changed else ""))
    check("catalog: checkpoint rows (same scratch weights, same sha256)",
          after["checkpoints"] == before["checkpoints"], f"{len(after['checkpoints'])} rows")
    moved = sum(after["videos"].get(d, {}).get(vid) != row
                for d, rows in before["videos"].items() for vid, row in rows.items())
    check("catalog: earlier video rows unchanged", moved == 0, f"{moved} changed")
    gone = [r for r in before["runs"] if r not in after["runs"]]
    retagged = [r for r in before["runs"] if r in after["runs"]
                and after["runs"][r] != before["runs"][r]]
    check("mlflow: earlier runs kept with their tags", not gone and not retagged,
          f"{len(before['runs'])} -> {len(after['runs'])} runs")
    if nothing_new:
        check("same current feature version", after["current"] == before["current"],
              after["current"][:12])
        check("no new catalog rows", after["versions"] == before["versions"]
              and after["datasets"] == before["datasets"], "")
        new = [v[0] for k, v in after["runs"].items() if k not in before["runs"]]
        check("mlflow: only a parent run added", new == ["pipeline (nothing new)"]
              or new == ["pipeline"], f"new runs: {new}")
        check("dvc.lock outputs unchanged", after["dvc_outs"] == before["dvc_outs"], "")
    else:
        same = sorted(s for s, o in after["dvc_outs"].items()
                      if before["dvc_outs"].get(s) == o)
        check("dvc.lock: stages whose outputs did not change keep their md5", True,
              f"unchanged: {', '.join(same) or '-'}")
        added_ok = after["current_ok"] - before["current_ok"]
        computed = after["current_ok"] - after["current_reused"]
        check("extract: only the added videos computed, the rest copied",
              after["current"] != before["current"] and computed == added_ok
              and after["current_reused"] == before["current_ok"],
              f"{computed} computed, {after['current_reused']} copied from "
              f"{before['current'][:12]} ({added_ok} new ok videos)")
        added_gvf = after["gvf_ok"] - before["gvf_ok"]
        check("gvf: only the added videos computed, the rest copied",
              after["gvf_ok"] - after["gvf_reused"] == added_gvf
              and after["gvf_reused"] == before["gvf_ok"],
              f"{after['gvf_ok'] - after['gvf_reused']} computed, {after['gvf_reused']} "
              f"copied ({added_gvf} new ok videos)")
    return out
