"""The files a pretrain run reports: flat metrics (JSON), one row per epoch and one row
per optimizer step (CSV, for DVC plots). The rows come from the result, which has them
from the training state: a killed and resumed run reports what an uninterrupted one does."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from tspipe.io import atomic_write_json, atomic_write_text
from tspipe.pretrain.metrics import plot_row
from tspipe.pretrain.train import PretrainResult


class StepLog:
    """An ``on_metrics`` callback keeping the per-step rows (``step`` and ``train/*``) this
    process saw: after a resume, only the steps since (the whole run's are the result's
    ``steps``)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        if "train/loss" in metrics:
            self.rows.append(plot_row(step, metrics))


def rows_csv(rows: Sequence[Mapping[str, float]]) -> str:
    """Rows as CSV: every column any row has; floats written exactly (``repr``)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()


def write_reports(result: PretrainResult, metrics_path: Path, epochs_path: Path, *,
                  steps: StepLog | None = None, steps_path: Path | None = None) -> None:
    """``metrics_path``: :meth:`PretrainResult.metrics` as JSON; ``epochs_path``: the
    epochs' rows; ``steps_path``: the steps' rows of the whole run (``result.steps``).
    Written atomically. ``steps`` is not read: callers from before the result carried
    the rows passed their :class:`StepLog`, which misses the steps before a resume."""
    atomic_write_json(metrics_path, result.metrics())
    atomic_write_text(epochs_path, rows_csv(result.epochs))
    if steps_path is not None:
        atomic_write_text(steps_path, rows_csv(result.steps))
