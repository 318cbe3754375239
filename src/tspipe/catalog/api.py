"""The catalog API: register what the pipeline made, ask which features scored best.

Every registration is one transaction (a failure leaves nothing half-written) and is
idempotent: rows are keyed by unique constraints and written with INSERT ... ON CONFLICT,
so two processes registering the same things at once leave one row per key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tspipe.catalog import _convert as cv
from tspipe.catalog import queries as q
from tspipe.catalog.engine import READ_ONLY, hidden_url, make_engine
from tspipe.catalog.migrate import require_head
from tspipe.catalog.models import (
    CHECKPOINT_ORIGINS,
    FEATURE_STATUSES,
    Checkpoint,
    Dataset,
    Evaluation,
    FeatureVersion,
    FeatureVersionSource,
    FeatureVideo,
    Video,
    utcnow,
)
from tspipe.catalog.records import (
    BestResult,
    CheckpointRecord,
    Comparison,
    DatasetRecord,
    EvaluationRecord,
    FeatureLineage,
    FeatureVersionRecord,
    FeatureVideoRecord,
    FeatureVideoRow,
    VideoRecord,
    VideoRow,
)
from tspipe.errors import CatalogError
from tspipe.provenance import check_sha256, feature_version_id

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Rows per INSERT statement of upsert_videos and record_feature_videos; all of them share
# one transaction.
_CHUNK_ROWS = 500


def _insert(session: Session, model: type[Any]) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``_do_update``."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    return dialect.insert(model)


class Catalog:
    """The feature catalog at ``url`` (``sqlite:///catalog.db``, ``postgresql://...``).

    Opening checks that the database is migrated to this tspipe's newest revision, else
    raises CatalogError telling to run ``tspipe catalog upgrade``.
    """

    def __init__(self, url: str | URL) -> None:
        self._engine = make_engine(url)
        self.url = hidden_url(self._engine.url)
        try:
            require_head(self._engine)
        except BaseException:
            self._engine.dispose()
            raise
        self._writer = sessionmaker(self._engine, expire_on_commit=False)
        self._reader = sessionmaker(self._engine.execution_options(**{READ_ONLY: True}))

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _write(self, what: str, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction. A unique-key race with another writer raises
        IntegrityError once; the retry then finds that writer's committed row."""
        try:
            with self._writer.begin() as session:
                return work(session)
        except IntegrityError as exc:
            logger.info("catalog %s: %s raced another writer (%s); retrying", self.url, what,
                        exc.orig)
        except OperationalError as exc:  # locked past busy_timeout, connection lost
            raise CatalogError(f"catalog {self.url}: {what}: {exc.orig}") from exc
        try:
            with self._writer.begin() as session:
                return work(session)
        except (IntegrityError, OperationalError) as exc:
            raise CatalogError(f"catalog {self.url}: {what}: {exc.orig}") from exc

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session whose transaction only reads (SQLite: BEGIN DEFERRED, no write lock)."""
        try:
            with self._reader() as session:
                yield session
        except OperationalError as exc:
            raise CatalogError(f"catalog {self.url}: {exc.orig}") from exc

    # -- registration ---------------------------------------------------------------------

    def register_dataset(
        self, name: str, annotation_sha256: str, *, format: str, subsets: Sequence[str],
        num_videos: int, num_segments: int, num_classes: int,
        counts: Mapping[str, Any] | None = None,
    ) -> DatasetRecord:
        """The dataset row for (name, annotation hash), created on first call."""
        if not name:
            raise CatalogError("dataset name is empty")
        sha = check_sha256(annotation_sha256, field=f"dataset {name!r}: annotation_sha256")
        values = {"name": name, "annotation_sha256": sha, "format": format,
                  "subsets": list(subsets), "num_videos": num_videos,
                  "num_segments": num_segments, "num_classes": num_classes,
                  "counts": dict(counts or {})}

        def work(session: Session) -> DatasetRecord:
            session.execute(_insert(session, Dataset).values(**values, created_at=utcnow())
                            .on_conflict_do_nothing(index_elements=["name", "annotation_sha256"]))
            row = session.scalars(select(Dataset).where(
                Dataset.name == name, Dataset.annotation_sha256 == sha)).one()
            return cv.dataset_record(row)

        return self._write(f"register dataset {name!r}", work)

    def upsert_videos(self, dataset_id: int, rows: Iterable[VideoRow]) -> int:
        """Insert or update videos of a dataset in one transaction; return how many distinct
        video ids were written (a repeated id: the last row wins). A bad row anywhere rolls
        the whole batch back."""
        latest: dict[str, VideoRow] = {}
        for row in rows:
            if not isinstance(row, VideoRow):
                raise CatalogError(f"dataset {dataset_id}: expected VideoRow, got {row!r}")
            latest[row.video_id] = row
        # One order for every writer: two PostgreSQL transactions upserting overlapping
        # videos then lock rows in the same order and cannot deadlock.
        ordered = [latest[key] for key in sorted(latest, key=str)]

        def work(session: Session) -> int:
            q.require(session, Dataset, dataset_id, "dataset")
            stmt = _insert(session, Video)
            new = stmt.excluded
            keep = {name: func.coalesce(getattr(new, name), getattr(Video, name))
                    for name in ("subset", "source", "sha256", "duration", "fps", "num_frames")}
            stmt = stmt.on_conflict_do_update(
                index_elements=["dataset_id", "video_id"],
                set_={**keep, "status": new.status, "reason": new.reason,
                      "updated_at": new.updated_at})
            now = utcnow()
            for start in range(0, len(ordered), _CHUNK_ROWS):
                chunk = ordered[start:start + _CHUNK_ROWS]
                session.execute(stmt, [cv.video_values(dataset_id, row, now) for row in chunk])
            return len(ordered)

        return self._write(f"upsert videos of dataset {dataset_id}", work)

    def register_checkpoint(
        self, sha256: str, *, arch: str, origin: str, uri: str | None = None,
        mlflow_run_id: str | None = None, params: Mapping[str, Any] | None = None,
        parent_sha256: str | None = None, dataset_id: int | None = None,
        git_commit: str | None = None,
    ) -> CheckpointRecord:
        """The checkpoint row for a weights file's sha256, created on first call.

        ``params`` are the pretrain run's parameters; ``parent_sha256`` the checkpoint it
        started from; ``dataset_id`` the dataset it was trained on.
        """
        sha = check_sha256(sha256, field="checkpoint sha256")
        item = f"checkpoint {sha[:12]}"
        cv.one_of(origin, CHECKPOINT_ORIGINS, field="origin", item=item)
        parent = None if parent_sha256 is None else check_sha256(
            parent_sha256, field=f"{item}: parent_sha256")

        def work(session: Session) -> CheckpointRecord:
            if parent is not None and parent != sha:
                q.require(session, Checkpoint, parent, f"{item}: parent checkpoint")
            if dataset_id is not None:
                q.require(session, Dataset, dataset_id, f"{item}: dataset")
            session.execute(_insert(session, Checkpoint).values(
                sha256=sha, arch=arch, origin=origin, uri=uri, mlflow_run_id=mlflow_run_id,
                params=dict(params or {}), parent_sha256=parent, dataset_id=dataset_id,
                git_commit=git_commit, created_at=utcnow(),
            ).on_conflict_do_nothing(index_elements=["sha256"]))
            row = q.require(session, Checkpoint, sha, "checkpoint")
            if (row.arch, row.origin) != (arch, origin):
                raise CatalogError(f"{item} is registered as arch {row.arch!r}, origin "
                                   f"{row.origin!r}, not {arch!r}, {origin!r}")
            return cv.checkpoint_record(row)

        return self._write(f"register {item}", work)

    def register_feature_version(
        self, *, dataset_id: int, checkpoint_sha256: str, encoder: str,
        params: Mapping[str, Any], manifest_sha256: str, code_version: str,
        storage_uri: str | None = None, dvc_md5: str | None = None,
        mlflow_run_id: str | None = None, git_commit: str | None = None,
        status: str = "pending", num_videos: int | None = None, feature_dim: int | None = None,
    ) -> FeatureVersionRecord:
        """The feature version for these inputs; its id is ``feature_version_id(...)`` of
        them, so registering the same inputs again returns the stored row unchanged."""
        fid = feature_version_id(checkpoint_sha256, params, manifest_sha256, code_version)
        item = f"feature version {fid[:12]}"
        cv.one_of(status, FEATURE_STATUSES, field="status", item=item)
        checkpoint = checkpoint_sha256.lower()

        def work(session: Session) -> FeatureVersionRecord:
            q.require(session, Dataset, dataset_id, f"{item}: dataset")
            q.require(session, Checkpoint, checkpoint, f"{item}: checkpoint")
            now = utcnow()
            session.execute(_insert(session, FeatureVersion).values(
                id=fid, dataset_id=dataset_id, checkpoint_sha256=checkpoint, encoder=encoder,
                params=dict(params), manifest_sha256=manifest_sha256.lower(),
                code_version=code_version, storage_uri=storage_uri, dvc_md5=dvc_md5,
                mlflow_run_id=mlflow_run_id, git_commit=git_commit, status=status,
                num_videos=num_videos, feature_dim=feature_dim, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["id"]))
            return q.feature(session, fid)

        return self._write(f"register {item}", work)

    def set_feature_status(
        self, feature_version_id: str, status: str, *, storage_uri: str | None = None,
        dvc_md5: str | None = None, mlflow_run_id: str | None = None,
        num_videos: int | None = None, feature_dim: int | None = None,
    ) -> FeatureVersionRecord:
        """Set the status (and the given fields; None keeps the stored value)."""
        item = f"feature version {feature_version_id[:12]}"
        cv.one_of(status, FEATURE_STATUSES, field="status", item=item)
        given = {"storage_uri": storage_uri, "dvc_md5": dvc_md5, "mlflow_run_id": mlflow_run_id,
                 "num_videos": num_videos, "feature_dim": feature_dim}

        def work(session: Session) -> FeatureVersionRecord:
            row = q.require(session, FeatureVersion, feature_version_id, "feature version")
            row.status, row.updated_at = status, utcnow()
            for name, value in given.items():
                if value is not None:
                    setattr(row, name, value)
            session.flush()
            return q.feature(session, feature_version_id)

        return self._write(f"set status of {item}", work)

    def record_feature_videos(self, feature_version_id: str,
                              rows: Iterable[FeatureVideoRow]) -> int:
        """Insert or replace each video's outcome in a feature version, in one transaction;
        return how many distinct video ids were written (a repeated id: the last row wins).

        A row replaces every stored field of its (feature version, video), so recording the
        same rows again leaves the same rows. A bad row anywhere, or a feature version not
        in the catalog, raises CatalogError and writes nothing.
        """
        fid = feature_version_id
        item = f"feature version {fid[:12]}"
        latest: dict[str, FeatureVideoRow] = {}
        for row in rows:
            if not isinstance(row, FeatureVideoRow):
                raise CatalogError(f"{item}: expected FeatureVideoRow, got {row!r}")
            latest[row.video_id] = row
        now = utcnow()
        # Checked before the transaction; sorted: one lock order for concurrent writers.
        values = [cv.feature_video_values(fid, latest[key], now)
                  for key in sorted(latest, key=str)]

        def work(session: Session) -> int:
            q.require(session, FeatureVersion, fid, "feature version")
            stmt = _insert(session, FeatureVideo)
            new = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=["feature_version_id", "video_id"],
                set_={name: getattr(new, name) for name in (
                    "status", "num_clips", "feature_dim", "reason", "reused_from", "shard",
                    "updated_at")})
            for start in range(0, len(values), _CHUNK_ROWS):
                session.execute(stmt, values[start:start + _CHUNK_ROWS])
            return len(values)

        return self._write(f"record videos of {item}", work)

    def record_feature_sources(self, feature_version_id: str,
                               sources: Sequence[tuple[str, str]]) -> int:
        """Record that ``feature_version_id`` concatenates ``sources`` (``(stream, source
        version id)`` in order); recording the same sources again changes nothing, other
        sources replace them. Every version must be in the catalog."""
        fid = feature_version_id
        item = f"feature version {fid[:12]}"
        if len(sources) < 2:
            raise CatalogError(f"{item}: a concatenation has at least two sources")
        if fid in {s for _, s in sources}:
            raise CatalogError(f"{item}: a version cannot be its own source")

        def work(session: Session) -> int:
            q.require(session, FeatureVersion, fid, "feature version")
            for stream, source in sources:
                q.require(session, FeatureVersion, source, f"{item}: {stream} source")
            session.execute(delete(FeatureVersionSource)
                            .where(FeatureVersionSource.feature_version_id == fid))
            session.add_all(FeatureVersionSource(feature_version_id=fid, position=i,
                                                 source_id=source, stream=stream)
                            for i, (stream, source) in enumerate(sources))
            return len(sources)

        return self._write(f"record sources of {item}", work)

    def record_evaluations(
        self, feature_version_id: str, *, method: str, subset: str,
        metrics: Mapping[str, float], dataset_id: int | None = None,
        mlflow_run_id: str | None = None,
    ) -> list[EvaluationRecord]:
        """Record (or replace) several metrics of one evaluation run, in one transaction.

        ``dataset_id`` defaults to the feature version's dataset.
        """
        item = f"evaluation {method}/{subset} of feature version {feature_version_id[:12]}"
        cv.check_method(method)
        if not subset or not metrics:
            raise CatalogError(f"{item}: subset and at least one metric are required")
        values = {metric: cv.check_value(value, item=f"{item}: metric {metric!r}")
                  for metric, value in metrics.items()}

        def work(session: Session) -> list[EvaluationRecord]:
            feature = q.require(session, FeatureVersion, feature_version_id, "feature version")
            on = feature.dataset_id if dataset_id is None else q.require(
                session, Dataset, dataset_id, f"{item}: dataset").id
            stmt = _insert(session, Evaluation)
            stmt = stmt.on_conflict_do_update(
                index_elements=["feature_version_id", "method", "subset", "metric"],
                set_={"value": stmt.excluded.value, "dataset_id": stmt.excluded.dataset_id,
                      "mlflow_run_id": func.coalesce(stmt.excluded.mlflow_run_id,
                                                     Evaluation.mlflow_run_id)})
            now = utcnow()
            session.execute(stmt, [  # sorted: one lock order for concurrent writers
                {"feature_version_id": feature.id, "method": method, "dataset_id": on,
                 "subset": subset, "metric": metric, "value": value,
                 "mlflow_run_id": mlflow_run_id, "created_at": now}
                for metric, value in sorted(values.items())])
            rows = session.scalars(select(Evaluation).where(
                Evaluation.feature_version_id == feature.id, Evaluation.method == method,
                Evaluation.subset == subset, Evaluation.metric.in_(values),
            ).order_by(Evaluation.metric)).all()
            return [cv.evaluation_record(row) for row in rows]

        return self._write(f"record {item}", work)

    def record_evaluation(
        self, feature_version_id: str, *, method: str, subset: str, metric: str,
        value: float, dataset_id: int | None = None, mlflow_run_id: str | None = None,
    ) -> EvaluationRecord:
        """Record (or replace) one metric: one row per (feature version, method, subset,
        metric)."""
        return self.record_evaluations(
            feature_version_id, method=method, subset=subset, metrics={metric: value},
            dataset_id=dataset_id, mlflow_run_id=mlflow_run_id)[0]

    # -- queries (read-only transactions) -------------------------------------------------

    def datasets(self) -> list[DatasetRecord]:
        with self._read() as session:
            return q.datasets(session)

    def videos(self, dataset: str | int | None = None,
               status: str | None = None) -> list[VideoRecord]:
        """Videos, optionally of one dataset (name or id) and with one status."""
        with self._read() as session:
            return q.videos(session, dataset, status)

    def feature_videos(self, feature_version_id: str,
                       status: str | None = None) -> list[FeatureVideoRecord]:
        """The per-video rows of a feature version (id or unique prefix), by video id,
        optionally only those with one status (ok, failed)."""
        with self._read() as session:
            return q.feature_videos(session, feature_version_id, status)

    def checkpoints(self, arch: str | None = None) -> list[CheckpointRecord]:
        """Encoder checkpoints (official imports, pretrain outputs, random inits), oldest
        first, optionally of one architecture."""
        with self._reader() as session:
            return q.checkpoints(session, arch)

    def list_feature_versions(self, dataset: str | int | None = None,
                              encoder: str | None = None) -> list[FeatureVersionRecord]:
        """Feature versions, oldest first, optionally of one dataset and one encoder."""
        with self._read() as session:
            return q.feature_versions(session, dataset, encoder)

    def show(self, feature_version_id: str) -> FeatureLineage:
        """A feature version (id or unique prefix) with everything it came from and every
        score it got."""
        with self._read() as session:
            return q.lineage(session, feature_version_id)

    def best(self, metric: str, dataset: str | int | None = None, method: str | None = None,
             subset: str | None = None) -> BestResult | None:
        """The feature version with the highest ``metric`` (``"gtad.average_map"``, or
        ``"average_map"`` with ``method``), or None if nothing recorded it."""
        with self._read() as session:
            return q.best(session, metric, dataset, method, subset)

    def compare(self, id_a: str, id_b: str) -> Comparison:
        """Both versions' values per (method, subset, metric); ``difference`` is b - a."""
        with self._read() as session:
            return q.compare(session, id_a, id_b)
