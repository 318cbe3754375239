"""Record what a stage returned in the catalog. One recorder per stage that makes rows.

Doors call ``record`` after a stage ran (or was served from a cache); every recorder is
idempotent, so recording twice adds no rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tspipe.catalog import Catalog, FeatureVideoRow, VideoRow, upgrade
from tspipe.catalog.engine import sqlite_path
from tspipe.config import Params
from tspipe.data.annotations import read_activitynet
from tspipe.data.download import read_manifest
from tspipe.errors import StageError
from tspipe.io import sha256_file
from tspipe.paths import RunPaths
from tspipe.provenance import git_commit
from tspipe.stages import STAGES
from tspipe.tracking import numbers_hash

log = logging.getLogger(__name__)


def catalog_url(params: Params, paths: RunPaths) -> str:
    return paths.resolve_sqlite_url(params.catalog.url)


def open_catalog(params: Params, paths: RunPaths) -> Catalog:
    """The catalog; a brand-new embedded SQLite file is created at the latest schema.

    An existing database is never migrated here: ``Catalog`` refuses an unmigrated or
    outdated one and says to run ``tspipe catalog upgrade``.
    """
    url = catalog_url(params, paths)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        # A folder inside the run directory is the run's own; one elsewhere must exist.
        if path.resolve().is_relative_to(paths.root.resolve()):
            path.parent.mkdir(parents=True, exist_ok=True)
        log.info("creating the embedded catalog %s", url)
        upgrade(url)
    return Catalog(url)


def _record_ingest(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                   mlflow_run_id: str | None) -> None:
    ann = read_activitynet(result.annotations)
    dataset = cat.register_dataset(
        result.dataset, result.annotations_sha256, format=result.format,
        subsets=result.subsets, num_videos=result.videos, num_segments=result.segments,
        num_classes=result.classes,
        counts={"per_subset": result.per_subset, "background": result.background,
                "source": result.source, "source_sha256": result.source_sha256,
                "errors": result.errors, "warnings": result.warnings},
    )
    # Ingest knows what the annotations say; the download stage owns the status. A video
    # already in the catalog keeps its status, a new one is "pending".
    known = {v.video_id: v for v in cat.videos(dataset.id)}
    rows = []
    for video in ann.videos.values():
        prior = known.get(video.video_id)
        rows.append(VideoRow(
            video_id=video.video_id, subset=video.subset, source=video.url,
            duration=video.duration, fps=video.fps, num_frames=video.num_frames,
            status=prior.status if prior else "pending",
            reason=prior.reason if prior else "not downloaded yet",
        ))
    cat.upsert_videos(dataset.id, rows)


def _dataset_id(cat: Catalog, paths: RunPaths, params: Params) -> int:
    """The catalog row of the ingested annotations (ingest registered it)."""
    ann_sha = sha256_file(paths.annotations)
    for d in cat.datasets():
        if d.name == params.dataset.name and d.annotation_sha256 == ann_sha:
            return d.id
    raise StageError(f"catalog: dataset {params.dataset.name!r} with annotations "
                     f"{ann_sha[:12]} is not registered; run the ingest stage first")


def _trained_on(cat: Catalog, paths: RunPaths, params: Params) -> int:
    """The dataset a pretrain run learned from: the pipeline's (ingested), or its
    ``pretrain.corpus``, registered here under the corpus file's stem."""
    if not params.pretrain.corpus:
        return _dataset_id(cat, paths, params)
    corpus = paths.resolve(params.pretrain.corpus)
    ann = read_activitynet(corpus)
    subsets = sorted({v.subset for v in ann.videos.values() if v.subset})
    return cat.register_dataset(
        corpus.stem, sha256_file(corpus), format="activitynet", subsets=subsets,
        num_videos=len(ann.videos), num_segments=sum(len(v.segments)
                                                     for v in ann.videos.values()),
        num_classes=len(ann.classes), counts={"source": paths.relative(corpus)}).id


def _record_download(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                     mlflow_run_id: str | None) -> None:
    entries = read_manifest(result.manifest)
    ann = read_activitynet(paths.annotations)
    cat.upsert_videos(_dataset_id(cat, paths, params), [
        VideoRow(video_id=e.video_id, source=e.source, sha256=e.sha256, status=e.status,
                 reason=e.reason)
        for e in entries.values() if e.video_id in ann.videos])


def _record_decode(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                   mlflow_run_id: str | None) -> None:
    """Decoded facts per video; a video that failed to decode is ``failed`` with why."""
    import json

    report = json.loads(result.report.read_text(encoding="utf-8"))
    rows = []
    for r in report["videos"]:
        if r["status"] == "ok":
            facts = r.get("standardized") or r["original"]
            rows.append(VideoRow(video_id=r["video_id"], duration=facts["duration"],
                                 fps=facts["fps"], num_frames=facts["frames_decoded"],
                                 status="ok", reason="; ".join(r.get("warnings", [])) or None))
        elif r["status"] == "failed":
            rows.append(VideoRow(video_id=r["video_id"], status="failed", reason=r["reason"]))
    cat.upsert_videos(_dataset_id(cat, paths, params), rows)


def _record_extract(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                    mlflow_run_id: str | None) -> None:
    """The checkpoint, the feature version (complete) and every video's status in it; with
    two streams, each stream's version first and then the concatenation with its sources.
    Recording the same version again changes nothing (same id, same rows)."""
    from types import SimpleNamespace

    dataset_id = _dataset_id(cat, paths, params)
    for stream in result.streams.values():
        _record_feature_version(cat, SimpleNamespace(**stream), params, paths, dataset_id,
                                mlflow_run_id)
    _record_feature_version(cat, result, params, paths, dataset_id, mlflow_run_id)
    if result.streams:
        cat.record_feature_sources(result.feature_version, [
            (name, stream["feature_version"]) for name, stream in result.streams.items()])


def _record_feature_version(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                            dataset_id: int, mlflow_run_id: str | None) -> None:
    # Files inside the run directory are stored relative to it (the folder can move).
    ckpt_uri = paths.to_uri(result.checkpoint) if result.checkpoint else None
    # A checkpoint the catalog knows keeps its row (a pretrain output named explicitly in
    # extract.checkpoint stays origin "pretrain", with its lineage).
    if not _known_checkpoint(cat, result.checkpoint_sha256):
        extra = {} if result.checkpoint_origin != "pretrain" else {"dataset_id": dataset_id}
        cat.register_checkpoint(result.checkpoint_sha256, arch=result.encoder,
                                origin=result.checkpoint_origin, uri=ckpt_uri,
                                params={"random_init_seed": params.extract.seed}
                                if result.checkpoint is None else {},
                                **extra)
    commit = git_commit(paths.root)
    version = cat.register_feature_version(
        dataset_id=dataset_id, checkpoint_sha256=result.checkpoint_sha256,
        encoder=result.encoder, params=result.params, manifest_sha256=result.manifest_sha256,
        code_version=result.code_version, storage_uri=paths.to_uri(result.features_dir),
        mlflow_run_id=mlflow_run_id, git_commit=commit, status="pending",
        num_videos=result.ok, feature_dim=result.feature_dim)
    if version.id != result.feature_version:
        raise StageError(f"catalog: feature version {version.id[:12]} registered for what "
                         f"extraction calls {result.feature_version[:12]}: the id recipes "
                         "disagree")
    index = json.loads(Path(result.index).read_text(encoding="utf-8"))
    cat.record_feature_videos(version.id, [
        FeatureVideoRow(video_id=vid, status=v["status"], num_clips=v.get("num_clips"),
                        feature_dim=result.feature_dim if v["status"] == "ok" else None,
                        reason=v.get("reason"), reused_from=v.get("reused_from"),
                        shard=v.get("shard"))
        for vid, v in sorted(index["videos"].items())])
    cat.set_feature_status(version.id, "complete" if result.ok else "failed",
                           mlflow_run_id=mlflow_run_id)


def _known_checkpoint(cat: Catalog, sha256: str) -> bool:
    return any(c.sha256 == sha256 for c in cat.checkpoints())


def _record_pretrain(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                     mlflow_run_id: str | None) -> None:
    """The trained encoder (origin ``pretrain``): its parent (the init checkpoint,
    registered as ``official`` if the catalog does not know it; none for seeded random
    weights), the dataset, the params and the MLflow run."""
    cfg = params.pretrain
    if result.init_sha256 and not _known_checkpoint(cat, result.init_sha256):
        init = paths.resolve(cfg.init_checkpoint) if cfg.init_checkpoint else None
        cat.register_checkpoint(result.init_sha256, arch=cfg.encoder, origin="official",
                                uri=paths.to_uri(init) if init else None)
    run_params = {"pretrain": cfg.model_dump(mode="json"),
                  "clip": params.clip.model_dump(mode="json"),
                  "gvf_source": result.gvf_source, "exported_epoch": result.exported_epoch,
                  "best_epoch": result.best_epoch}
    if not result.init_sha256:
        run_params["random_init_seed"] = cfg.seed
    cat.register_checkpoint(result.checkpoint_sha256, arch=result.encoder, origin="pretrain",
                            uri=paths.to_uri(result.checkpoint), mlflow_run_id=mlflow_run_id,
                            params=run_params, parent_sha256=result.init_sha256,
                            dataset_id=_trained_on(cat, paths, params),
                            git_commit=git_commit(paths.root))


def _record_evaluate(cat: Catalog, result: Any, params: Params, paths: RunPaths,
                     mlflow_run_id: str | None) -> None:
    """Each method's metrics (and the baseline's) on the scored subset, with the
    localize params behind them (their hash is the MLflow run's params hash tag) and the
    evaluation code's version: other params add rows, earlier ones stay."""
    stage = STAGES["evaluate"]
    for method, metrics in result.scores.items():
        cat.record_evaluations(result.feature_version, method=method,
                               subset=params.localize.eval_subset,
                               metrics=metrics, mlflow_run_id=mlflow_run_id,
                               params={s: getattr(params, s).model_dump(mode="json")
                                       for s in stage.sections},
                               params_hash=numbers_hash(params, stage.sections),
                               code_version=stage.code_version())


RECORDERS: dict[str, Callable[[Catalog, Any, Params, RunPaths, str | None], None]] = {
    "ingest": _record_ingest,
    "download": _record_download,
    "decode": _record_decode,
    "pretrain": _record_pretrain,
    "extract": _record_extract,
    "evaluate": _record_evaluate,
}


def record(name: str, result: Any, params: Params, paths: RunPaths, *,
           mlflow_run_id: str | None = None) -> None:
    recorder = RECORDERS.get(name)
    if recorder is not None:
        with open_catalog(params, paths) as cat:
            recorder(cat, result, params, paths, mlflow_run_id)
    if params.tracking.openlineage:  # every stage run, with or without catalog rows
        _emit_lineage(name, result, params, paths, mlflow_run_id)


def _emit_lineage(name: str, result: Any, params: Params, paths: RunPaths,
                  mlflow_run_id: str | None) -> None:
    """OpenLineage events of the run (an optional extra: imported only when asked for)."""
    try:
        from tspipe.doors.openlineage import emit_stage_run
    except ImportError as exc:
        if not (exc.name or "").startswith("openlineage"):
            raise
        raise StageError("tracking.openlineage is set but openlineage-python is not "
                         "installed: pip install 'tspipe[lineage]'") from None
    emit_stage_run(name, result, params, paths, mlflow_run_id)
