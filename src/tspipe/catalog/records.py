"""What the catalog API takes and returns: frozen dataclasses, never ORM objects.

Times are timezone-aware UTC. ``to_jsonable`` turns any record (or a list of them) into
plain JSON types for ``--json`` output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class VideoRow:
    """One video's state to upsert (from the download manifest or the decode report).

    A descriptive field left None keeps what the catalog already holds, so a later stage
    that does not know the sha256 does not erase it; ``status`` and ``reason`` always
    replace the stored ones.
    """

    video_id: str
    subset: str | None = None
    source: str | None = None
    sha256: str | None = None
    duration: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    status: str = "ok"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureVideoRow:
    """One video's outcome in a feature version, to upsert; it replaces every stored field
    of that video (a video recomputed after a failure loses its old ``reason``).

    ``reused_from`` is the id of the feature version whose stored features were copied
    for this video (None when computed in this version); ``shard`` the HDF5 file, relative
    to the version's folder, that holds them.
    """

    video_id: str
    status: str
    num_clips: int | None = None
    feature_dim: int | None = None
    reason: str | None = None
    reused_from: str | None = None
    shard: str | None = None


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    id: int
    name: str
    annotation_sha256: str
    format: str
    subsets: tuple[str, ...]
    num_videos: int
    num_segments: int
    num_classes: int
    counts: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class VideoRecord:
    dataset_id: int
    dataset_name: str
    video_id: str
    subset: str | None
    source: str | None
    sha256: str | None
    duration: float | None
    fps: float | None
    num_frames: int | None
    status: str
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    sha256: str
    arch: str
    origin: str
    uri: str | None
    mlflow_run_id: str | None
    params: dict[str, Any]
    parent_sha256: str | None
    dataset_id: int | None
    git_commit: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FeatureVersionRecord:
    id: str
    dataset_id: int
    dataset_name: str
    checkpoint_sha256: str
    encoder: str
    params: dict[str, Any]
    manifest_sha256: str
    code_version: str
    storage_uri: str | None
    dvc_md5: str | None
    mlflow_run_id: str | None
    git_commit: str | None
    status: str
    num_videos: int | None
    feature_dim: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FeatureVideoRecord:
    feature_version_id: str
    video_id: str
    status: str
    num_clips: int | None
    feature_dim: int | None
    reason: str | None
    reused_from: str | None
    shard: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FeatureVideoCounts:
    """How many videos of a feature version are ``ok`` and ``failed``; ``reused`` counts
    those whose features were copied from another version (included in ``ok``)."""

    ok: int = 0
    failed: int = 0
    reused: int = 0


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """One score, with the localize params (and their hash) and the code version behind
    it; a row from before these were recorded has '' for both and ``params`` None."""

    id: int
    feature_version_id: str
    method: str
    dataset_id: int
    subset: str
    metric: str
    value: float
    mlflow_run_id: str | None
    created_at: datetime
    params_hash: str = ""
    params: dict[str, Any] | None = None
    code_version: str = ""


@dataclass(frozen=True, slots=True)
class FeatureSourceRecord:
    """One version a concatenated feature version is made of, at ``position`` (0 first)."""

    position: int
    stream: str
    feature: FeatureVersionRecord


@dataclass(frozen=True, slots=True)
class FeatureLineage:
    """Everything a feature version came from and every score it got.

    ``ancestors`` walks the checkpoint's parents (the pretrain's init, its init, ...);
    ``mlflow_run_ids`` names every MLflow run involved, feature run first;
    ``video_counts`` sums the version's per-video rows (all 0 when none were recorded);
    ``sources`` are the versions it concatenates, in order (empty for an encoder's own).
    """

    feature: FeatureVersionRecord
    dataset: DatasetRecord
    checkpoint: CheckpointRecord
    ancestors: tuple[CheckpointRecord, ...]
    evaluations: tuple[EvaluationRecord, ...]
    mlflow_run_ids: tuple[str, ...]
    video_counts: FeatureVideoCounts = dataclasses.field(default_factory=FeatureVideoCounts)
    sources: tuple[FeatureSourceRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class BestResult:
    """The feature version with the highest value of a metric, and that evaluation."""

    feature: FeatureVersionRecord
    evaluation: EvaluationRecord


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One (method, subset, metric): ``difference = value_b - value_a`` when both exist;
    ``params_a`` / ``params_b`` are the params hashes behind each value."""

    method: str
    subset: str
    metric: str
    value_a: float | None
    value_b: float | None
    difference: float | None
    params_a: str | None = None
    params_b: str | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    a: FeatureVersionRecord
    b: FeatureVersionRecord
    rows: tuple[ComparisonRow, ...]


def to_jsonable(obj: Any) -> Any:
    """Records (nested, in lists or tuples) as JSON types; datetimes as ISO 8601 strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, list | tuple):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, dict):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    return obj
