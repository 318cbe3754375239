"""The ``tspipe`` command line (also ``python -m tspipe``). A door: parse, call, print."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer

import tspipe.doors.cli_catalog_io  # registers export, import, migrate, verify
import tspipe.doors.cli_catalog_lineage  # noqa: F401 (registers lineage)
from tspipe import __version__
from tspipe.doors.cli_catalog import app as catalog_app
from tspipe.doors.cli_encoder import app as encoder_app
from tspipe.doors.cli_eval import app as eval_app
from tspipe.doors.cli_extract import extract_command
from tspipe.doors.cli_init import init_command
from tspipe.doors.cli_probe import probe_command
from tspipe.doors.cli_stack import app as stack_app
from tspipe.doors.options import ParamsOpt, RootOpt, load_run
from tspipe.errors import TspipeError

app = typer.Typer(
    name="tspipe",
    help="Versioned, evaluated temporally-sensitive clip features for untrimmed videos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

log = logging.getLogger("tspipe")


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # tspipe's own loggers only: Prefect and MLflow keep their own handlers and levels.
    # Logs on stderr: stdout is for results (JSON that scripts parse).
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_print_version,
        is_eager=True)] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="On an error, print the Python traceback too (before the "
        "command, e.g. `tspipe --debug run`).")] = False,
) -> None:
    """tspipe: download -> decode -> TSP fine-tune -> extract -> BMN / G-TAD evaluation."""
    _setup_logging(verbose)


WaitOpt = Annotated[bool, typer.Option(
    "--wait", help="When another run holds the run directory, wait for it instead of "
    "refusing.")]


@app.command()
def run(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path(),
    wait: WaitOpt = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (stage runs, inputs, videos, clips, cached or "
        "not, time estimates) and run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: the plan as "
                                          "JSON.")] = False,
) -> None:
    """Run the whole pipeline as a Prefect flow (local runs need no server); prints each
    stage run and the comparison table. One run at a time per run directory."""
    from tspipe.doors.required_files import check_files

    p, paths = load_run(params, root)
    if dry_run:
        from tspipe.doors.plan import make_plan, print_plan

        plan = make_plan(p, paths)
        if as_json:
            typer.echo(json.dumps(plan, indent=2))
        else:
            print_plan(plan)
        return
    check_files(p, paths)
    from tspipe.doors.prefect_pipeline import tspipe_pipeline
    from tspipe.doors.run_lock import holding
    from tspipe.paths import RunPaths

    if not _debug_requested():
        _quiet_known_errors_in_prefect_logs()
    with holding(RunPaths.at(root), wait=wait):
        summary = tspipe_pipeline(params_path=str(params), root=str(root))
    for row in summary["stages"]:
        state = "cached" if row["cached"] else "ran"
        typer.echo(f"{row['stage']:>14}: {state:<6} {row['summary']}")
    report = RunPaths.at(root).reports_dir / "compare.md"
    if any(r["stage"] == "compare" for r in summary["stages"]) and report.exists():
        typer.echo("\n" + report.read_text(encoding="utf-8"))
    typer.echo(f"MLflow parent run: {summary['mlflow_run_id']}")


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="Stage to run (see `tspipe stages`); a stage "
                                        "that runs per variant as NAME@VARIANT (e.g. "
                                        "pretrain@tsp), or NAME for every variant in turn.")],
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path(),
    track: Annotated[bool, typer.Option(help="Log an MLflow run.")] = True,
    shard: Annotated[str | None, typer.Option(
        help="I/N: run only shard I of N (1-based; batches I, I+N, ...) of a stage that runs "
             "in shards (gvf, extract, decode, download), e.g. one per machine. The run that "
             "completes the last shard finalizes and records the stage.")] = None,
    wait: WaitOpt = False,
) -> None:
    """Run one stage now, log it to MLflow and record it in the catalog (dvc.yaml calls this)."""
    from tspipe.doors.required_files import check_files
    from tspipe.doors.run_lock import holding
    from tspipe.doors.runner import run_stage
    from tspipe.reporting import RichReporter
    from tspipe.stages import STAGES, instances

    stage_name = name.partition("@")[0]
    if stage_name not in STAGES:
        raise TspipeError(f"unknown stage {stage_name!r}; stages: {', '.join(STAGES)}")
    p, paths = load_run(params, root)
    # NAME of a per-variant stage: every enabled variant in turn.
    per_variant = "@" not in name and STAGES[name].per_variant
    runs = instances(p, (name,)) if per_variant else [name]
    check_files(p, paths, runs)
    parts = None if shard is None else _parse_shard(shard)
    for inst in runs:
        # Shards of a stage run side by side (shared lock); anything else alone.
        with holding(paths, wait=wait, shared=parts is not None), RichReporter() as reporter:
            outcome = run_stage(inst, p, paths, reporter, track=track, shard=parts)
        metrics = json.dumps(outcome.result.metrics(), sort_keys=True)
        typer.echo(metrics if inst == name else f"{inst}: {metrics}")


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise TspipeError(f"--shard {text!r}: write I/N, e.g. 2/3") from None
    if not 1 <= i <= n:
        raise TspipeError(f"--shard {text!r}: I must be in 1..N")
    return i, n


@app.command()
def stages() -> None:
    """List the pipeline's stages, in order, with the params sections each reads."""
    from tspipe.stages import STAGES

    for s in STAGES.values():
        each = " (per variant: NAME@VARIANT)" if s.per_variant else ""
        typer.echo(f"{s.name:<8} [{', '.join(s.sections)}]  {s.help}{each}")


@app.command("params")
def show_params(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path(),
) -> None:
    """Validate the parameters (environment overrides applied), check that the files the
    run needs from you exist, and print the parameters as JSON."""
    from tspipe.doors.required_files import check_files

    p, paths = load_run(params, root)
    check_files(p, paths)
    data = p.model_dump(mode="json")
    data["catalog"]["url"] = _hide_password(data["catalog"]["url"])
    typer.echo(json.dumps(data, indent=2))


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def synth(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder for videos/ and synthactions.json.")],
    videos: Annotated[int, typer.Option(help="Number of videos.")] = 12,
    classes: Annotated[int, typer.Option(help="Number of action classes (2-12).")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    min_duration: Annotated[float, typer.Option(help="Shortest video, seconds.")] = 20.0,
    max_duration: Annotated[float, typer.Option(help="Longest video, seconds.")] = 90.0,
    fps: Annotated[int, typer.Option(help="Frame rate of the encoded files.")] = 15,
    width: Annotated[int, typer.Option(help="Frame width, pixels (even).")] = 128,
    height: Annotated[int, typer.Option(help="Frame height, pixels (even).")] = 96,
    corpus_videos: Annotated[int, typer.Option(
        help="Also make the base stage's trimmed-clip corpus (corpus/): this many files of "
             "32 clips of 2.4 s, each a fresh scene; 0: the benchmark only.")] = 0,
    difficulty: Annotated[str, typer.Option(
        help="normal (the demo's videos) or hard: the synth-hard preset's benchmark (mimics "
             "performing the actions while the actor idles, camera pans, slow ramps, "
             "instances of 0.5 s to most of a video, 80 videos); the options given here "
             "override it.")] = "normal",
) -> None:
    """Generate SynthActions: real H.264 untrimmed videos with ActivityNet annotations."""
    import yaml

    from tspipe.config import ConfigError, SynthConfig
    from tspipe.data.synth import generate
    from tspipe.doors.cli_init import preset_text
    from tspipe.reporting import RichReporter

    given = dict(videos=videos, classes=classes, seed=seed, min_duration=min_duration,
                 max_duration=max_duration, fps=fps, width=width, height=height,
                 corpus_videos=corpus_videos)
    try:
        if difficulty == "hard":
            base = yaml.safe_load(preset_text("synth-hard"))["synth"]
            base.update({k: v for k, v in given.items()
                         if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"})
            base.update(enabled=True, corpus_videos=corpus_videos)
            cfg = SynthConfig(**base)
        else:
            cfg = SynthConfig(**given, difficulty=difficulty)
    except ValueError as exc:
        raise ConfigError(f"tspipe synth: {exc}") from None
    with RichReporter() as reporter:
        result = generate(cfg, out_dir, reporter=reporter)
    typer.echo(f"{result.videos} videos ({result.reused} reused), {result.segments} segments, "
               f"{len(result.classes)} classes -> {result.annotations_path}")


@app.command()
def annotations(
    path: Annotated[Path, typer.Argument(help="Annotation file or THUMOS14 folder.")],
    fmt: Annotated[str, typer.Option("--format", help="activitynet, thumos14, tsp_csv or "
                                     "auto.")] = "auto",
    label_map: Annotated[Path | None, typer.Option(help="JSON list of class names.")] = None,
    metadata: Annotated[Path | None, typer.Option(help="TSP metadata CSV (durations).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Read an annotation file and report its counts and every issue found."""
    from tspipe.data.annotations import read_annotations, summary

    ann = read_annotations(path, format=fmt, label_map=label_map, metadata=metadata)
    report = summary(ann)
    if as_json:
        report = {**report, "issues": [str(i) for i in ann.issues]}
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(path))
    table.add_column("count")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if not isinstance(value, dict | list):
            table.add_row(key, str(value))
    for subset, counts in (report.get("per_subset") or {}).items():
        table.add_row(f"{subset}", ", ".join(f"{k} {v}" for k, v in counts.items()))
    console = Console()
    console.print(table)
    for issue in ann.issues:
        console.print(str(issue), markup=False, highlight=False)


app.add_typer(catalog_app, name="catalog", help="Query and migrate the feature catalog.")
app.command("probe")(probe_command)
app.command("init")(init_command)
app.add_typer(encoder_app, name="encoder")
app.command("extract")(extract_command)
app.add_typer(eval_app, name="eval", help="ActivityNet-exact detection mAP and proposal AR@AN.")
app.add_typer(stack_app, name="stack")


# A full disk (or quota, or file size limit) is the environment, not a bug: a named error.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _debug_requested() -> bool:
    return "--debug" in sys.argv[1:]


def _disk_full(exc: BaseException | None) -> BaseException | None:
    """The full-disk error behind ``exc`` (itself, or what it was raised from: MLflow and
    SQLAlchemy wrap SQLite's "database or disk is full"), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return exc
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _known_error(exc: BaseException | None) -> bool:
    """An error about the input or the environment, reported by its message alone."""
    return isinstance(exc, TspipeError) or _disk_full(exc) is not None


class _NoTracebackForKnownErrors(logging.Filter):
    """Prefect logs every failed task and flow with its traceback; for tspipe's own
    errors the message says it all (``--debug`` keeps the tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _known_error(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_known_errors_in_prefect_logs() -> None:
    from prefect.logging.configuration import setup_logging

    setup_logging()  # Prefect's handlers now, so that later (incremental) setups keep ours
    quiet = _NoTracebackForKnownErrors()
    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in
                                          logging.root.manager.loggerDict
                                          if n.startswith("prefect"))]:
        for handler in logger.handlers:
            handler.addFilter(quiet)


def main() -> None:
    """The console script: errors about the user's input or environment end with their
    message and exit code 2, without a traceback (``--debug`` adds it)."""
    debug = _debug_requested()
    try:
        app()
    except TspipeError as exc:
        _fail(str(exc), debug)
    except Exception as exc:
        full = _disk_full(exc)
        if full is None:
            raise
        where = (f"a SQLite store (catalog or MLflow): {full}"
                 if not isinstance(full, OSError) else
                 f"{full.filename}: {full.strerror}" if full.filename else
                 f"a file under the run directory: {full.strerror}")
        _fail(f"{where} (the disk or quota is full). Free space (or point the run "
              "directory elsewhere) and rerun: finished outputs were kept, the partial one "
              "was removed, and the rerun resumes.", debug)


def entry() -> None:
    """The ``tspipe`` program (console script, ``python -m tspipe``): :func:`main`, then
    the exit without the interpreter's teardown of torch's, MLflow's and Prefect's module
    state (1.5 s of every command on 2 cores, after its work is done). What a normal exit
    does first still happens: non-daemon threads joined, exit handlers run (MLflow's and
    Prefect's flushes, logging's), standard streams flushed."""
    import atexit
    import contextlib
    import os
    import threading

    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # as Py_FinalizeEx does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to write to
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _fail(message: str, debug: bool) -> None:
    if debug:
        log.exception("%s", message)
    else:  # unwrapped on stderr: paths in it must survive a narrow terminal
        typer.echo(f"Error: {message}", err=True)
    sys.exit(2)
