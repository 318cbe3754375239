"""``tspipe stack up|down|status|env``: PostgreSQL, MLflow, Prefect server, workers and
deployments on one machine (see :mod:`tspipe.doors.stack`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tspipe.doors.options import RootOpt

app = typer.Typer(help="The team stack on one machine: PostgreSQL, an MLflow server, a "
                  "Prefect server with workers and the deployments.", no_args_is_help=True)


def _say(text: str) -> None:
    typer.echo(text, err=True)


@app.command("up")
def stack_up(
    root: RootOpt = Path(),
    postgres_port: Annotated[int | None, typer.Option(
        help="Port of the managed PostgreSQL (default 5433, or the last one used).")] = None,
    mlflow_port: Annotated[int | None, typer.Option(
        help="Port of the MLflow server (default 5000).")] = None,
    prefect_port: Annotated[int | None, typer.Option(
        help="Port of the Prefect server (default 4200).")] = None,
    prefect_file: Annotated[Path | None, typer.Option(
        help="Deployments to deploy (default: ROOT/flows/prefect.yaml).")] = None,
    deploy: Annotated[bool, typer.Option(help="Run `prefect deploy --all`.")] = True,
) -> None:
    """Start whatever is not running yet (idempotent) and print the variables that switch
    tspipe, mlflow and prefect commands to the stack. Needs TSPIPE_STACK_PASSWORD (the
    password of the stack's PostgreSQL role); TSPIPE_STACK_POSTGRES_URL (an admin URL)
    uses an existing PostgreSQL server instead of a managed one under ROOT/.tspipe/stack."""
    from tspipe.doors import stack

    root = root.resolve()
    file = prefect_file or root / "flows" / "prefect.yaml"
    if deploy and not file.exists():
        raise stack.StackError(f"{file}: no such file: ROOT must be a checkout of the "
                               "repository (its flows/ are what workers run), or pass "
                               "--no-deploy")
    s = stack.up(root, {"postgres": postgres_port, "mlflow": mlflow_port,
                        "prefect": prefect_port}, file if deploy else None, _say)
    _say(s.ui_lines())
    _say("the stack is up; in your shell:")
    typer.echo(s.env_lines())


@app.command("down")
def stack_down(root: RootOpt = Path()) -> None:
    """Stop what `tspipe stack up` started here (workers and their flow runs, the servers,
    the managed PostgreSQL); data stays in ROOT/.tspipe/stack."""
    from tspipe.doors import stack

    stack.down(root.resolve(), _say)


@app.command("status")
def stack_status(
    root: RootOpt = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each service: healthy, stopped or not answering, with its pid and address. Exits 1
    when something started by `up` is not healthy."""
    from tspipe.doors import stack

    rows = stack.status(root.resolve())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['service']:<12} {r['state']:<14} pid {r['pid'] or '-':<8} "
                       f"{r['where']}")
        if not rows:
            typer.echo("no stack here (tspipe stack up starts one)")
    if any(r["state"] not in ("healthy", "online") for r in rows):
        raise typer.Exit(1)


@app.command("env")
def stack_env(root: RootOpt = Path()) -> None:
    """The export lines of `up` again: eval "$(tspipe stack env)"."""
    from tspipe.doors import stack

    typer.echo(stack.Stack.load(root.resolve()).env_lines())
