"""The catalog API: register what the pipeline made, ask which features scored best.

Every registration is one transaction (a failure leaves nothing half-written) and is
idempotent: rows are keyed by unique constraints and written with INSERT ... ON CONFLICT
(``tspipe.catalog.writes``), so two processes registering the same things at once leave
one row per key. Values are checked here, before the transaction; the reads are
``tspipe.catalog.queries``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import tspipe.catalog.queries as q
from tspipe.catalog._convert import check_method, check_value, feature_video_values, one_of
from tspipe.catalog.engine import READ_ONLY, driver_problem, hidden_url, make_engine
from tspipe.catalog.migrate import require_head
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
from tspipe.catalog.schema import CHECKPOINT_ORIGINS, FEATURE_STATUSES, utcnow
from tspipe.catalog.writes import (
    insert_checkpoint,
    insert_dataset,
    insert_evaluations,
    insert_feature_version,
    replace_feature_sources,
    update_feature_status,
    upsert_feature_videos,
    upsert_videos,
)
from tspipe.errors import CatalogError
from tspipe.provenance import check_sha256, feature_version_id

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Rows per INSERT statement of upsert_videos and record_feature_videos; all of them share
# one transaction.
_CHUNK_ROWS = 500


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
        except OperationalError as exc:  # read-only, locked past busy_timeout, conn. lost
            raise self._problem(what, exc) from exc
        try:
            with self._writer.begin() as session:
                return work(session)
        except IntegrityError as exc:  # a conflict the retry did not resolve
            raise CatalogError(f"catalog {self.url}: {what}: {exc.orig}") from exc
        except OperationalError as exc:
            raise self._problem(what, exc) from exc

    def _problem(self, what: str, exc: DBAPIError) -> CatalogError:
        return CatalogError(f"catalog {self.url}: {what}: "
                            f"{driver_problem(self._engine.url, exc)}")

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session whose transaction only reads (SQLite: BEGIN DEFERRED, no write lock)."""
        try:
            with self._reader() as session:
                yield session
        except OperationalError as exc:
            raise self._problem("read", exc) from exc

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
        return self._write(f"register dataset {name!r}",
                           lambda session: insert_dataset(session, values))

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
        return self._write(f"upsert videos of dataset {dataset_id}", lambda session: (
            upsert_videos(session, dataset_id, ordered, _CHUNK_ROWS)))

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
        one_of(origin, CHECKPOINT_ORIGINS, field="origin", item=item)
        parent = None if parent_sha256 is None else check_sha256(
            parent_sha256, field=f"{item}: parent_sha256")
        values = {"sha256": sha, "arch": arch, "origin": origin, "uri": uri,
                  "mlflow_run_id": mlflow_run_id, "params": dict(params or {}),
                  "parent_sha256": parent, "dataset_id": dataset_id, "git_commit": git_commit}
        return self._write(f"register {item}",
                           lambda session: insert_checkpoint(session, values, item=item))

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
        one_of(status, FEATURE_STATUSES, field="status", item=item)
        values = {"id": fid, "dataset_id": dataset_id,
                  "checkpoint_sha256": checkpoint_sha256.lower(), "encoder": encoder,
                  "params": dict(params), "manifest_sha256": manifest_sha256.lower(),
                  "code_version": code_version, "storage_uri": storage_uri,
                  "dvc_md5": dvc_md5, "mlflow_run_id": mlflow_run_id, "git_commit": git_commit,
                  "status": status, "num_videos": num_videos, "feature_dim": feature_dim}
        return self._write(f"register {item}",
                           lambda session: insert_feature_version(session, values, item=item))

    def set_feature_status(
        self, feature_version_id: str, status: str, *, storage_uri: str | None = None,
        dvc_md5: str | None = None, mlflow_run_id: str | None = None,
        num_videos: int | None = None, feature_dim: int | None = None,
    ) -> FeatureVersionRecord:
        """Set the status (and the given fields; None keeps the stored value)."""
        item = f"feature version {feature_version_id[:12]}"
        one_of(status, FEATURE_STATUSES, field="status", item=item)
        given = {"storage_uri": storage_uri, "dvc_md5": dvc_md5, "mlflow_run_id": mlflow_run_id,
                 "num_videos": num_videos, "feature_dim": feature_dim}
        return self._write(f"set status of {item}", lambda session: (
            update_feature_status(session, feature_version_id, status, given)))

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
        values = [feature_video_values(fid, latest[key], now)
                  for key in sorted(latest, key=str)]
        return self._write(f"record videos of {item}", lambda session: (
            upsert_feature_videos(session, fid, values, _CHUNK_ROWS)))

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
        return self._write(f"record sources of {item}", lambda session: (
            replace_feature_sources(session, fid, sources, item=item)))

    def record_evaluations(
        self, feature_version_id: str, *, method: str, subset: str,
        metrics: Mapping[str, float], dataset_id: int | None = None,
        mlflow_run_id: str | None = None, params: Mapping[str, Any] | None = None,
        params_hash: str = "", code_version: str = "",
    ) -> list[EvaluationRecord]:
        """Record the metrics of one evaluation run, in one transaction, with the params
        behind them (``params_hash`` names them: hex, as MLflow's ``tspipe.params_hash``
        tag) and the evaluation code's version.

        Append-only: other params or code add rows; the same ones again add nothing and
        change nothing (a missing MLflow run id is filled in). ``dataset_id`` defaults to
        the feature version's dataset.
        """
        item = f"evaluation {method}/{subset} of feature version {feature_version_id[:12]}"
        check_method(method)
        if not subset or not metrics:
            raise CatalogError(f"{item}: subset and at least one metric are required")
        for field, value in (("params_hash", params_hash), ("code_version", code_version)):
            if not isinstance(value, str) or len(value) > 64:
                raise CatalogError(f"{item}: {field} must be a string of at most 64 "
                                   f"characters, not {value!r}")
        if params is not None and not params_hash:
            raise CatalogError(f"{item}: params given without their params_hash")
        values = {metric: check_value(value, item=f"{item}: metric {metric!r}")
                  for metric, value in metrics.items()}
        return self._write(f"record {item}", lambda session: insert_evaluations(
            session, feature_version_id, method=method, subset=subset, values=values,
            dataset_id=dataset_id, mlflow_run_id=mlflow_run_id, params=params,
            params_hash=params_hash.lower(), code_version=code_version, item=item))

    def record_evaluation(
        self, feature_version_id: str, *, method: str, subset: str, metric: str,
        value: float, dataset_id: int | None = None, mlflow_run_id: str | None = None,
        params: Mapping[str, Any] | None = None, params_hash: str = "",
        code_version: str = "",
    ) -> EvaluationRecord:
        """Record one metric (see ``record_evaluations``)."""
        return self.record_evaluations(
            feature_version_id, method=method, subset=subset, metrics={metric: value},
            dataset_id=dataset_id, mlflow_run_id=mlflow_run_id, params=params,
            params_hash=params_hash, code_version=code_version)[0]

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

    def show(self, feature_version_id: str, *, params_hash: str | None = None,
             every: bool = False) -> FeatureLineage:
        """A feature version (id or unique prefix) with everything it came from and its
        scores: by default the latest evaluation per (method, subset); ``params_hash`` (a
        prefix): those of these localize params; ``every``: all of them."""
        with self._read() as session:
            return q.lineage(session, feature_version_id, _choice(params_hash, every))

    def best(self, metric: str, dataset: str | int | None = None, method: str | None = None,
             subset: str | None = None, *, params_hash: str | None = None,
             every: bool = False) -> BestResult | None:
        """The feature version with the highest ``metric`` (``"gtad.average_map"``, or
        ``"average_map"`` with ``method``) among the evaluations chosen as in ``show``,
        or None if none recorded it."""
        with self._read() as session:
            return q.best(session, metric, dataset, method, subset,
                          _choice(params_hash, every))

    def compare(self, id_a: str, id_b: str, *, params_hash: str | None = None,
                every: bool = False) -> Comparison:
        """Both versions' values per (method, subset, metric), chosen as in ``show``
        (``every``: per params hash too); ``difference`` is b - a."""
        with self._read() as session:
            return q.compare(session, id_a, id_b, _choice(params_hash, every))


def _choice(params_hash: str | None, every: bool) -> q.Choice:
    if params_hash is not None and every:
        raise CatalogError("choose the evaluations by params hash or take all of them, "
                           "not both")
    if params_hash is not None and len(params_hash.strip()) < 4:
        raise CatalogError(f"params hash {params_hash!r}: give at least 4 hex digits")
    return q.Choice(params_hash, every)
