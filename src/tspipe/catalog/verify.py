"""Check that what the catalog points at is there: files, shards, parent rows, MLflow runs.

``verify`` reads the catalog (at head revision) and returns every problem found, never
raising for one: a checkpoint file missing or with another sha256, a feature version's
folder or a video's shard missing, a link to a row that is not there (every foreign key,
and ``feature_videos.reused_from``, which has none), an MLflow run that does not resolve.
URIs of another scheme than ``file`` (http, s3) are counted as not checked.
MLflow is asked through ``run_exists``, which the door builds: the catalog imports no
tracking code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Table, and_, select
from sqlalchemy.exc import DBAPIError

from tspipe.catalog import schema
from tspipe.catalog.engine import READ_ONLY, driver_problem, hidden_url, make_engine
from tspipe.catalog.migrate import require_head
from tspipe.errors import CatalogError
from tspipe.io import sha256_file
from tspipe.paths import RunPaths

logger = logging.getLogger(__name__)

# Links without a foreign key (the row may come from another catalog's copy of features).
EXTRA_LINKS: tuple[tuple[Column[Any], Column[Any]], ...] = (
    (schema.FeatureVideo.__table__.c.reused_from, schema.FeatureVersion.__table__.c.id),
)
# Tables whose rows carry an MLflow run id.
RUN_TABLES = (schema.Checkpoint.__table__, schema.FeatureVersion.__table__,
              schema.Evaluation.__table__)


@dataclass(frozen=True)
class Problem:
    kind: str  # missing-file, sha256-mismatch, missing-folder, missing-shard, dangling-link,
    # missing-run
    table: str
    key: str
    message: str


@dataclass
class VerifyReport:
    url: str
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # what -> how many checked
    not_checked: list[str] = field(default_factory=list)  # URIs of a remote scheme

    @property
    def ok(self) -> bool:
        return not self.problems

    def _count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


def local_path(uri: str, root: Path) -> Path | None:
    """The local file a catalog URI names (:meth:`RunPaths.resolve_uri`: ``file:///abs``,
    or a plain path, relative ones from the run directory ``root``); None for another
    scheme (http, s3)."""
    try:
        return RunPaths.at(root).resolve_uri(uri)
    except ValueError:
        return None


def _checked(uri: str, root: Path, report: VerifyReport, what: str) -> Path | None:
    """The local path of ``uri``, counted as one of ``what``; None (counted as not
    checked) for a remote URI."""
    path = local_path(uri, root)
    if path is None:
        report.not_checked.append(uri)
    else:
        report._count(what)
    return path


def _key(table: Table, row: Any) -> str:
    return ", ".join(f"{column.name}={getattr(row, column.name)}"
                     for column in table.primary_key.columns)


def _checkpoints(connection: Connection, root: Path, report: VerifyReport) -> None:
    table = schema.Checkpoint.__table__
    for row in connection.execute(select(table).where(table.c.uri.is_not(None))
                                  .order_by(table.c.sha256)):
        path = _checked(row.uri, root, report, "checkpoint files")
        if path is None:
            continue
        if not path.is_file():
            report.problems.append(Problem("missing-file", table.name, _key(table, row),
                                           f"checkpoint file {path} does not exist"))
        elif (found := sha256_file(path)) != row.sha256:
            report.problems.append(Problem("sha256-mismatch", table.name, _key(table, row),
                                           f"checkpoint file {path} has sha256 {found}"))


def _features(connection: Connection, root: Path, report: VerifyReport) -> None:
    versions, videos = schema.FeatureVersion.__table__, schema.FeatureVideo.__table__
    for version in connection.execute(select(versions).where(
            versions.c.storage_uri.is_not(None)).order_by(versions.c.id)):
        folder = _checked(version.storage_uri, root, report, "feature folders")
        if folder is None:
            continue
        if not folder.is_dir():
            report.problems.append(Problem("missing-folder", versions.name,
                                           _key(versions, version),
                                           f"feature folder {folder} does not exist"))
            continue
        for video in connection.execute(select(videos).where(
                videos.c.feature_version_id == version.id, videos.c.status == "ok",
                videos.c.shard.is_not(None)).order_by(videos.c.video_id)):
            report._count("shards")
            if not (folder / video.shard).is_file():
                report.problems.append(Problem(
                    "missing-shard", videos.name, _key(videos, video),
                    f"shard {video.shard} is not in {folder}"))


def _links() -> Iterator[tuple[Table, list[Column[Any]], list[Column[Any]]]]:
    """(child table, child columns, parent columns) of every foreign key and extra link."""
    for table in schema.Base.metadata.sorted_tables:
        for fk in table.foreign_key_constraints:
            yield table, list(fk.columns), [element.column for element in fk.elements]
    for child, parent in EXTRA_LINKS:
        yield child.table, [child], [parent]


def _dangling(connection: Connection, report: VerifyReport) -> None:
    for table, children, parents in _links():
        parent_table = parents[0].table.alias("parent")
        joined = table.outerjoin(parent_table, and_(*(
            child == parent_table.c[parent.name]
            for child, parent in zip(children, parents, strict=True))))
        query = (select(*table.primary_key.columns, *children).select_from(joined)
                 .where(*(child.is_not(None) for child in children),
                        parent_table.c[parents[0].name].is_(None)))
        report._count("links")
        names = ", ".join(child.name for child in children)
        target = f"{parents[0].table.name}." + ", ".join(parent.name for parent in parents)
        for row in connection.execute(query):
            values = ", ".join(str(getattr(row, child.name)) for child in children)
            report.problems.append(Problem("dangling-link", table.name, _key(table, row),
                                           f"{names} = {values}: no such {target}"))


def _runs(connection: Connection, run_exists: Callable[[str], bool],
          report: VerifyReport) -> None:
    known: dict[str, bool] = {}
    for table in RUN_TABLES:
        for row in connection.execute(select(table).where(table.c.mlflow_run_id.is_not(None))
                                      .order_by(*table.primary_key.columns)):
            run_id = row.mlflow_run_id
            if run_id not in known:
                known[run_id] = run_exists(run_id)
                report._count("mlflow runs")
            if not known[run_id]:
                report.problems.append(Problem("missing-run", table.name, _key(table, row),
                                               f"MLflow run {run_id} does not exist"))


def verify(url: str, root: Path, run_exists: Callable[[str], bool] | None = None
           ) -> VerifyReport:
    """Every problem of the catalog at ``url``; files are looked for from the run
    directory ``root``; MLflow run ids are checked only when ``run_exists`` is given."""
    engine = make_engine(url)
    report = VerifyReport(hidden_url(engine.url))
    try:
        require_head(engine)
        with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            _checkpoints(connection, root, report)
            _features(connection, root, report)
            _dangling(connection, report)
            if run_exists is not None:
                _runs(connection, run_exists, report)
    except DBAPIError as exc:
        raise CatalogError(f"cannot verify catalog {report.url}: "
                           f"{driver_problem(engine.url, exc)}") from exc
    finally:
        engine.dispose()
    logger.info("catalog %s: %d problems", report.url, len(report.problems))
    return report
