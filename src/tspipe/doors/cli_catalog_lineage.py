"""`tspipe catalog lineage ID`: where a feature version's numbers came from, in one view.

From the annotation file (its hash, its videos and what became of them) through the
extraction settings, the checkpoint and every checkpoint it started from (with their
training params and datasets), the versions it concatenates, to every evaluation with the
params behind it. A Rich tree for people, ``--json`` for programs. Registered on
``tspipe.doors.cli_catalog.app`` (imported by ``tspipe.doors.cli``).
"""

import json
from collections import Counter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from tspipe.catalog import Catalog, DatasetRecord, EvaluationRecord, to_jsonable
from tspipe.doors.cli_catalog import _SHORT, Json, Url, _emit_json, _opened, app


def _dataset(catalog: Catalog, dataset: DatasetRecord) -> dict[str, Any]:
    statuses = Counter(v.status for v in catalog.videos(dataset.id))
    return {**to_jsonable(dataset), "video_status": dict(sorted(statuses.items()))}


def _evaluations(rows: tuple[EvaluationRecord, ...]) -> list[dict[str, Any]]:
    """Rows grouped into records: one per (method, subset, params, code), oldest first."""
    records: dict[tuple[str, ...], dict[str, Any]] = {}
    for e in sorted(rows, key=lambda e: (e.created_at, e.id)):
        key = (e.method, e.subset, e.params_hash, e.code_version)
        record = records.setdefault(key, {
            "method": e.method, "subset": e.subset, "params_hash": e.params_hash,
            "params": e.params, "code_version": e.code_version,
            "mlflow_run_id": e.mlflow_run_id, "recorded": e.created_at.isoformat(),
            "metrics": {}})
        record["metrics"][e.metric] = e.value
    return list(records.values())


def lineage_of(catalog: Catalog, feature_id: str) -> dict[str, Any]:
    """The whole chain behind a feature version (id or unique prefix), as JSON types."""
    shown = catalog.show(feature_id, every=True)
    datasets = {d.id: d for d in catalog.datasets()}
    checkpoints = []
    for c in (shown.checkpoint, *shown.ancestors):
        trained = datasets.get(c.dataset_id) if c.dataset_id is not None else None
        checkpoints.append({**to_jsonable(c), "trained_on": trained and {
            "name": trained.name, "annotation_sha256": trained.annotation_sha256}})
    return {
        "feature_version": {**to_jsonable(shown.feature),
                            "video_counts": to_jsonable(shown.video_counts)},
        "annotations": _dataset(catalog, shown.dataset),
        "checkpoints": checkpoints,
        "sources": [{"position": s.position, "stream": s.stream,
                     "lineage": lineage_of(catalog, s.feature.id)} for s in shown.sources],
        "evaluations": _evaluations(shown.evaluations),
        "mlflow_run_ids": list(shown.mlflow_run_ids),
    }


# What the tree shows of a score record and of a checkpoint's training (--json: all).
_HEADLINE = ("auc", "ar_at_100", "average_map")
_TRAINING = ("mode", "encoder", "epochs", "optimizer", "lr_backbone", "lr_heads", "seed",
             "init_checkpoint", "corpus")


def _params(params: Any) -> str:
    return escape(json.dumps(params, sort_keys=True)) if params else "(not recorded)"


def _training(params: dict[str, Any]) -> str:
    """A checkpoint's training params in brief: the pretrain recipe's main keys."""
    recipe = params.get("pretrain")
    if not isinstance(recipe, dict):
        return _params(params)
    return ", ".join(f"{k}={escape(json.dumps(recipe[k]))}" for k in _TRAINING
                     if recipe.get(k) is not None)


def _tree(chain: dict[str, Any], label: str = "feature version") -> Tree:
    f, ds = chain["feature_version"], chain["annotations"]
    n = f["video_counts"]
    tree = Tree(f"[bold]{label} {f['id']}[/bold]: {escape(f['encoder'])}, {f['status']}, "
                f"{n['ok']} videos ok ({n['reused']} reused), {n['failed']} failed, dim "
                f"{f['feature_dim']}")
    videos = ", ".join(f"{count} {status}" for status, count in ds["video_status"].items())
    annotations = tree.add(f"annotations {escape(ds['name'])} sha256 "
                           f"{ds['annotation_sha256'][:_SHORT]} ({ds['format']}, "
                           f"{ds['num_videos']} videos, {ds['num_segments']} segments, "
                           f"{ds['num_classes']} classes)")
    annotations.add(f"videos: {videos or 'none recorded'}")
    annotations.add(f"manifest (ids + file hashes) {f['manifest_sha256'][:_SHORT]}")
    tree.add(f"extraction settings {_params(f['params'])}, code {f['code_version'][:_SHORT]}, "
             f"git {f['git_commit'] or '?'}, stored at {escape(str(f['storage_uri']))}, "
             f"dvc {f['dvc_md5'] or '-'}, mlflow run {f['mlflow_run_id'] or '-'}")
    branch = tree
    for i, c in enumerate(chain["checkpoints"]):
        trained = c["trained_on"]
        branch = branch.add(
            f"{'checkpoint' if i == 0 else 'started from'} {c['sha256'][:_SHORT]} "
            f"({c['arch']}, {c['origin']}"
            + (f", trained on {escape(trained['name'])} {trained['annotation_sha256'][:_SHORT]}"
               if trained else "") + f"), mlflow run {c['mlflow_run_id'] or '-'}")
        if c["params"]:
            branch.add(f"training {_training(c['params'])}")
    for source in chain["sources"]:
        tree.add(_tree(source["lineage"], f"source {source['position']} "
                                          f"({escape(source['stream'])})"))
    scores = tree.add(f"evaluations ({len(chain['evaluations'])} records; --json has "
                      "every metric)")
    by_params: dict[tuple[str, str], Tree] = {}
    for e in chain["evaluations"]:
        key = (e["params_hash"], e["code_version"])
        if key not in by_params:
            by_params[key] = scores.add(
                f"params {e['params_hash'][:_SHORT] or '-'} {_params(e['params'])}, code "
                f"{e['code_version'][:_SHORT] or '-'}")
        shown = {k: v for k, v in e["metrics"].items() if k in _HEADLINE} or e["metrics"]
        metrics = ", ".join(f"{escape(k)} {v:.4f}" for k, v in sorted(shown.items()))
        by_params[key].add(f"{e['method']} / {e['subset']}: {metrics} (mlflow run "
                           f"{e['mlflow_run_id'] or '-'}, recorded {e['recorded'][:16]})")
    return tree


@app.command()
def lineage(
    feature_id: Annotated[str, typer.Argument(help="Feature version id or a unique prefix.")],
    url: Url = None, as_json: Json = False,
) -> None:
    """Print where a feature version came from: annotations and videos, extraction
    settings, checkpoints and their parents, sources, every evaluation with its params."""
    with _opened(url) as catalog:
        chain = lineage_of(catalog, feature_id)
    if as_json:
        _emit_json(chain)
        return
    Console().print(_tree(chain))
