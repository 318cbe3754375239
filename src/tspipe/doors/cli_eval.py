"""``tspipe eval detection|proposals GT PRED``: the ActivityNet-exact metrics (a door:
parse, call, print). Mounted by ``tspipe.doors.cli`` with ``app.add_typer(app, name="eval")``.

With ``--json`` only JSON goes to stdout (warnings go to the log, on stderr); without it,
a Rich table. ``--plot OUT.png`` also draws mAP per tIoU or the AR-AN curve (matplotlib).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from tspipe.errors import TspipeError
from tspipe.localize.metrics import ACTIVITYNET_TIOU, THUMOS14_TIOU, Counts
from tspipe.localize.metrics_detection import DetectionResult, evaluate_detection
from tspipe.localize.metrics_io import read_blocked
from tspipe.localize.metrics_proposals import ProposalResult, evaluate_proposals

app = typer.Typer(
    help="Evaluate localization results against ground truth: detection mAP and proposal "
         "AR@AN, the same numbers as the official ActivityNet evaluation.",
    no_args_is_help=True,
)

PRESETS = {"activitynet": ACTIVITYNET_TIOU, "thumos14": THUMOS14_TIOU}

GroundTruthArg = Annotated[Path, typer.Argument(
    exists=True, help="Ground truth: ActivityNet v1.3 JSON (.json or .json.gz, read as the "
    "official evaluation reads it) or another format tspipe reads (TSP CSV, THUMOS14 folder).")]
ResultsArg = Annotated[Path, typer.Argument(
    exists=True, dir_okay=False, help="Results: ActivityNet result JSON (.json or .json.gz): "
    "per video id a list of entries with label (detections only), score and segment "
    "(start and end, seconds).")]
SubsetOpt = Annotated[str, typer.Option(help="Ground-truth subset to evaluate on.")]
BlockedOpt = Annotated[Path | None, typer.Option(
    exists=True, dir_okay=False, help="JSON list of video ids to drop from the ground truth "
    "and the results (the official blocked list).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON (fractions in [0, 1]).")]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", dir_okay=False, help="Also write this PNG figure (needs matplotlib).")]
TiouOpt = Annotated[list[str] | None, typer.Option(
    "--tiou", help="tIoU thresholds: numbers after the files (--tiou 0.5 0.75), repeated or "
    "comma-separated, or a preset: activitynet (0.50:0.05:0.95, the default) or thumos14 "
    "(0.3:0.1:0.7).")]


@app.command(context_settings={"allow_extra_args": True})
def detection(
    ctx: typer.Context,
    gt: GroundTruthArg,
    pred: ResultsArg,
    subset: SubsetOpt = "validation",
    tiou: TiouOpt = None,
    blocked: BlockedOpt = None,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Detection mAP at each tIoU threshold and their average.

    Interpolated average precision per class, the official ActivityNet matching (greedy by
    score, each ground truth matched once per threshold).
    """
    thresholds = parse_thresholds(tiou, ctx.args)
    result = evaluate_detection(gt, pred, tiou=thresholds, subset=subset,
                                blocked=read_blocked(blocked) if blocked else frozenset())
    _report(result, as_json, plot)


@app.command()
def proposals(
    gt: GroundTruthArg,
    pred: ResultsArg,
    subset: SubsetOpt = "validation",
    blocked: BlockedOpt = None,
    as_json: JsonOpt = False,
    plot: PlotOpt = None,
) -> None:
    """Proposal AR@1/5/10/100 and the area under the AR-AN curve.

    Average recall over tIoU 0.50:0.05:0.95 against the average number of proposals per
    video (up to 100), as the official ActivityNet evaluation computes it.
    """
    result = evaluate_proposals(gt, pred, subset=subset,
                                blocked=read_blocked(blocked) if blocked else frozenset())
    _report(result, as_json, plot)


def _report(result: DetectionResult | ProposalResult, as_json: bool,
            plot: Path | None) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    elif isinstance(result, DetectionResult):
        _print_detection(result)
    else:
        _print_proposals(result)
    if plot is not None:
        _plot(plot, result)


def parse_thresholds(values: Sequence[str] | None, extra: Sequence[str]) -> tuple[float, ...]:
    """``--tiou`` values (numbers, comma/space-separated lists, presets) and the numbers
    that follow it on the command line (``--tiou 0.5 0.75``: click takes one value per
    option, the rest arrive as extra arguments)."""
    if not values:
        if extra:
            raise typer.BadParameter(f"unexpected arguments {list(extra)}")
        return ACTIVITYNET_TIOU
    thresholds: list[float] = []
    for token in (t for v in [*values, *extra] for t in re.split(r"[,\s]+", v.strip()) if t):
        if token.lower() in PRESETS:
            thresholds += PRESETS[token.lower()]
            continue
        try:
            thresholds.append(float(token))
        except ValueError:
            raise typer.BadParameter(f"{token!r} is neither a number nor a preset "
                                     f"({', '.join(PRESETS)})", param_hint="--tiou") from None
    return tuple(thresholds)


def _counts_line(counts: Counts, outside: str) -> str:
    text = (f"{counts.ground_truth_videos} videos, {counts.ground_truth_segments} segments, "
            f"{counts.classes} classes; {counts.predictions} predictions")
    if counts.outside_predictions:
        text += (f" ({counts.outside_predictions} in {counts.outside_videos} videos without "
                 f"ground truth: {outside})")
    if counts.videos_without_predictions:
        text += f"; {counts.videos_without_predictions} videos without predictions"
    return text


def _print_detection(result: DetectionResult) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Detection mAP", box=box.SIMPLE_HEAD)
    table.add_column("tIoU", justify="right")
    table.add_column("mAP (%)", justify="right")
    for t, value in zip(result.tiou_thresholds, result.map_per_tiou, strict=True):
        table.add_row(f"{t:.2f}", f"{100 * value:.2f}")
    table.add_section()
    table.add_row("average", f"{100 * result.average_map:.2f}", style="bold")
    console = Console()
    console.print(table)
    console.print(_counts_line(result.counts, "false positives"), style="dim")


def _print_proposals(result: ProposalResult) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Proposals AR@AN", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for k, value in result.ar_at.items():
        table.add_row(f"AR@{k}", f"{100 * value:.2f}")
    table.add_section()
    table.add_row("AUC", f"{100 * result.auc:.2f}", style="bold")
    console = Console()
    console.print(table)
    console.print(_counts_line(result.counts, "not evaluated"), style="dim")


def _plot(path: Path, result: DetectionResult | ProposalResult) -> None:
    try:  # the object API: no pyplot, no backend switch, no global state
        from matplotlib.figure import Figure
    except ImportError:
        raise TspipeError("--plot needs matplotlib: pip install matplotlib") from None
    from tspipe.io import atomic_write_bytes

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    if isinstance(result, DetectionResult):
        ax.plot(result.tiou_thresholds, [100 * m for m in result.map_per_tiou], marker="o",
                label="mAP")
        ax.axhline(100 * result.average_map, linestyle="--", color="gray",
                   label=f"average {100 * result.average_map:.2f}")
        ax.set(xlabel="tIoU threshold", ylabel="mAP (%)", title="Detection mAP per tIoU")
    else:
        x = result.proposals_per_video
        for t, row in zip(result.tiou_thresholds, result.recall, strict=True):
            ax.plot(x, [100 * r for r in row], linewidth=0.7, alpha=0.5, label=f"tIoU {t:.2f}")
        ax.plot(x, [100 * r for r in result.avg_recall], linewidth=2.0, color="black",
                label=f"average (AUC {100 * result.auc:.2f})")
        ax.set(xlabel="average number of proposals per video", ylabel="recall (%)",
               title="AR-AN")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
