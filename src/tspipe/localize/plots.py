"""The evaluate stage's figures, each as a CSV (DVC plots, any tool) and a PNG.

- AR-AN: average recall against average proposals per video, one line per method;
- mAP per tIoU threshold, one line per method;
- training loss per epoch (total and its parts), one panel per method.

PNGs are drawn with matplotlib's object API (no pyplot state) when it is installed (the
``plot`` extra); without it only the CSVs are written, and a warning says so.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tspipe.io import atomic_path, atomic_write_bytes
from tspipe.localize.metrics_detection import DetectionResult
from tspipe.localize.metrics_proposals import ProposalResult

log = logging.getLogger(__name__)

LOSS_PARTS = ("total", "tem", "pem_reg", "pem_cls")


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _figure(ncols: int = 1) -> Any | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed (the plot extra): CSVs only, no PNGs")
        return None
    return Figure(figsize=(6 * ncols, 4), layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


def _lines(csv_path: Path, columns: tuple[str, str],
           series: Mapping[str, tuple[Sequence[float], Sequence[float], str]], *,
           xlabel: str, ylabel: str, title: str, marker: str | None = None) -> list[Path]:
    """One line per method (``x``, ``y``, legend label) as ``csv_path`` and its ``.png``."""
    out = [_csv(csv_path, ["method", *columns],
                [[m, f"{x:.4f}", f"{y:.4f}"] for m, (xs, ys, _) in series.items()
                 for x, y in zip(xs, ys, strict=True)])]
    fig = _figure()
    if fig is not None:
        ax = fig.add_subplot()
        for xs, ys, label in series.values():
            ax.plot(xs, ys, marker=marker, label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        out.append(_save(fig, csv_path.with_suffix(".png")))
    return out


def ar_an(curves: Mapping[str, ProposalResult], csv_path: Path) -> list[Path]:
    """AR (%) against average proposals per video: ``csv_path`` and its ``.png``."""
    return _lines(csv_path, ("proposals_per_video", "average_recall"), {
        m: (r.proposals_per_video, [100 * a for a in r.avg_recall],
            f"{m} (AUC {100 * r.auc:.2f})") for m, r in curves.items()},
        xlabel="average number of proposals per video", ylabel="average recall (%)",
        title="AR-AN")


def map_per_tiou(results: Mapping[str, DetectionResult], csv_path: Path) -> list[Path]:
    """Detection mAP (%) per tIoU threshold: ``csv_path`` and its ``.png``."""
    return _lines(csv_path, ("tiou", "map"), {
        m: (r.tiou_thresholds, [100 * v for v in r.map_per_tiou],
            f"{m} (average {100 * r.average_map:.2f})") for m, r in results.items()},
        xlabel="tIoU threshold", ylabel="mAP (%)", title="Detection mAP per tIoU",
        marker="o")


def losses(histories: Mapping[str, Sequence[Any]], csv_path: Path) -> list[Path]:
    """Per-epoch training losses (records with ``epoch`` and :data:`LOSS_PARTS`)."""
    out = [_csv(csv_path, ["method", "epoch", *LOSS_PARTS],
                [[m, h.epoch, *(f"{getattr(h, p):.6f}" for p in LOSS_PARTS)]
                 for m, hist in histories.items() for h in hist])]
    fig = _figure(max(1, len(histories)))
    if fig is not None and histories:
        axes = fig.subplots(1, len(histories), squeeze=False)[0]
        for ax, (method, hist) in zip(axes, histories.items(), strict=True):
            for part in LOSS_PARTS:
                ax.plot([h.epoch for h in hist], [getattr(h, part) for h in hist],
                        marker=".", label=part)
            ax.set(xlabel="epoch", ylabel="loss", title=f"{method} training loss")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        out.append(_save(fig, csv_path.with_suffix(".png")))
    return out
