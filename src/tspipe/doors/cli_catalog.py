"""`tspipe catalog ...`: migrate the catalog and ask it which features scored best.

Rich tables for people; with ``--json`` only JSON goes to stdout (messages go to stderr).
Mounted by ``tspipe.doors.cli`` with ``app.add_typer(catalog_app, name="catalog")``.
"""

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tspipe.catalog.api import Catalog
from tspipe.catalog.engine import DEFAULT_URL, hidden_url
from tspipe.catalog.migrate import head_revision
from tspipe.catalog.migrate import upgrade as upgrade_catalog
from tspipe.catalog.records import to_jsonable
from tspipe.errors import CatalogError

app = typer.Typer(
    help="The feature catalog: datasets, videos, checkpoints, feature versions and their "
         "scores. Which features gave the best G-TAD mAP, and from what?",
    no_args_is_help=True,
)

Url = Annotated[str | None, typer.Option(
    "--url", envvar="TSPIPE_CATALOG_URL", show_default=False,
    help="Catalog database: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB "
         "(the password is never printed). Default: catalog.url of ./params.yaml if there "
         f"is one, else {DEFAULT_URL}.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.")]
DatasetName = Annotated[str | None, typer.Option(
    "--dataset", help="Only this dataset (its name: every annotation version).")]
ParamsHash = Annotated[str | None, typer.Option(
    "--params-hash", help="Only the evaluations of these localize params (their hash, or a "
                          "prefix of 4+ digits: `show` prints them).")]
Every = Annotated[bool, typer.Option(
    "--all", help="Every evaluation recorded, not only the latest of each feature version, "
                  "method and subset (the default).")]
_SHORT = 12  # hex digits of an id shown in tables; `show` and `compare` accept prefixes


def _say(message: str) -> None:
    """A message on stderr, never wrapped: it stays greppable in logs."""
    Console(stderr=True, soft_wrap=True).print(message)


def _fail(exc: Exception) -> NoReturn:
    """A CatalogError (bad URL, unusable database, unknown id): its message and exit code
    2, as every tspipe command ends for an error in its input or environment."""
    _say(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(2)


def resolve_url(url: str | None) -> str:
    """--url / TSPIPE_CATALOG_URL, else the project's params.yaml, else the default; a
    relative SQLite path is taken from the current directory (the run directory)."""
    from tspipe.config import load_params
    from tspipe.paths import RunPaths

    paths = RunPaths.at(".")
    if url is None:
        params_file = paths.resolve("params.yaml")
        url = load_params(params_file).catalog.url if params_file.exists() else DEFAULT_URL
    return paths.resolve_sqlite_url(url)


@contextmanager
def _opened(url: str | None) -> Iterator[Catalog]:
    """The catalog; a CatalogError while opening or querying exits 2 with its message."""
    try:
        with Catalog(resolve_url(url)) as catalog:
            yield catalog
    except CatalogError as exc:
        _fail(exc)


def _emit_json(obj: Any) -> None:
    typer.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=True))


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")  # ids stay whole, to be copied
    for row in rows:
        table.add_row(*("" if cell is None else escape(str(cell)) for cell in row))
    Console().print(table)


def _when(record: Any, field: str = "created_at") -> str:
    return getattr(record, field).strftime("%Y-%m-%d %H:%M")


@app.command()
def upgrade(url: Url = None) -> None:
    """Create or migrate the catalog's tables to this tspipe's schema (safe to rerun)."""
    url = resolve_url(url)
    try:
        revision = upgrade_catalog(url)
    except CatalogError as exc:
        _fail(exc)
    typer.echo(f"catalog {hidden_url(url)} is at revision {revision} "
               f"(head {head_revision()})")


@app.command("list")
def list_(
    dataset: DatasetName = None,
    encoder: Annotated[str | None, typer.Option(help="Only this encoder.")] = None,
    url: Url = None, as_json: Json = False,
) -> None:
    """List feature versions, oldest first."""
    with _opened(url) as catalog:
        versions = catalog.list_feature_versions(dataset=dataset, encoder=encoder)
    if as_json:
        _emit_json(versions)
        return
    _table("feature versions",
           ["id", "dataset", "encoder", "checkpoint", "status", "videos", "dim", "created"],
           [(v.id[:_SHORT], v.dataset_name, v.encoder, v.checkpoint_sha256[:_SHORT], v.status,
             v.num_videos, v.feature_dim, _when(v)) for v in versions])


@app.command()
def show(
    feature_id: Annotated[str, typer.Argument(help="Feature version id or a unique prefix.")],
    params_hash: ParamsHash = None, every: Every = False,
    url: Url = None, as_json: Json = False,
) -> None:
    """Show a feature version's lineage: dataset, checkpoints, params, scores (with the
    localize params behind each), runs."""
    with _opened(url) as catalog:
        lineage = catalog.show(feature_id, params_hash=params_hash, every=every)
    if as_json:
        _emit_json(lineage)
        return
    f, ds, n = lineage.feature, lineage.dataset, lineage.video_counts
    _table(f"feature version {f.id}", ["field", "value"], [
        ("dataset", f"{ds.name} (id {ds.id}, {ds.format}, annotations {ds.annotation_sha256})"),
        ("encoder", f.encoder), ("status", f.status),
        ("params", json.dumps(f.params, sort_keys=True)),
        ("manifest", f.manifest_sha256), ("code version", f.code_version),
        ("storage", f.storage_uri), ("dvc md5", f.dvc_md5), ("git commit", f.git_commit),
        ("videos / dim", f"{f.num_videos} / {f.feature_dim}"),
        ("video status", f"{n.ok} ok ({n.reused} reused), {n.failed} failed"),
        ("mlflow runs", ", ".join(lineage.mlflow_run_ids)), ("created", _when(f)),
    ])
    _table("checkpoints (used, then what it started from)",
           ["sha256", "arch", "origin", "uri", "params", "mlflow run"],
           [(c.sha256[:_SHORT], c.arch, c.origin, c.uri, json.dumps(c.params, sort_keys=True),
             c.mlflow_run_id) for c in (lineage.checkpoint, *lineage.ancestors)])
    if lineage.sources:
        _table("sources (concatenated per clip, in this order)",
               ["position", "stream", "feature version", "encoder", "checkpoint", "dim"],
               [(str(src.position), src.stream, src.feature.id[:_SHORT], src.feature.encoder,
                 src.feature.checkpoint_sha256[:_SHORT], str(src.feature.feature_dim))
                for src in lineage.sources])
    _table("evaluations", ["method", "subset", "metric", "value", "params", "code",
                           "mlflow run", "recorded"],
           [(e.method, e.subset, e.metric, f"{e.value:.4f}", _params_name(e.params_hash),
             e.code_version[:_SHORT], e.mlflow_run_id, _when(e))
            for e in lineage.evaluations])
    behind = {e.params_hash: e.params for e in lineage.evaluations if e.params is not None}
    if behind:
        _table("params behind the scores", ["params", "values"],
               [(h[:_SHORT], json.dumps(p, sort_keys=True)) for h, p in sorted(behind.items())])


def _params_name(params_hash: str) -> str:
    """A params hash as tables show it; '' is a score recorded before params were."""
    return params_hash[:_SHORT] if params_hash else "(not recorded)"


@app.command()
def best(
    metric: Annotated[str, typer.Option(
        help="METHOD.METRIC (gtad.average_map, bmn.auc) or a metric with --method.")],
    dataset: DatasetName = None,
    method: Annotated[str | None, typer.Option(help="Only this method (bmn, gtad).")] = None,
    subset: Annotated[str | None, typer.Option(help="Only this subset.")] = None,
    params_hash: ParamsHash = None, every: Every = False,
    url: Url = None, as_json: Json = False,
) -> None:
    """Find the feature version with the highest value of a metric (exit 1 if none),
    among the latest evaluation of each version unless --params-hash or --all."""
    with _opened(url) as catalog:
        result = catalog.best(metric, dataset=dataset, method=method, subset=subset,
                              params_hash=params_hash, every=every)
    if result is None:
        if as_json:
            _emit_json(None)
        _say(f"no evaluation recorded {escape(metric)}")
        raise typer.Exit(1)
    if as_json:
        _emit_json(result)
        return
    f, e = result.feature, result.evaluation
    _table(f"best {metric}", ["field", "value"], [
        ("feature version", f.id), ("value", f"{e.value:.4f}"),
        ("method / subset / metric", f"{e.method} / {e.subset} / {e.metric}"),
        ("dataset", f.dataset_name), ("encoder", f.encoder),
        ("checkpoint", f.checkpoint_sha256), ("params", json.dumps(f.params, sort_keys=True)),
        ("scored with", f"{_params_name(e.params_hash)} "
                        f"{json.dumps(e.params, sort_keys=True) if e.params else ''}"),
        ("code version", e.code_version), ("recorded", _when(e)),
        ("mlflow run", e.mlflow_run_id),
    ])


@app.command()
def compare(
    id1: Annotated[str, typer.Argument(help="First feature version (a): id or prefix.")],
    id2: Annotated[str, typer.Argument(help="Second feature version (b): id or prefix.")],
    params_hash: ParamsHash = None, every: Every = False,
    url: Url = None, as_json: Json = False,
) -> None:
    """Compare two feature versions' scores per method, subset and metric (b - a): the
    latest evaluation of each, or those of one params hash, or --all (per params hash)."""
    with _opened(url) as catalog:
        comparison = catalog.compare(id1, id2, params_hash=params_hash, every=every)
    if as_json:
        _emit_json(comparison)
        return

    def cell(value: float | None, sign: str = "") -> str:
        return "" if value is None else f"{value:{sign}.4f}"

    _table(f"a = {comparison.a.id[:_SHORT]}, b = {comparison.b.id[:_SHORT]}",
           ["method", "subset", "metric", "a", "b", "b - a", "params a", "params b"],
           [(r.method, r.subset, r.metric, cell(r.value_a), cell(r.value_b),
             cell(r.difference, "+"), *(None if h is None else _params_name(h)
                                        for h in (r.params_a, r.params_b)))
            for r in comparison.rows])


@app.command()
def videos(
    dataset: DatasetName = None,
    status: Annotated[str | None, typer.Option(
        help="Only videos with this status: ok, missing, failed, pending.")] = None,
    url: Url = None, as_json: Json = False,
) -> None:
    """List videos and their status (why a video is missing or failed)."""
    with _opened(url) as catalog:
        rows = catalog.videos(dataset=dataset, status=status)
    if as_json:
        _emit_json(rows)
        return
    _table(f"videos ({len(rows)})",
           ["dataset", "video", "subset", "status", "reason", "duration", "fps"],
           [(v.dataset_name, v.video_id, v.subset, v.status, v.reason, v.duration, v.fps)
            for v in rows])


@app.command("feature-videos")
def feature_videos(
    feature_id: Annotated[str, typer.Argument(help="Feature version id or a unique prefix.")],
    status: Annotated[str | None, typer.Option(
        help="Only videos with this status: ok, failed.")] = None,
    url: Url = None, as_json: Json = False,
) -> None:
    """List a feature version's videos: ok or failed (and why), reused from, shard."""
    with _opened(url) as catalog:
        rows = catalog.feature_videos(feature_id, status=status)
    if as_json:
        _emit_json(rows)
        return
    title = f"videos of feature version {feature_id} ({len(rows)})"
    _table(title, ["video", "status", "clips", "dim", "reason", "reused from", "shard"],
           [(v.video_id, v.status, v.num_clips, v.feature_dim, v.reason,
             v.reused_from and v.reused_from[:_SHORT], v.shard) for v in rows])


@app.command()
def datasets(url: Url = None, as_json: Json = False) -> None:
    """List registered datasets (one row per annotation file version)."""
    with _opened(url) as catalog:
        rows = catalog.datasets()
    if as_json:
        _emit_json(rows)
        return
    _table("datasets", ["id", "name", "format", "subsets", "videos", "segments", "classes",
                        "annotations"],
           [(d.id, d.name, d.format, ", ".join(d.subsets), d.num_videos, d.num_segments,
             d.num_classes, d.annotation_sha256[:_SHORT]) for d in rows])
