"""What several commands share: the --params and --root options and loading them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tspipe.config import Params, load_params
from tspipe.paths import RunPaths

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Parameters file (YAML).")]
RootOpt = Annotated[Path, typer.Option("--root", help="Run directory: where outputs are "
                                       "written and relative paths in params resolve.")]


def load_run(params: Path, root: Path) -> tuple[Params, RunPaths]:
    """The validated params of ``params`` (relative to ``root``) and the run's paths."""
    paths = RunPaths.at(root)
    return load_params(paths.resolve(params)), paths
