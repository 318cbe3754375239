"""`tspipe catalog export | import | migrate | verify`: move a catalog, check what it names.

Registered on ``tspipe.doors.cli_catalog.app`` (imported by ``tspipe.doors.cli``). The
work is in ``tspipe.catalog.transfer`` and ``tspipe.catalog.verify``; here: arguments,
the MLflow lookup verify is given, and printing. Errors exit 2 with one line on stderr.
"""

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tspipe.catalog.engine import hidden_url, sqlite_path
from tspipe.catalog.transfer import ImportResult, export, import_, migrate_to
from tspipe.catalog.verify import VerifyReport, verify
from tspipe.doors.cli_catalog import Json, Url, _emit_json, _fail, _say, _table, app, resolve_url
from tspipe.errors import CatalogError, TspipeError
from tspipe.io import atomic_path


def _counts(title: str, result: ImportResult, as_json: bool) -> None:
    if as_json:
        _emit_json(result)
        return
    _table(title, ["table", "inserted", "already there"],
           [(name, count.inserted, count.present) for name, count in result.tables.items()])


@app.command("export")
def export_command(
    output: Annotated[str, typer.Option(
        "-o", "--output", help="File to write (atomically), or - for stdout.")] = "-",
    url: Url = None,
) -> None:
    """Write the whole catalog as checksummed JSON lines (see `tspipe catalog import`)."""
    url = resolve_url(url)
    try:
        if output == "-":
            export(url, sys.stdout)
            return
        with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as fh:
            counts = export(url, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except (CatalogError, OSError) as exc:
        _fail(exc)
    _say(f"exported {sum(counts.values())} rows of {hidden_url(url)} to {escape(output)}")


@app.command("import")
def import_command(
    file: Annotated[str, typer.Argument(help="An export of `tspipe catalog export` (- for "
                                             "stdin).")],
    url: Url = None, as_json: Json = False,
) -> None:
    """Add an export's rows to the catalog, all in one transaction.

    Rows already there are skipped; a row that differs from the one there refuses the
    whole import."""
    url = resolve_url(url)
    try:
        if file == "-":
            result = import_(url, sys.stdin, source="stdin")
        else:
            with Path(file).open(encoding="utf-8") as fh:
                result = import_(url, fh, source=file)
    except (CatalogError, OSError) as exc:
        _fail(exc)
    _counts(f"imported {file} into {hidden_url(url)}", result, as_json)


@app.command("migrate")
def migrate_command(
    to: Annotated[str, typer.Option("--to", help="The target catalog's URL (a new SQLite file "
                                               "or database gets the schema).")],
    url: Url = None, as_json: Json = False,
) -> None:
    """Copy the catalog (--url) into another (--to) and check it reads back the same."""
    source, target = resolve_url(url), resolve_url(to)
    try:
        result = migrate_to(source, target)
    except CatalogError as exc:
        _fail(exc)
    _counts(f"{hidden_url(source)} -> {hidden_url(target)}", result.imported, as_json)
    extra = f" ({result.extra} more rows were already there)" if result.extra else ""
    _say(f"{result.rows} rows checked: identical in {hidden_url(target)}{extra}")


def _tracking_uri(given: str | None, root: Path) -> str | None:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the run directory's params.yaml
    (when tracking is enabled there), else None: no MLflow check."""
    from tspipe.config import load_params
    from tspipe.paths import RunPaths

    if given:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    paths = RunPaths.at(root)
    params_file = paths.resolve("params.yaml")
    if not params_file.is_file():
        return None
    tracking = load_params(params_file).tracking
    return paths.resolve_sqlite_url(tracking.uri) if tracking.enabled else None


def mlflow_run_exists(tracking_uri: str) -> Callable[[str], bool]:
    """Whether a run id resolves in the MLflow store at ``tracking_uri``. A SQLite store
    that does not exist has no runs (and is not created by looking)."""
    path = sqlite_path(tracking_uri) if tracking_uri.startswith("sqlite:") else None
    if path is not None and not path.exists():
        return lambda _run_id: False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)

    def run_exists(run_id: str) -> bool:
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return False
            raise CatalogError(f"MLflow store {hidden_url(tracking_uri)}: cannot look up run "
                               f"{run_id}: {exc.message}") from exc
        return True

    return run_exists


def _summary(report: VerifyReport, tracking_uri: str | None) -> str:
    checked = ", ".join(f"{n} {what}" for what, n in sorted(report.checked.items()))
    remote = (f"; {len(report.not_checked)} remote URIs not checked"
              if report.not_checked else "")
    runs = "" if tracking_uri else "; MLflow runs not checked (no tracking URI)"
    verdict = f"{len(report.problems)} problems" if report.problems else "clean"
    return f"catalog {report.url}: {verdict} (checked {checked or 'nothing'}{remote}{runs})"


@app.command("verify")
def verify_command(
    url: Url = None,
    root: Annotated[Path, typer.Option(
        "--root", help="Run directory: relative URIs and params.yaml are read from it.")
    ] = Path(),
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", show_default=False,
        help="MLflow tracking URI whose runs the catalog names. Default: "
             "MLFLOW_TRACKING_URI, else tracking.uri of the run directory's params.yaml.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Check that the files, shards, parent rows and MLflow runs the catalog names exist.

    Exit 1 when any does not, 2 when the catalog cannot be read."""
    url = resolve_url(url)
    try:
        tracking = _tracking_uri(tracking_uri, root)
        run_exists = mlflow_run_exists(tracking) if tracking else None
        report = verify(url, root.resolve(), run_exists)
    except TspipeError as exc:
        _fail(exc)
    if as_json:
        _emit_json(report)
    else:
        if report.problems:
            _table("problems", ["kind", "table", "key", "message"],
                   [(p.kind, p.table, p.key, p.message) for p in report.problems])
        typer.echo(_summary(report, tracking))
    if report.problems:
        raise typer.Exit(1)
