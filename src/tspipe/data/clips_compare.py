"""How close a ground-truth table comes to TSP's published CSV (the acceptance check).

Action rows must be equal once the reference is cleaned as tspipe's reader cleans it
(segments clamped to ``[0, duration]``; a segment with ``end <= start`` or starting at or
after the video's end dropped). Background rows cannot be equal in general (TSP published
no script for them): the report gives counts, seconds, exact matches and the share of rows
matched at a temporal IoU threshold, both ways.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tspipe.data.annotations import Annotations
from tspipe.data.annotations.tsp_csv import ACTION, GROUNDTRUTH_COLUMNS, NO_ACTION
from tspipe.data.clips import TIME_TOLERANCE_S, GapRule, build_groundtruth
from tspipe.errors import AnnotationError

logger = logging.getLogger(__name__)

_TOL = float(TIME_TOLERANCE_S)
# Thresholds of the background-rule study, seconds: round numbers, then one clip (16/15 s,
# THUMOS14's shortest background row) and five clips (16/3 s, ActivityNet's).
STUDY_MIN_BACKGROUND = (0.0, 0.5, 1.0, float(Fraction(16, 15)), 2.0, 5.0,
                        float(Fraction(16, 3)))


@dataclass(frozen=True, slots=True)
class ComparisonReport:
    """Our ground-truth table against one TSP CSV. Counts are rows; seconds are summed
    lengths; shares are in [0, 1]."""

    file: str
    gaps: str | None                 # the rule and threshold our table was built with
    min_background: float | None
    tiou: float
    actions_ours: int
    actions_reference: int           # Action rows of the CSV, as written
    actions_reference_dropped: int   # ... that the reader drops (end <= start, past the end)
    actions_reference_clamped: int   # ... that the reader clamps to [0, duration]
    actions_only_ours: int           # after cleaning the reference: rows without a twin
    actions_only_reference: int
    background_ours: int
    background_reference: int
    background_reference_outside: int  # their rows starting at or after the video's end
    background_seconds_ours: float
    background_seconds_reference: float
    background_exact: int            # their rows equal (1 µs) to one of ours
    reference_matched: float         # share of their rows with one of ours at tIoU >= tiou
    ours_matched: float              # share of our rows with one of theirs at tIoU >= tiou

    @property
    def actions_equal(self) -> bool:
        return self.actions_only_ours == 0 and self.actions_only_reference == 0

    @property
    def background_count_ratio(self) -> float:
        return self.background_ours / self.background_reference

    @property
    def background_seconds_ratio(self) -> float:
        return self.background_seconds_ours / self.background_seconds_reference

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "actions_equal": self.actions_equal,
                "background_count_ratio": self.background_count_ratio,
                "background_seconds_ratio": self.background_seconds_ratio}

    def rule(self) -> str:
        """How our table was built, e.g. ``merged >= 5.333 s``."""
        if self.min_background is None:
            return "unknown rule"
        return f"{self.gaps} >= {self.min_background:.3f} s"

    def summary(self) -> str:
        return (f"{Path(self.file).name} [{self.rule()}]: "
                f"actions {'equal' if self.actions_equal else 'DIFFER'} "
                f"({self.actions_ours} ours, {self.actions_reference} theirs, "
                f"{self.actions_reference_dropped} dropped, {self.actions_reference_clamped} "
                f"clamped); background {self.background_ours} vs {self.background_reference} "
                f"rows ({self.background_count_ratio - 1:+.2%}), "
                f"{self.background_seconds_ours:.0f} vs {self.background_seconds_reference:.0f}"
                f" s ({self.background_seconds_ratio - 1:+.2%}); theirs matched at tIoU >= "
                f"{self.tiou}: {self.reference_matched:.2%}, ours {self.ours_matched:.2%}")


def read_reference(path: str | Path) -> pa.Table:
    """A TSP ground-truth CSV as an Arrow table, as written (no cleaning)."""
    path = Path(path)
    types = {"video-name": pa.string(), "action-label": pa.string(), "filename": pa.string(),
             "temporal-region-label": pa.string(), "t-start": pa.float64(),
             "t-end": pa.float64(), "video-duration": pa.float64()}
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    except (OSError, pa.ArrowInvalid) as exc:
        raise AnnotationError(path, f"cannot read the CSV: {exc}") from exc
    missing = [c for c in GROUNDTRUTH_COLUMNS if c not in table.column_names]
    if missing:
        raise AnnotationError(path, f"CSV header lacks columns {missing}", field="header")
    return table


def compare_with_reference(ours: pa.Table, reference_csv: str | Path, *,
                           tiou: float = 0.9) -> ComparisonReport:
    """Compare a :func:`~tspipe.data.clips.build_groundtruth` table with a TSP CSV."""
    ref = read_reference(reference_csv)
    region = ref["temporal-region-label"]
    ref_act = ref.filter(pc.equal(region, ACTION))
    ref_bg = ref.filter(pc.equal(region, NO_ACTION))
    ours_act = ours.filter(pc.equal(ours["region_index"], 0))
    ours_bg = ours.filter(pc.equal(ours["region_index"], 1))

    # The reference's Action rows cleaned as tspipe's reader cleans them.
    start, end = _col(ref_act, "t-start"), _col(ref_act, "t-end")
    duration = _col(ref_act, "video-duration")
    valid = (end > start) & (start < duration)
    clamped = valid & ((start < 0) | (end > duration))
    ref_keys = _keys(ref_act["video-name"].filter(valid), np.maximum(start, 0)[valid],
                     np.minimum(end, duration)[valid], ref_act["action-label"].filter(valid))
    our_keys = _keys(ours_act["video_id"], _col(ours_act, "t_start"), _col(ours_act, "t_end"),
                     ours_act["action_label"])
    ref_start, ref_end = _col(ref_bg, "t-start"), _col(ref_bg, "t-end")
    exact, ref_best, our_best = _match(ours_bg, ref_bg)
    metadata = ours.schema.metadata or {}
    min_bg = metadata.get(b"tspipe.background.min_s")
    return ComparisonReport(
        file=str(reference_csv),
        gaps=metadata[b"tspipe.background.gaps"].decode()
        if b"tspipe.background.gaps" in metadata else None,
        min_background=float(min_bg) if min_bg is not None else None,
        tiou=tiou,
        actions_ours=ours_act.num_rows,
        actions_reference=ref_act.num_rows,
        actions_reference_dropped=int((~valid).sum()),
        actions_reference_clamped=int(clamped.sum()),
        actions_only_ours=(our_keys - ref_keys).total(),
        actions_only_reference=(ref_keys - our_keys).total(),
        background_ours=ours_bg.num_rows,
        background_reference=ref_bg.num_rows,
        background_reference_outside=int((ref_start >= _col(ref_bg, "video-duration")).sum()),
        background_seconds_ours=float((_col(ours_bg, "t_end") - _col(ours_bg, "t_start")).sum()),
        background_seconds_reference=float((ref_end - ref_start).sum()),
        background_exact=int(exact.sum()),
        reference_matched=_share(ref_best >= tiou - _TOL),
        ours_matched=_share(our_best >= tiou - _TOL),
    )


def study_background_rule(ann: Annotations, reference_csv: str | Path, *,
                          min_backgrounds: Iterable[float] = STUDY_MIN_BACKGROUND,
                          gaps: Sequence[GapRule] = ("merged", "consecutive"),
                          tiou: float = 0.9) -> list[ComparisonReport]:
    """One report per (gap rule, threshold): which rule reproduces the reference best."""
    thresholds = list(min_backgrounds)
    return [compare_with_reference(build_groundtruth(ann, min_background=m, gaps=g),
                                   reference_csv, tiou=tiou)
            for g in gaps for m in thresholds]


def format_study(reports: Iterable[ComparisonReport]) -> str:
    """A Markdown table of study reports (one line each)."""
    lines = ["| file | rule | bg rows ours/theirs | bg s ours/theirs | exact | "
             "theirs matched | ours matched |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {Path(r.file).name} | {r.rule()} | "
              f"{r.background_ours}/{r.background_reference} "
              f"({r.background_count_ratio - 1:+.1%}) | {r.background_seconds_ours:.0f}/"
              f"{r.background_seconds_reference:.0f} ({r.background_seconds_ratio - 1:+.1%}) | "
              f"{r.background_exact} | {r.reference_matched:.2%} | {r.ours_matched:.2%} |"
              for r in reports]
    return "\n".join(lines)


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table[name].to_numpy().astype(np.float64, copy=False)


def _keys(video: pa.ChunkedArray, t_start: np.ndarray, t_end: np.ndarray,
          label: pa.ChunkedArray) -> Counter[tuple[str, int, int, str]]:
    """Rows as a multiset of (video, start, end, label), times in whole microseconds."""
    start_us = np.rint(t_start / _TOL).astype(np.int64).tolist()
    end_us = np.rint(t_end / _TOL).astype(np.int64).tolist()
    return Counter(zip(video.to_pylist(), start_us, end_us, label.to_pylist(), strict=True))


def _match(ours: pa.Table, ref: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per reference row: equal to one of ours (1 µs) and its best tIoU; per our row: its
    best tIoU. Rows are compared within their video only."""
    left = pa.table({"video": ref["video-name"], "r": np.arange(ref.num_rows),
                     "rs": _col(ref, "t-start"), "re": _col(ref, "t-end")})
    right = pa.table({"video": ours["video_id"], "o": np.arange(ours.num_rows),
                      "os": _col(ours, "t_start"), "oe": _col(ours, "t_end")})
    pairs = left.join(right, keys="video", join_type="inner")
    rs, re_, os_, oe = (_col(pairs, c) for c in ("rs", "re", "os", "oe"))
    inter = np.clip(np.minimum(re_, oe) - np.maximum(rs, os_), 0, None)
    union = np.maximum(re_, oe) - np.minimum(rs, os_)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    same = (np.abs(rs - os_) <= _TOL) & (np.abs(re_ - oe) <= _TOL)
    r, o = pairs["r"].to_numpy(), pairs["o"].to_numpy()
    ref_best = np.zeros(ref.num_rows)
    np.maximum.at(ref_best, r, iou)
    our_best = np.zeros(ours.num_rows)
    np.maximum.at(our_best, o, iou)
    exact = np.zeros(ref.num_rows, dtype=bool)
    exact[r[same]] = True
    return exact, ref_best, our_best


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 1.0
