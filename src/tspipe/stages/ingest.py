"""Stage ``ingest``: read the dataset's annotations, validate, write them normalized.

Input: the annotation file named by ``dataset.annotations`` (ActivityNet v1.3 JSON, a
THUMOS14 folder, a TSP ground-truth CSV, or SynthActions' JSON). Outputs: the selected
subsets as ActivityNet v1.3 JSON (``data/annotations/annotations.json``), the full issue
report (``data/annotations/report.json``) and counts (``metrics/ingest.json``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tspipe.config import DatasetConfig, Params
from tspipe.data.annotations import (
    SUBSETS,
    AnnotationIssue,
    Annotations,
    detect_format,
    read_annotations,
    suggest_subset,
    summary,
    write_activitynet,
)
from tspipe.errors import StageError, UnsafeIdError
from tspipe.io import atomic_write_json, atomic_write_text, result_dict, safe_id, sha256_file
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter, Reporter
from tspipe.stages.contract import Stage, tree_hash


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    format: str
    source: str
    source_sha256: str
    annotations: Path
    annotations_sha256: str
    subsets: list[str]
    videos: int
    segments: int
    background: int
    classes: int
    per_subset: dict[str, int]
    errors: int
    warnings: int
    # What the file held and the pipeline does not keep: videos dropped in all and by
    # reason (report.json's dropped_videos_by_reason), segments dropped and clamped.
    dropped: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        m = {k: float(getattr(self, k)) for k in
             ("videos", "segments", "background", "classes", "errors", "warnings")}
        m.update({f"videos_{k}": float(v) for k, v in self.per_subset.items()})
        m.update({k: float(v) for k, v in self.dropped.items()})
        return m

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _rebase_url(url: str | None, source_dir: Path, out_dir: Path) -> str | None:
    """A relative url in the source file still points at the same file from ``out_dir``."""
    if not url or urlparse(url).scheme or Path(url).is_absolute():
        return url
    return Path(os.path.relpath(source_dir / url, out_dir)).as_posix()


def _class_table(ann: Annotations) -> str:
    """CSV for the DVC plot: per class, the number of segments and their mean length (s)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "segments", "mean_duration_s"])
    for label in ann.classes:
        lengths = [s.duration for v in ann.videos.values() for s in v.segments if s.label == label]
        writer.writerow([label, len(lengths), f"{sum(lengths) / max(len(lengths), 1):.3f}"])
    return buf.getvalue()


def _screen(ann: Annotations, cfg: DatasetConfig, source: Path) -> Annotations:
    """Every video ingest leaves out, as an issue of its own: an id that cannot be a file
    name (download, decode and the features would refuse it later: one rule,
    :func:`tspipe.io.safe_id`, checked here first) is an error; a subset outside
    ``dataset.subsets`` (a typo, another capitalisation) a warning saying which subsets
    are kept, with the near miss when there is one. What is left is what the pipeline
    keeps, so the report's kept and dropped counts add up to the file."""
    issues = list(ann.issues)
    videos = dict(ann.videos)
    wanted = list(cfg.subsets)
    for vid, video in ann.videos.items():
        try:
            safe_id(vid)
        except UnsafeIdError as exc:
            issues.append(AnnotationIssue(str(source), vid, "video id", str(exc), "error",
                                          "dropped_video"))
            del videos[vid]
            continue
        if video.subset not in wanted:
            issues.append(_subset_issue(source, vid, video.subset, wanted))
            del videos[vid]
    return replace(ann, videos=videos, issues=issues)


def _subset_issue(source: Path, video_id: str, subset: str | None,
                  wanted: list[str]) -> AnnotationIssue:
    """A subset tspipe knows but dataset.subsets leaves out is a choice: a warning. Any
    other value (another case, a typo, none) is an error in the file, which strict mode
    stops on: the video would be lost from every subset. It names the subset meant."""
    kept = ", ".join(wanted)
    if subset in SUBSETS:
        return AnnotationIssue(str(source), video_id, "subset",
                               f"subset {subset!r} is not one of dataset.subsets ({kept}): "
                               "left out", "warning", "dropped_video")
    message = (f"subset {subset!r} is not a subset name ({', '.join(SUBSETS)}; "
               f"dataset.subsets keeps {kept})")
    near = suggest_subset(subset) if isinstance(subset, str) else None
    if near is not None:
        message += f"; did you mean {near!r}?"
        if near not in wanted:
            message += f" ({near!r} is not in dataset.subsets either)"
    return AnnotationIssue(str(source), video_id, "subset", message, "error", "dropped_video")


def _dropped_metrics(report: dict[str, Any]) -> dict[str, int]:
    """metrics/ingest.json's share of the report: what was dropped (by reason) and clamped."""
    m = {"videos_dropped": report["dropped"]["videos"],
         "segments_dropped": report["dropped"]["segments"],
         "segments_clamped": report["clamped"]["segments"]}
    m.update({f"videos_dropped_{k}": v for k, v in report["dropped_videos_by_reason"].items()})
    return m


def ingest(cfg: DatasetConfig, paths: RunPaths, reporter: Reporter | None = None
           ) -> IngestResult:
    reporter = reporter or NullReporter()
    source = paths.resolve(cfg.annotations)
    if not source.exists():
        raise StageError(f"dataset.annotations: {source} does not exist "
                         "(run `tspipe synth` for the demo data, or fix params.yaml)")
    reporter.start("ingest", 1)
    ann: Annotations = read_annotations(
        source, format=cfg.format,
        label_map=paths.resolve(cfg.label_map) if cfg.label_map else None,
        metadata=paths.resolve(cfg.metadata) if cfg.metadata else None,
        clamp_to_duration=cfg.clamp_to_duration,
    )
    found = sorted({str(v.subset) for v in ann.videos.values()})
    ann = _screen(ann, cfg, source)
    for issue in ann.issues:
        reporter.message(str(issue), logging.WARNING if issue.severity == "warning"
                         else logging.ERROR)
    if cfg.strict and ann.errors():
        raise StageError(f"{source}: {len(ann.errors())} annotation errors and "
                         f"dataset.strict is true; first: {ann.errors()[0]}")
    report = {**summary(ann), "source": paths.relative(source)}
    selected = ann.subset(*cfg.subsets)
    if not selected.videos:
        raise StageError(f"{source}: no video in subsets {cfg.subsets} (dataset.subsets; "
                         f"the file has {found}, and {len(ann.errors())} errors)")
    out_dir = paths.annotations.parent
    src_dir = source if source.is_dir() else source.parent
    for video in selected.videos.values():
        video.url = _rebase_url(video.url, src_dir, out_dir)
    write_activitynet(selected, paths.annotations)
    atomic_write_json(paths.annotation_report, {
        "source": str(cfg.annotations), "summary": report,
        # Files as paths.relative writes them: the report (a DVC output) reads the same
        # wherever the run directory is.
        "issues": [{"file": paths.relative(i.file), "video_id": i.video_id, "field": i.field,
                    "message": i.message, "severity": i.severity, "action": i.action}
                   for i in ann.issues],
    })
    counts = selected.counts()
    result = IngestResult(
        dataset=cfg.name, format=detect_format(source) if cfg.format == "auto" else cfg.format,
        source=paths.relative(source),
        source_sha256=tree_hash(source) or "", annotations=paths.annotations,
        annotations_sha256=sha256_file(paths.annotations), subsets=list(cfg.subsets),
        videos=counts.videos, segments=counts.segments, background=counts.background,
        classes=counts.classes, per_subset=counts.per_subset,
        errors=len(ann.errors()), warnings=len(ann.warnings()),
        dropped=_dropped_metrics(report),
    )
    atomic_write_json(paths.metrics("ingest"), result.metrics())
    atomic_write_text(paths.plot("ingest", "segments_per_class"), _class_table(selected))
    reporter.advance("ingest")
    reporter.message(f"ingest: {result.videos} videos, {result.segments} segments, "
                     f"{result.classes} classes ({result.errors} errors, "
                     f"{result.warnings} warnings)")
    return result


def run(params: Params, paths: RunPaths, reporter: Reporter) -> IngestResult:
    return ingest(params.dataset, paths, reporter)


def _inputs(params: Params, paths: RunPaths) -> list[Path]:
    d = params.dataset
    return [paths.resolve(p) for p in (d.annotations, d.label_map, d.metadata) if p]


STAGE = Stage(
    name="ingest",
    help="Read and validate the dataset's annotations; write them normalized.",
    sections=("dataset",),
    run_whole=run,
    inputs=_inputs,
    outputs=lambda params, paths: [paths.annotations, paths.annotation_report,
                                   paths.metrics("ingest"),
                                   paths.plot("ingest", "segments_per_class")],
    code=("tspipe.stages.ingest", "tspipe.data.annotations"),
)
