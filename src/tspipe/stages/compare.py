"""Stage ``compare``: one table of the variants' localization metrics (TSP against TAC).

Reads every variant's ``metrics/<variant>/localize.json`` (the evaluate stage's scores)
and ``features/<variant>/current.json`` (which feature version they judge) and writes
the comparison three ways: ``metrics/compare.json`` (``{variant: {method: {metric:
value}}}``, DVC metrics), ``plots/compare_table.csv`` (one row per variant and method)
and ``reports/compare.md`` (the table people read; the Prefect door makes it an artifact
and the MLflow door logs it). The columns are the paper's: AUC and AR@100 of the
proposals, mAP at tIoU 0.5 / 0.75 / 0.95 and the average mAP over 0.5:0.05:0.95 of the
detections (percent, as the literature prints them); the uniform baseline's row is kept
beside each variant's, so a table always shows what "no better than chance" is.

With ``compare.seeds`` each variant runs once per seed (``tsp``, ``tsp-seed1``, ...); the
statistics (:mod:`tspipe.stages.compare_stats`, ``metrics/compare_stats.json``, and
sections of the report) give each variant's mean and standard deviation over its seeds,
its linear probes (``metrics/<run>/probe.json``), and the first variant minus each other
one with a paired bootstrap interval over the validation videos and the seeds
(:mod:`tspipe.localize.bootstrap`, from each evaluation's ``per_video.npz``), said in words:
beats, ties with or loses to.

A variant without scores (its evaluate stage failed or is disabled) is a row that says
so, named in a warning; the others are still tabulated.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.io import atomic_write_json, atomic_write_text, result_dict
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages import compare_stats as stats
from tspipe.stages.contract import Stage

log = logging.getLogger(__name__)

# (column, metrics key, scale): what the table shows of each method's scores.
COLUMNS = (("AUC", "auc", 100.0), ("AR@100", "ar_at_100", 100.0),
           ("mAP@0.5", "map_at_0.50", 100.0), ("mAP@0.75", "map_at_0.75", 100.0),
           ("mAP@0.95", "map_at_0.95", 100.0), ("avg mAP", "average_map", 100.0))


@dataclass(frozen=True)
class CompareStageResult:
    rows: list[dict[str, Any]]  # variant, feature_version, method, one key per COLUMNS key
    missing: list[str]  # variants without scores
    table: Path
    report: Path
    statistics: dict[str, float] = field(default_factory=dict)  # compare_stats.flat
    verdicts: list[str] = field(default_factory=list)  # the paired differences in words

    def metrics(self) -> dict[str, float]:
        return {**{f"{r['variant']}.{r['method']}.{key}": float(r[key])
                   for r in self.rows for _, key, _ in COLUMNS if r.get(key) is not None},
                **self.statistics}

    def artifacts(self) -> list[Path]:
        return [self.report, self.table]

    def summary_markdown(self) -> str:
        return markdown_table(self.rows) + "".join(f"\n\n{v}" for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _scores(paths: RunPaths) -> tuple[str | None, dict[str, dict[str, float]] | None]:
    version = None
    current = paths.features_current
    if current.exists():
        try:
            version = str(json.loads(current.read_text(encoding="utf-8"))["feature_version"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise StageError(f"{current}: field 'feature_version' unreadable ({exc}); rerun "
                             "its extract stage") from None
    metrics = paths.metrics("localize")
    if not metrics.exists():
        return version, None
    try:
        return version, json.loads(metrics.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageError(f"{metrics}: not valid JSON ({exc}); rerun its evaluate stage") from None


def markdown_table(rows: list[dict[str, Any]]) -> str:
    # "mAP@0.5" is an e-mail address to GitHub's and Prefect's Markdown (a mailto: link):
    # the backslash keeps it text.
    head = ["variant", "feature version", "method",
            *(c.replace("@", "\\@") for c, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], (r["feature_version"] or "-")[:12], r["method"]]
        cells += [f"{r[k] * s:.2f}" if r.get(k) is not None else "-" for _, k, s in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(params: Params, paths: RunPaths, reporter: Reporter) -> CompareStageResult:
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    nested: dict[str, dict[str, dict[str, float]]] = {}
    scored: dict[str, list[tuple[str, str | None, dict[str, Any]]]] = {}
    runs = params.compare.runs()
    for name, (variant, _) in runs.items():
        version, scores = _scores(paths.for_variant(name))
        if scores is None:
            missing.append(name)
            reporter.message(f"compare: variant {name}: no "
                             f"{paths.for_variant(name).metrics('localize')} (run "
                             f"evaluate@{name}); its row stays empty")
            rows.append({"variant": name, "feature_version": version, "method": "-"})
            continue
        scored.setdefault(variant, []).append((name, version, scores))
        nested[name] = {}
        for method, vals in scores.items():
            row = {"variant": name, "feature_version": version, "method": method,
                   **{k: vals.get(k) for _, k, _ in COLUMNS}}
            rows.append(row)
            nested[name][method] = {k: vals[k] for _, k, _ in COLUMNS if k in vals}
    if len(missing) == len(runs):
        raise StageError("compare: no variant has scores yet (metrics/<variant>/localize.json"
                         f" for {', '.join(missing)}); run the evaluate stages first")
    atomic_write_json(paths.metrics("compare"), nested)
    buf = io.StringIO()
    keys = ["variant", "feature_version", "method", *(k for _, k, _ in COLUMNS)]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    table = paths.plot("compare", "table")
    atomic_write_text(table, buf.getvalue())
    md = markdown_table(rows)
    stats_md, flat_stats, said = _statistics(params, paths, scored)
    report = paths.reports_dir / "compare.md"
    tiou = params.localize.tiou_thresholds
    atomic_write_text(report, (
        f"# Feature versions compared on {params.dataset.name}\n\n{md}\n\n"
        "AUC and AR@100: proposals (AR at 1..100 proposals per video, tIoU 0.5:0.05:0.95); "
        f"mAP: detections at tIoU {tiou[0]}..{tiou[-1]}, in percent. `uniform` is the "
        f"trivial baseline (sliding windows, constant score).\n{stats_md}"))
    reporter.message("compare:\n" + md + ("\n" + "\n".join(said) if said else ""))
    return CompareStageResult(rows=rows, missing=missing, table=table, report=report,
                              statistics=flat_stats, verdicts=said)


def _statistics(params: Params, paths: RunPaths,
                scored: dict[str, list[tuple[str, str | None, dict[str, Any]]]]
                ) -> tuple[str, dict[str, float], list[str]]:
    """The over-seeds table, the paired differences and the probes (Markdown for the
    report, flat metrics, the verdicts in words); written to metrics/compare_stats.json.
    Differences need two variants scored."""
    probes = {v: [_probe(paths.for_variant(n)) for n, _, _ in runs]
              for v, runs in scored.items()}
    over = stats.over_seeds({v: [s for _, _, s in runs] for v, runs in scored.items()},
                            probes)
    methods = [m for m in params.localize.methods
               if all(m in s for runs in scored.values() for _, _, s in runs)]
    folders = {v: [paths.for_variant(n).results_root / str(ver) for n, ver, _ in runs]
               for v, runs in scored.items()}
    cfg = params.compare
    diffs = stats.differences(folders, methods, draws=cfg.bootstrap,
                              confidence=cfg.confidence) if len(scored) > 1 else {}
    videos = _videos(folders, methods)
    atomic_write_json(paths.metrics("compare_stats"), stats.to_json(over, diffs, seeds=cfg.seeds,
                                                draws=cfg.bootstrap, videos=videos))
    said = stats.verdicts(diffs)
    seeds = max(len(r) for r in scored.values())
    reference = next(iter(scored))
    md = (f"\n## Over seeds (mean ± standard deviation over {seeds} seed"
          f"{'s' if seeds > 1 else ''}; percent, probes: balanced accuracy)\n\n"
          f"{stats.seeds_markdown(over)}\n\n"
          "Probes: a linear read-out of one clip's feature, action vs background and "
          "boundary-straddling vs not, trained and scored on separate videos (0.5: "
          "chance).\n")
    if diffs:
        md += (f"\n## Paired differences ({reference} minus each other variant)\n\n"
               f"{stats.differences_markdown(diffs)}\n\n"
               f"{cfg.confidence:.0%} percentile intervals of {cfg.bootstrap} paired "
               f"bootstrap draws over the {videos} scored videos and each variant's seeds; "
               "points of the metric (percent).\n\n" + "\n".join(f"- {s}" for s in said)
               + "\n")
    return md, stats.flat(over, diffs), said


def _probe(paths: RunPaths) -> dict[str, Any]:
    path = paths.metrics("probe")
    return stats.read_json_file(path) if path.exists() else {}


def _videos(folders: dict[str, list[Path]], methods: list[str]) -> int:
    if not methods:
        return 0
    first = next(iter(folders.values()))[0]
    return len(stats.read_tables([first], methods[0])[0].video_ids)


def _inputs(params: Params, paths: RunPaths) -> list[Path]:
    return [f for v in params.compare.runs() for f in (
        paths.for_variant(v).metrics("localize"), paths.for_variant(v).metrics("probe"),
        paths.for_variant(v).features_current)]


STAGE = Stage(
    name="compare",
    help="One table of every variant's localization metrics (AUC, AR@100, mAP).",
    sections=("compare", "localize"),
    run_whole=run,
    inputs=_inputs,
    outputs=lambda params, paths: [paths.metrics("compare"), paths.metrics("compare_stats"),
                                   paths.plot("compare", "table"),
                                   paths.reports_dir / "compare.md"],
    code=("tspipe.stages.compare", "tspipe.stages.compare_stats",
          "tspipe.localize.bootstrap"),
)
