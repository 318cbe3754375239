"""The comparison's statistics: each variant over its seeds, paired differences with
bootstrap intervals (:mod:`tspipe.localize.bootstrap`), the linear probes, as Markdown
and as flat metrics. The ``compare`` stage reads the files and writes what this returns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.errors import StageError
from tspipe.localize.bootstrap import METRICS, Difference, VideoTable, paired_bootstrap

# metric key -> what the tables call it
LABELS = {"auc": "AUC", "ar_at_100": "AR@100", "average_map": "avg mAP"}
PROBES = (("action", "action probe"), ("boundary", "boundary probe"))


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "n": float(len(arr))}


def over_seeds(scores: Mapping[str, Sequence[Mapping[str, Mapping[str, float]]]],
               probes: Mapping[str, Sequence[Mapping[str, Mapping[str, float]]]]
               ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """variant -> method (and ``probe``) -> metric -> mean / sd / n over its seeds."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for variant, runs in scores.items():
        methods = [m for m in runs[0] if all(m in r for r in runs)]
        out[variant] = {m: {k: mean_sd([r[m][k] for r in runs]) for k in METRICS
                            if all(k in r[m] for r in runs)} for m in methods}
        runs_p = [p for p in probes.get(variant, []) if p]
        if runs_p:
            out[variant]["probe"] = {
                t: mean_sd([p[t]["balanced_accuracy"] for p in runs_p])
                for t, _ in PROBES if all(t in p and math.isfinite(p[t]["balanced_accuracy"])
                                          for p in runs_p)}
    return out


def read_tables(folders: Sequence[Path], method: str) -> list[VideoTable]:
    """Each run's per-video table of ``method`` (its results folder of the current
    version); a missing one is a named error."""
    tables = []
    for folder in folders:
        path = folder / method / "per_video.npz"
        if not path.exists():
            raise StageError(f"compare: {path} missing (scores by video, written by the "
                             "evaluate stage since it computes the comparison's intervals); "
                             "rerun that evaluate stage")
        tables.append(VideoTable.load(path))
    return tables


def differences(folders: Mapping[str, Sequence[Path]], methods: Sequence[str], *,
                draws: int, confidence: float) -> dict[str, list[Difference]]:
    """method -> the first variant minus each other one, per metric."""
    reference = next(iter(folders))
    return {m: paired_bootstrap({v: read_tables(f, m) for v, f in folders.items()},
                                reference, draws=draws, confidence=confidence)
            for m in methods}


def _cell(stat: Mapping[str, float] | None, scale: float) -> str:
    if stat is None:
        return "-"
    if stat["n"] < 2:
        return f"{stat['mean'] * scale:.2f}"
    return f"{stat['mean'] * scale:.2f} ± {stat['sd'] * scale:.2f}"


def seeds_markdown(stats: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> str:
    head = ["variant", "method", *LABELS.values(), *(label for _, label in PROBES)]
    lines = ["| " + " | ".join(head).replace("@", "\\@") + " |", "|" + "---|" * len(head)]
    for variant, methods in stats.items():
        probe = methods.get("probe", {})
        for method, vals in methods.items():
            if method == "probe":
                continue
            cells = [variant, method, *(_cell(vals.get(k), 100.0) for k in LABELS),
                     *(_cell(probe.get(t), 1.0) for t, _ in PROBES)]
            lines.append("| " + " | ".join(cells).replace("@", "\\@") + " |")
    return "\n".join(lines)


def differences_markdown(diffs: Mapping[str, Sequence[Difference]]) -> str:
    head = ["difference", "method", "metric", "points", "interval", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, rows in diffs.items():
        for d in rows:
            lines.append(f"| {d.reference} − {d.other} | {method} | "
                         f"{LABELS[d.metric].replace('@', chr(92) + '@')} | "
                         f"{d.value * 100:+.2f} | [{d.low * 100:+.2f}, {d.high * 100:+.2f}] | "
                         f"{d.verdict} |")
    return "\n".join(lines)


def verdicts(diffs: Mapping[str, Sequence[Difference]]) -> list[str]:
    return [f"{method}: {d.sentence()}" for method, rows in diffs.items() for d in rows]


def to_json(stats: Any, diffs: Mapping[str, Sequence[Difference]], *, seeds: Sequence[int],
            draws: int, videos: int) -> dict[str, Any]:
    return {"seeds": list(seeds), "bootstrap_draws": draws, "videos": videos,
            "over_seeds": stats,
            "differences": [{"method": m, **asdict(d), "verdict": d.verdict}
                            for m, rows in diffs.items() for d in rows]}


def flat(stats: Mapping[str, Any], diffs: Mapping[str, Sequence[Difference]]
         ) -> dict[str, float]:
    """MLflow metrics: ``VARIANT.METHOD.METRIC.mean|sd`` and
    ``diff.REF-OTHER.METHOD.METRIC.value|low|high``."""
    out = {f"{v}.{m}.{k}.{s}": float(stat[s]) for v, methods in stats.items()
           for m, vals in methods.items() for k, stat in vals.items() for s in ("mean", "sd")}
    for method, rows in diffs.items():
        for d in rows:
            base = f"diff.{d.reference}-{d.other}.{method}.{d.metric}"
            out.update({f"{base}.value": d.value, f"{base}.low": d.low,
                        f"{base}.high": d.high})
    return out


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); rerun the stage that writes "
                         "it") from None
