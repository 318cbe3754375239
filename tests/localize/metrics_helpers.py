"""Small ActivityNet documents for the metrics tests, and the benchmark's reference code."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

DURATION = 100.0

# (t_start, t_end, label) of a ground-truth segment; (t_start, t_end, score, label) of a
# prediction (label None for proposals).
GtRow = tuple[float, float, str]
PredRow = tuple[float, float, float, str | None]


def ground_truth(validation: dict[str, list[GtRow]],
                 training: dict[str, list[GtRow]] | None = None) -> dict[str, Any]:
    """An ActivityNet v1.3 document (every video 100 s long)."""
    database = {}
    for subset, videos in (("validation", validation), ("training", training or {})):
        for video_id, rows in videos.items():
            database[video_id] = {
                "subset": subset, "duration": DURATION, "url": "",
                "annotations": [{"segment": [s, e], "label": c} for s, e, c in rows]}
    return {"version": "VERSION 1.3", "database": database}


def results(videos: dict[str, list[PredRow]]) -> dict[str, Any]:
    """An ActivityNet result document."""
    def entry(row: PredRow) -> dict[str, Any]:
        s, e, score, label = row
        out: dict[str, Any] = {"segment": [s, e], "score": score}
        if label is not None:
            out["label"] = label
        return out

    return {"version": "VERSION 1.3", "external_data": {},
            "results": {v: [entry(r) for r in rows] for v, rows in videos.items()}}


@cache
def benchmark() -> ModuleType:
    """benchmarks/metrics.py, whose straightforward loops are the reference."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "metrics.py"
    spec = importlib.util.spec_from_file_location("tspipe_benchmark_metrics", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
