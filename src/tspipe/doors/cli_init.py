"""``tspipe init [DIR] --preset NAME``: a commented params.yaml to start a run from.

Presets are YAML files shipped inside the package (``tspipe/presets/*.yaml``), each a whole
params.yaml with comments: the paper recipes (ActivityNet and THUMOS14, TSP / TAC / I3D)
and the CPU demo (the project's own params.yaml). Each names, with placeholder paths, the
files the user must supply.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from tspipe.errors import ConfigError
from tspipe.io import atomic_write_bytes


def presets() -> dict[str, str]:
    """Preset name -> its first comment line (what it is)."""
    out = {}
    for entry in sorted(files("tspipe").joinpath("presets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = entry.read_text(encoding="utf-8").splitlines()[0]
            out[entry.name.removesuffix(".yaml")] = first.lstrip("# ").strip()
    return out


def preset_text(name: str) -> str:
    """The preset's YAML, comments included."""
    known = presets()
    if name not in known:
        raise ConfigError(f"--preset {name!r}: no such preset; presets: {', '.join(known)}")
    return files("tspipe").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")


def init_command(
    directory: Annotated[Path, typer.Argument(help="Run directory to write params.yaml into "
                                              "(made if absent).")] = Path(),
    preset: Annotated[str, typer.Option(help="activitynet-tsp, activitynet-tac, "
                                        "thumos14-tsp, thumos14-i3d or demo.")] = "demo",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing "
                                        "params.yaml.")] = False,
) -> None:
    """Write a commented params.yaml from a preset (the paper recipes, or the demo) and
    nothing else; then supply the files it names and check with `tspipe run --dry-run`."""
    text = preset_text(preset)
    target = directory / "params.yaml"
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists; keep it, or pass --force to replace it "
                          f"with the {preset} preset")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode("utf-8"))
    todo = "supply the files it marks SUPPLY, then" if "SUPPLY" in text else \
        "nothing to supply (its stages make every file); check the plan with"
    typer.echo(f"wrote {target} (preset {preset}); {todo}: "
               f"tspipe run --dry-run --root {directory}")
