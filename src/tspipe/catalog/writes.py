"""Write-side statements of the catalog: each runs in the caller's transaction (an open
Session) and returns what it wrote.

Rows are keyed by unique constraints and written with the dialect's INSERT ... ON CONFLICT,
so two writers registering the same things at once leave one row per key. Values were
checked before the transaction (``tspipe.catalog.api``); what needs the database (a row
referred to, a row already there) is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tspipe.catalog import schema
from tspipe.catalog._convert import (
    checkpoint_record,
    dataset_record,
    evaluation_record,
    video_values,
)
from tspipe.catalog.queries import feature, require
from tspipe.catalog.records import (
    CheckpointRecord,
    DatasetRecord,
    EvaluationRecord,
    FeatureVersionRecord,
    VideoRow,
)
from tspipe.errors import CatalogError


def _insert(session: Session, model: type[Any]) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``_do_update``."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    return dialect.insert(model)


def insert_dataset(session: Session, values: Mapping[str, Any]) -> DatasetRecord:
    """The dataset row for (name, annotation hash), inserted unless there."""
    session.execute(_insert(session, schema.Dataset).values(**values, created_at=schema.utcnow())
                    .on_conflict_do_nothing(index_elements=["name", "annotation_sha256"]))
    row = session.scalars(select(schema.Dataset).where(
        schema.Dataset.name == values["name"],
        schema.Dataset.annotation_sha256 == values["annotation_sha256"])).one()
    return dataset_record(row)


def upsert_videos(session: Session, dataset_id: int, rows: Sequence[VideoRow],
                  chunk_rows: int) -> int:
    """Insert or update ``rows`` (one per video id) of a dataset, ``chunk_rows`` per
    statement; a None field keeps the stored value."""
    require(session, schema.Dataset, dataset_id, "dataset")
    stmt = _insert(session, schema.Video)
    new = stmt.excluded
    keep = {name: func.coalesce(getattr(new, name), getattr(schema.Video, name))
            for name in ("subset", "source", "sha256", "duration", "fps", "num_frames")}
    stmt = stmt.on_conflict_do_update(
        index_elements=["dataset_id", "video_id"],
        set_={**keep, "status": new.status, "reason": new.reason,
              "updated_at": new.updated_at})
    now = schema.utcnow()
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start:start + chunk_rows]
        session.execute(stmt, [video_values(dataset_id, row, now) for row in chunk])
    return len(rows)


def insert_checkpoint(session: Session, values: Mapping[str, Any], *,
                      item: str) -> CheckpointRecord:
    """The checkpoint row for ``values["sha256"]``, inserted unless there; one already
    there with another arch or origin is refused."""
    sha, parent = values["sha256"], values["parent_sha256"]
    if parent is not None and parent != sha:
        require(session, schema.Checkpoint, parent, f"{item}: parent checkpoint")
    if values["dataset_id"] is not None:
        require(session, schema.Dataset, values["dataset_id"], f"{item}: dataset")
    session.execute(_insert(session, schema.Checkpoint).values(**values, created_at=schema.utcnow())
                    .on_conflict_do_nothing(index_elements=["sha256"]))
    row = require(session, schema.Checkpoint, sha, "checkpoint")
    arch, origin = values["arch"], values["origin"]
    if (row.arch, row.origin) != (arch, origin):
        raise CatalogError(f"{item} is registered as arch {row.arch!r}, origin "
                           f"{row.origin!r}, not {arch!r}, {origin!r}")
    return checkpoint_record(row)


def insert_feature_version(session: Session, values: Mapping[str, Any], *,
                           item: str) -> FeatureVersionRecord:
    """The feature version ``values["id"]``, inserted unless there (then unchanged)."""
    require(session, schema.Dataset, values["dataset_id"], f"{item}: dataset")
    require(session, schema.Checkpoint, values["checkpoint_sha256"], f"{item}: checkpoint")
    now = schema.utcnow()
    session.execute(_insert(session, schema.FeatureVersion).values(
        **values, created_at=now, updated_at=now,
    ).on_conflict_do_nothing(index_elements=["id"]))
    return feature(session, values["id"])


def update_feature_status(session: Session, fid: str, status: str,
                          given: Mapping[str, Any]) -> FeatureVersionRecord:
    """Set the status of feature version ``fid``, and each of ``given`` that is not None."""
    row = require(session, schema.FeatureVersion, fid, "feature version")
    row.status, row.updated_at = status, schema.utcnow()
    for name, value in given.items():
        if value is not None:
            setattr(row, name, value)
    session.flush()
    return feature(session, fid)


def upsert_feature_videos(session: Session, fid: str, values: Sequence[Mapping[str, Any]],
                          chunk_rows: int) -> int:
    """Insert or replace the per-video rows of feature version ``fid``, ``chunk_rows`` per
    statement."""
    require(session, schema.FeatureVersion, fid, "feature version")
    stmt = _insert(session, schema.FeatureVideo)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["feature_version_id", "video_id"],
        set_={name: getattr(new, name) for name in (
            "status", "num_clips", "feature_dim", "reason", "reused_from", "shard",
            "updated_at")})
    for start in range(0, len(values), chunk_rows):
        session.execute(stmt, values[start:start + chunk_rows])
    return len(values)


def replace_feature_sources(session: Session, fid: str, sources: Sequence[tuple[str, str]],
                            *, item: str) -> int:
    """Make ``sources`` (``(stream, source version id)`` in order) the sources of ``fid``."""
    require(session, schema.FeatureVersion, fid, "feature version")
    for stream, source in sources:
        require(session, schema.FeatureVersion, source, f"{item}: {stream} source")
    session.execute(delete(schema.FeatureVersionSource)
                    .where(schema.FeatureVersionSource.feature_version_id == fid))
    session.add_all(schema.FeatureVersionSource(feature_version_id=fid, position=i,
                                         source_id=source, stream=stream)
                    for i, (stream, source) in enumerate(sources))
    return len(sources)


def insert_evaluations(
    session: Session, feature_version_id: str, *, method: str, subset: str,
    values: Mapping[str, float], dataset_id: int | None, mlflow_run_id: str | None,
    params: Mapping[str, Any] | None, params_hash: str, code_version: str, item: str,
) -> list[EvaluationRecord]:
    """Insert one row per metric of ``values`` unless the same (params hash, code version)
    already scored it: rows are never changed, except that a missing MLflow run id is
    filled in. ``dataset_id`` None: the feature version's dataset."""
    feature_row = require(session, schema.FeatureVersion, feature_version_id, "feature version")
    on = feature_row.dataset_id if dataset_id is None else require(
        session, schema.Dataset, dataset_id, f"{item}: dataset").id
    key = ["feature_version_id", "method", "subset", "metric", "params_hash", "code_version"]
    stmt = _insert(session, schema.Evaluation)
    stmt = stmt.on_conflict_do_update(
        index_elements=key,
        set_={"mlflow_run_id": func.coalesce(schema.Evaluation.mlflow_run_id,
                                             stmt.excluded.mlflow_run_id)})
    now = schema.utcnow()
    session.execute(stmt, [  # sorted: one lock order for concurrent writers
        {"feature_version_id": feature_row.id, "method": method, "dataset_id": on,
         "subset": subset, "metric": metric, "value": value, "mlflow_run_id": mlflow_run_id,
         "params_hash": params_hash, "params": None if params is None else dict(params),
         "code_version": code_version, "created_at": now}
        for metric, value in sorted(values.items())])
    rows = session.scalars(select(schema.Evaluation).where(
        schema.Evaluation.feature_version_id == feature_row.id, schema.Evaluation.method == method,
        schema.Evaluation.subset == subset, schema.Evaluation.metric.in_(values),
        schema.Evaluation.params_hash == params_hash,
        schema.Evaluation.code_version == code_version,
    ).order_by(schema.Evaluation.metric)).all()
    return [evaluation_record(row) for row in rows]
