"""The catalog's tables as SQLAlchemy 2 typed mappings. Private to ``tspipe.catalog``.

Every constraint is named by ``NAMING_CONVENTION``, so SQLite and PostgreSQL carry the
same names and later (batch) migrations can drop or alter them by name. The hand-written
migration in ``migrations/versions`` must match these classes; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VIDEO_STATUSES = ("ok", "missing", "failed", "pending")
FEATURE_STATUSES = ("pending", "complete", "failed")
CHECKPOINT_ORIGINS = ("official", "pretrain", "scratch")
FEATURE_VIDEO_STATUSES = ("ok", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Dataset(Base):
    """An annotation file, read once: one row per (name, content hash)."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "annotation_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    annotation_sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    subsets: Mapped[list[str]]
    num_videos: Mapped[int] = mapped_column(Integer)
    num_segments: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    counts: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Video(Base):
    """A video of a dataset and what the pipeline knows about it (downloaded, decodable)."""

    __tablename__ = "videos"
    __table_args__ = (CheckConstraint(_one_of("status", VIDEO_STATUSES), name="status"),)

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    video_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    subset: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    num_frames: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """Encoder weights, keyed by the file's sha256; ``parent_sha256`` is what it started
    from (a TSP pretrain's Kinetics init), ``dataset_id`` what it was trained on."""

    __tablename__ = "checkpoints"
    __table_args__ = (CheckConstraint(_one_of("origin", CHECKPOINT_ORIGINS), name="origin"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    arch: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    parent_sha256: Mapped[str | None] = mapped_column(ForeignKey("checkpoints.sha256"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeatureVersion(Base):
    """Features of one dataset's videos from one checkpoint; ``id`` is their content hash."""

    __tablename__ = "feature_versions"
    __table_args__ = (CheckConstraint(_one_of("status", FEATURE_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    checkpoint_sha256: Mapped[str] = mapped_column(ForeignKey("checkpoints.sha256"))
    encoder: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(64))
    storage_uri: Mapped[str | None] = mapped_column(Text)
    dvc_md5: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    num_videos: Mapped[int | None] = mapped_column(Integer)
    feature_dim: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeatureVideo(Base):
    """One video of a feature version: whether its features were written, how many clips,
    and where. ``reused_from`` is the feature version whose stored features were copied
    (NULL when computed in this version); ``shard`` the HDF5 file, relative to the
    version's folder, that holds them."""

    __tablename__ = "feature_videos"
    __table_args__ = (CheckConstraint(_one_of("status", FEATURE_VIDEO_STATUSES), name="status"),)

    feature_version_id: Mapped[str] = mapped_column(ForeignKey("feature_versions.id"),
                                                    primary_key=True)
    video_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    num_clips: Mapped[int | None] = mapped_column(Integer)
    feature_dim: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    reused_from: Mapped[str | None] = mapped_column(String(64))
    shard: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FeatureVersionSource(Base):
    """A feature version made from others (I3D two-stream: RGB ++ flow): each source version
    with its place in the concatenation (``position`` 0 first) and its stream name."""

    __tablename__ = "feature_version_sources"

    feature_version_id: Mapped[str] = mapped_column(ForeignKey("feature_versions.id"),
                                                    primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("feature_versions.id"))
    stream: Mapped[str] = mapped_column(String(32))


class Evaluation(Base):
    """One number a localization method scored with a feature version on a subset, under
    one set of localize params (``params``; ``params_hash`` is the MLflow run's
    ``tspipe.params_hash`` tag) and one code version of the evaluation.

    Append-only: a run with other params or code adds rows and never changes earlier ones;
    the same params and code again are the same fact (no new row). Rows written before
    revision 0004 have ``params_hash`` and ``code_version`` '' and no params.
    """

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint(
        "feature_version_id", "method", "subset", "metric", "params_hash", "code_version",
        # Named by hand: the convention's name would pass PostgreSQL's 63 characters.
        name="uq_evaluations_record"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_version_id: Mapped[str] = mapped_column(ForeignKey("feature_versions.id"))
    method: Mapped[str] = mapped_column(String(32))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    subset: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    params_hash: Mapped[str] = mapped_column(String(64), server_default="")
    params: Mapped[dict[str, Any] | None]
    code_version: Mapped[str] = mapped_column(String(64), server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
