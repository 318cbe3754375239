"""ORM rows -> records, and the checks on values before they are written."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from tspipe.catalog import schema
from tspipe.catalog.records import (
    CheckpointRecord,
    DatasetRecord,
    EvaluationRecord,
    FeatureVersionRecord,
    FeatureVideoRecord,
    FeatureVideoRow,
    VideoRecord,
    VideoRow,
)
from tspipe.catalog.schema import FEATURE_VIDEO_STATUSES, VIDEO_STATUSES
from tspipe.errors import CatalogError
from tspipe.provenance import check_sha256

# Method names are identifiers, so `best("gtad.average_map")` splits unambiguously.
_METHOD = re.compile(r"^[a-z][a-z0-9_]*$")


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def one_of(value: str, allowed: tuple[str, ...], *, field: str, item: str) -> str:
    if value not in allowed:
        raise CatalogError(f"{item}: {field} {value!r} is not one of {', '.join(allowed)}")
    return value


def check_method(method: str) -> str:
    if not isinstance(method, str) or not _METHOD.match(method):
        raise CatalogError(f"method {method!r}: use lower-case letters, digits and '_' "
                           "(e.g. gtad, bmn)")
    return method


def check_value(value: float, *, item: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise CatalogError(f"{item}: value {value!r} is not a finite number")
    return number


def check_video_id(video_id: str, *, item: str) -> str:
    if not isinstance(video_id, str) or not video_id or len(video_id) > 255:
        raise CatalogError(f"{item}: field video_id must be a non-empty string of at most "
                           "255 characters")
    return video_id


def _count(value: int | None, *, field: str, item: str, least: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise CatalogError(f"{item}: {field} {value!r} is not an integer >= {least}")
    return value


def _text(value: str | None, *, field: str, item: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CatalogError(f"{item}: {field} {value!r} is not a string")
    return value


def video_values(dataset_id: int, row: VideoRow, now: datetime) -> dict[str, Any]:
    item = f"dataset {dataset_id}, video {row.video_id!r}"
    check_video_id(row.video_id, item=item)
    return {
        "dataset_id": dataset_id,
        "video_id": row.video_id,
        "subset": row.subset,
        "source": row.source,
        "sha256": None if row.sha256 is None else check_sha256(row.sha256, field=f"{item}: sha256"),
        "duration": row.duration,
        "fps": row.fps,
        "num_frames": row.num_frames,
        "status": one_of(row.status, VIDEO_STATUSES, field="status", item=item),
        "reason": row.reason,
        "updated_at": now,
    }


def feature_video_values(feature_version_id: str, row: FeatureVideoRow,
                         now: datetime) -> dict[str, Any]:
    item = f"feature version {feature_version_id[:12]}, video {row.video_id!r}"
    check_video_id(row.video_id, item=item)
    reused_from = None
    if row.reused_from is not None:
        reused_from = check_sha256(row.reused_from, field=f"{item}: reused_from")
        if reused_from == feature_version_id:
            raise CatalogError(f"{item}: reused_from names this feature version itself "
                               "(leave it None for features computed in this version)")
    return {
        "feature_version_id": feature_version_id,
        "video_id": row.video_id,
        "status": one_of(row.status, FEATURE_VIDEO_STATUSES, field="status", item=item),
        "num_clips": _count(row.num_clips, field="num_clips", item=item, least=0),
        "feature_dim": _count(row.feature_dim, field="feature_dim", item=item, least=1),
        "reason": _text(row.reason, field="reason", item=item),
        "reused_from": reused_from,
        "shard": _text(row.shard, field="shard", item=item),
        "updated_at": now,
    }


def dataset_record(row: schema.Dataset) -> DatasetRecord:
    return DatasetRecord(
        id=row.id, name=row.name, annotation_sha256=row.annotation_sha256, format=row.format,
        subsets=tuple(row.subsets), num_videos=row.num_videos, num_segments=row.num_segments,
        num_classes=row.num_classes, counts=dict(row.counts), created_at=utc(row.created_at),
    )


def video_record(row: schema.Video, dataset_name: str) -> VideoRecord:
    return VideoRecord(
        dataset_id=row.dataset_id, dataset_name=dataset_name, video_id=row.video_id,
        subset=row.subset, source=row.source, sha256=row.sha256, duration=row.duration,
        fps=row.fps, num_frames=row.num_frames, status=row.status, reason=row.reason,
        updated_at=utc(row.updated_at),
    )


def checkpoint_record(row: schema.Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(
        sha256=row.sha256, arch=row.arch, origin=row.origin, uri=row.uri,
        mlflow_run_id=row.mlflow_run_id, params=dict(row.params),
        parent_sha256=row.parent_sha256, dataset_id=row.dataset_id,
        git_commit=row.git_commit, created_at=utc(row.created_at),
    )


def feature_record(row: schema.FeatureVersion, dataset_name: str) -> FeatureVersionRecord:
    return FeatureVersionRecord(
        id=row.id, dataset_id=row.dataset_id, dataset_name=dataset_name,
        checkpoint_sha256=row.checkpoint_sha256, encoder=row.encoder, params=dict(row.params),
        manifest_sha256=row.manifest_sha256, code_version=row.code_version,
        storage_uri=row.storage_uri, dvc_md5=row.dvc_md5, mlflow_run_id=row.mlflow_run_id,
        git_commit=row.git_commit, status=row.status, num_videos=row.num_videos,
        feature_dim=row.feature_dim, created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def evaluation_record(row: schema.Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        id=row.id, feature_version_id=row.feature_version_id, method=row.method,
        dataset_id=row.dataset_id, subset=row.subset, metric=row.metric, value=row.value,
        mlflow_run_id=row.mlflow_run_id, created_at=utc(row.created_at),
        params_hash=row.params_hash, params=row.params, code_version=row.code_version,
    )


def feature_video_record(row: schema.FeatureVideo) -> FeatureVideoRecord:
    return FeatureVideoRecord(
        feature_version_id=row.feature_version_id, video_id=row.video_id, status=row.status,
        num_clips=row.num_clips, feature_dim=row.feature_dim, reason=row.reason,
        reused_from=row.reused_from, shard=row.shard, updated_at=utc(row.updated_at),
    )
