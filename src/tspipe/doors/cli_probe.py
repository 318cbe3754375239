"""``tspipe probe VIDEO... [--json]``: what each video really holds (a door: parse, call,
print). Registered in ``tspipe.doors.cli`` with ``app.command("probe")(probe_command)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tspipe.errors import TspipeError

_COLUMNS = ("format", "size", "fps", "CFR", "frames", "seconds", "audio")


def probe_command(
    videos: Annotated[list[Path], typer.Argument(help="Video files to probe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per "
                                          "file (failures as {path, error}).")] = False,
    cross_check: Annotated[bool, typer.Option(help="Also decode with every other available "
                                              "backend; warn where they disagree.")] = False,
    backend: Annotated[str, typer.Option(help="Decoder: auto (the measured default), pyav, "
                                         "decord or torchcodec.")] = "auto",
) -> None:
    """Decode each video fully and report its real frame count, rate and duration, with a
    warning wherever the header or the decoders disagree. Exit code 1 if any file fails."""
    from tspipe.data.video import get_backend, probe

    get_backend(backend)  # an unknown or unavailable backend fails once, before any file
    rows: list[dict[str, Any]] = []
    for video in videos:
        try:
            rows.append(probe(video, backend=backend, cross_check=cross_check).to_dict())
        except TspipeError as exc:
            rows.append({"path": str(video), "error": _reason(exc, video)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    if any("error" in row for row in rows):
        raise typer.Exit(1)


def _reason(exc: TspipeError, video: Path) -> str:
    return str(exc).removeprefix(f"{video}: ")


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="tspipe probe", caption="format: container/codec; frames: decoded "
                  "(header's count)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("file", no_wrap=True)
    for column in _COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    notes: list[Text] = []
    for row in rows:
        name = Path(row["path"]).name
        if "error" in row:
            table.add_row(name, *[""] * len(_COLUMNS))
            notes.append(Text(f"{name}: {row['error']}", style="red"))
            continue
        header = "" if row["frames_header"] is None else f" ({row['frames_header']})"
        table.add_row(name, f"{row['container']}/{row['codec']}", f"{row['width']}x{row['height']}",
                      _cell(row["fps"]), _cell(row["constant_fps"]),
                      f"{row['frames_decoded']}{header}", _cell(row["duration"]),
                      _cell(row["has_audio"]))
        notes += [Text(f"{name}: {w}", style="yellow") for w in row["warnings"]]
    console = Console()
    if not console.is_terminal:  # a pipe or a file: no screen to fit, keep rows whole
        console = Console(width=max(console.width, 120))
    console.print(table)
    for note in notes:
        console.print(note)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)
