"""Read-side queries of the catalog: each takes an open Session and returns records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from tspipe.catalog._convert import (
    checkpoint_record,
    dataset_record,
    evaluation_record,
    feature_record,
    feature_video_record,
    one_of,
    utc,
    video_record,
)
from tspipe.catalog.records import (
    BestResult,
    CheckpointRecord,
    Comparison,
    ComparisonRow,
    DatasetRecord,
    FeatureLineage,
    FeatureSourceRecord,
    FeatureVersionRecord,
    FeatureVideoCounts,
    FeatureVideoRecord,
    VideoRecord,
)
from tspipe.catalog.schema import (
    FEATURE_VIDEO_STATUSES,
    VIDEO_STATUSES,
    Checkpoint,
    Dataset,
    Evaluation,
    FeatureVersion,
    FeatureVersionSource,
    FeatureVideo,
    Video,
)
from tspipe.errors import CatalogError

T = TypeVar("T")
_METHOD_METRIC = re.compile(r"^([a-z][a-z0-9_]*)\.(.+)$")
# A shorter prefix would match too much to be a useful handle for a person.
_MIN_PREFIX = 4


def require(session: Session, model: type[T], key: Any, what: str) -> T:
    row = session.get(model, key)
    if row is None:
        raise CatalogError(f"{what} {key!r} is not in the catalog")
    return row


def feature(session: Session, fid: str) -> FeatureVersionRecord:
    row = require(session, FeatureVersion, fid, "feature version")
    name = session.scalar(select(Dataset.name).where(Dataset.id == row.dataset_id))
    return feature_record(row, name or "")


def resolve(session: Session, id_or_prefix: str) -> str:
    """The full feature version id from the id or a unique prefix of it (like git's)."""
    key = id_or_prefix.strip().lower()
    if session.get(FeatureVersion, key) is not None:
        return key
    found: list[str] = []
    if len(key) >= _MIN_PREFIX:
        found = list(session.scalars(
            select(FeatureVersion.id)
            .where(FeatureVersion.id.startswith(key, autoescape=True)).limit(2)))
    if len(found) == 1:
        return found[0]
    why = "matches several feature versions" if found else "matches no feature version"
    raise CatalogError(f"feature version {id_or_prefix!r} {why} in the catalog")


def dataset_ids(dataset: str | int) -> Select[tuple[int]]:
    """Ids of a dataset given by id (int) or by name (str: every annotation version)."""
    match = Dataset.id == dataset if isinstance(dataset, int) else Dataset.name == dataset
    return select(Dataset.id).where(match)


def split_metric(metric: str, method: str | None = None) -> tuple[str | None, str]:
    """``"gtad.average_map"`` -> ``("gtad", "average_map")``; ``"ar@100"`` -> ``(method, ...)``.

    Method names are identifiers (checked when recorded), so ``"map@0.5"`` stays whole.
    """
    found = _METHOD_METRIC.match(metric)
    if found is None:
        return method, metric
    if method is not None and method != found.group(1):
        raise CatalogError(f"metric {metric!r} names method {found.group(1)!r}, "
                           f"but method {method!r} was asked for")
    return found.group(1), found.group(2)


def datasets(session: Session) -> list[DatasetRecord]:
    rows = session.scalars(select(Dataset).order_by(Dataset.id))
    return [dataset_record(row) for row in rows]


def videos(session: Session, dataset: str | int | None = None,
           status: str | None = None) -> list[VideoRecord]:
    stmt = (select(Video, Dataset.name).join(Dataset, Video.dataset_id == Dataset.id)
            .order_by(Video.dataset_id, Video.video_id))
    if dataset is not None:
        stmt = stmt.where(Video.dataset_id.in_(dataset_ids(dataset)))
    if status is not None:
        one_of(status, VIDEO_STATUSES, field="status", item="videos query")
        stmt = stmt.where(Video.status == status)
    return [video_record(row, name) for row, name in session.execute(stmt)]


def checkpoints(session: Session, arch: str | None = None) -> list[CheckpointRecord]:
    stmt = select(Checkpoint).order_by(Checkpoint.created_at, Checkpoint.sha256)
    if arch is not None:
        stmt = stmt.where(Checkpoint.arch == arch)
    return [checkpoint_record(row) for row in session.scalars(stmt)]


def feature_versions(session: Session, dataset: str | int | None = None,
                     encoder: str | None = None) -> list[FeatureVersionRecord]:
    stmt = (select(FeatureVersion, Dataset.name)
            .join(Dataset, FeatureVersion.dataset_id == Dataset.id)
            .order_by(FeatureVersion.created_at, FeatureVersion.id))
    if dataset is not None:
        stmt = stmt.where(FeatureVersion.dataset_id.in_(dataset_ids(dataset)))
    if encoder is not None:
        stmt = stmt.where(FeatureVersion.encoder == encoder)
    return [feature_record(row, name) for row, name in session.execute(stmt)]


def feature_videos(session: Session, id_or_prefix: str,
                   status: str | None = None) -> list[FeatureVideoRecord]:
    fid = resolve(session, id_or_prefix)
    stmt = (select(FeatureVideo).where(FeatureVideo.feature_version_id == fid)
            .order_by(FeatureVideo.video_id))
    if status is not None:
        one_of(status, FEATURE_VIDEO_STATUSES, field="status",
                  item=f"videos of feature version {fid[:12]}")
        stmt = stmt.where(FeatureVideo.status == status)
    return [feature_video_record(row) for row in session.scalars(stmt)]


def feature_video_counts(session: Session, fid: str) -> FeatureVideoCounts:
    """ok / failed videos of a feature version, and how many of the ok ones were reused
    (their features copied from another version)."""
    counts = dict(session.execute(
        select(FeatureVideo.status, func.count())
        .where(FeatureVideo.feature_version_id == fid).group_by(FeatureVideo.status)).all())
    reused = session.scalar(
        select(func.count()).select_from(FeatureVideo)
        .where(FeatureVideo.feature_version_id == fid, FeatureVideo.status == "ok",
               FeatureVideo.reused_from.is_not(None)))
    return FeatureVideoCounts(ok=counts.get("ok", 0), failed=counts.get("failed", 0),
                              reused=reused or 0)


class Choice(NamedTuple):
    """Which evaluation records a query reads: ``every`` one, those of one params hash
    (``params_hash``, a prefix), or by default the latest per (feature version, method,
    subset): the rows of the params hash and code version that scored last."""

    params_hash: str | None = None
    every: bool = False


LATEST = Choice()


def chosen(rows: Sequence[Evaluation], choice: Choice) -> list[Evaluation]:
    """The rows of ``rows`` that ``choice`` keeps, in their order."""
    if choice.params_hash is not None:
        key = choice.params_hash.strip().lower()
        return [r for r in rows if key and r.params_hash.startswith(key)]
    if choice.every:
        return list(rows)
    latest: dict[tuple[str, str, str], tuple[tuple[Any, int], tuple[str, str]]] = {}
    for r in rows:
        group, rank = (r.feature_version_id, r.method, r.subset), (utc(r.created_at), r.id)
        if group not in latest or rank > latest[group][0]:
            latest[group] = (rank, (r.params_hash, r.code_version))
    return [r for r in rows if (r.params_hash, r.code_version)
            == latest[(r.feature_version_id, r.method, r.subset)][1]]


def lineage(session: Session, id_or_prefix: str, choice: Choice = LATEST) -> FeatureLineage:
    version = feature(session, resolve(session, id_or_prefix))
    dataset = dataset_record(require(session, Dataset, version.dataset_id, "dataset"))
    checkpoint = checkpoint_record(
        require(session, Checkpoint, version.checkpoint_sha256, "checkpoint"))
    ancestors: list[CheckpointRecord] = []
    parent, seen = checkpoint.parent_sha256, {checkpoint.sha256}
    while parent is not None and parent not in seen:
        ancestor = checkpoint_record(require(session, Checkpoint, parent, "checkpoint"))
        ancestors.append(ancestor)
        seen.add(parent)
        parent = ancestor.parent_sha256
    evaluations = tuple(evaluation_record(row) for row in chosen(session.scalars(
        select(Evaluation).where(Evaluation.feature_version_id == version.id)
        .order_by(Evaluation.method, Evaluation.subset, Evaluation.metric,
                  Evaluation.created_at, Evaluation.id)).all(), choice))
    runs = [version.mlflow_run_id, checkpoint.mlflow_run_id,
            *(a.mlflow_run_id for a in ancestors), *(e.mlflow_run_id for e in evaluations)]
    sources = tuple(FeatureSourceRecord(row.position, row.stream, feature(session, row.source_id))
                    for row in session.scalars(
                        select(FeatureVersionSource)
                        .where(FeatureVersionSource.feature_version_id == version.id)
                        .order_by(FeatureVersionSource.position)))
    return FeatureLineage(
        feature=version, dataset=dataset, checkpoint=checkpoint, ancestors=tuple(ancestors),
        evaluations=evaluations, mlflow_run_ids=tuple(dict.fromkeys(r for r in runs if r)),
        video_counts=feature_video_counts(session, version.id), sources=sources)


def best(session: Session, metric: str, dataset: str | int | None = None,
         method: str | None = None, subset: str | None = None,
         choice: Choice = LATEST) -> BestResult | None:
    method, name = split_metric(metric, method)
    where: list[ColumnElement[bool]] = [Evaluation.metric == name]
    if method is not None:
        where.append(Evaluation.method == method)
    if subset is not None:
        where.append(Evaluation.subset == subset)
    if dataset is not None:
        where.append(Evaluation.dataset_id.in_(dataset_ids(dataset)))
    rows = session.execute(
        select(Evaluation, FeatureVersion.created_at)
        .join(FeatureVersion, Evaluation.feature_version_id == FeatureVersion.id)
        .where(*where)).all()
    made = {e.feature_version_id: utc(created) for e, created in rows}
    kept = chosen([e for e, _ in rows], choice)
    if not kept:
        return None
    # Ties go to the older feature version (the first to reach the value), then the
    # older record.
    top = min(kept, key=lambda e: (-e.value, made[e.feature_version_id],
                                   e.feature_version_id, utc(e.created_at), e.id))
    return BestResult(feature=feature(session, top.feature_version_id),
                      evaluation=evaluation_record(top))


def compare(session: Session, id_a: str, id_b: str, choice: Choice = LATEST) -> Comparison:
    """Both versions' chosen values per (method, subset, metric), and per params hash
    too when ``choice.every``; where a version has several, the latest."""
    versions = [feature(session, resolve(session, key)) for key in (id_a, id_b)]
    values: list[dict[tuple[str, ...], Evaluation]] = []
    for version in versions:
        rows = chosen(session.scalars(
            select(Evaluation).where(Evaluation.feature_version_id == version.id)
            .order_by(Evaluation.created_at, Evaluation.id)).all(), choice)
        values.append({(e.method, e.subset, e.metric,
                         *((e.params_hash,) if choice.every else ())): e for e in rows})
    out = []
    for key in sorted(values[0].keys() | values[1].keys()):
        a, b = values[0].get(key), values[1].get(key)
        out.append(ComparisonRow(
            key[0], key[1], key[2], value_a=None if a is None else a.value,
            value_b=None if b is None else b.value,
            difference=None if a is None or b is None else b.value - a.value,
            params_a=None if a is None else a.params_hash,
            params_b=None if b is None else b.params_hash))
    return Comparison(a=versions[0], b=versions[1], rows=tuple(out))
