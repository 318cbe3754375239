"""Checks shared by every annotation reader; each finding becomes an ``AnnotationIssue``.

A reader never drops or changes anything silently: it records what it found (file, video,
field), whether it is an error or a warning, and what it did (dropped the video, dropped
the segment, clamped it, or kept it). Times are seconds.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tspipe.data.annotations.model import SUBSETS, Action, AnnotationIssue, Segment

logger = logging.getLogger(__name__)

# Issue fields about background ("No action") intervals start with this word, so a report
# can count dropped segments and dropped background intervals apart.
BACKGROUND = "background"

# Words of a file name that name a subset: TSP's files say `train`/`valid`/`test`.
_SUBSET_WORDS = {
    "train": "training", "training": "training",
    "val": "validation", "valid": "validation", "validation": "validation",
    "test": "testing", "testing": "testing",
}


@dataclass(slots=True)
class IssueLog:
    """Collects the issues found in one file."""

    file: str
    issues: list[AnnotationIssue] = field(default_factory=list)

    def error(self, video_id: str | None, field: str, message: str, action: Action) -> None:
        self.issues.append(AnnotationIssue(self.file, video_id, field, message, "error", action))

    def warning(self, video_id: str | None, field: str, message: str,
                action: Action = "kept") -> None:
        self.issues.append(
            AnnotationIssue(self.file, video_id, field, message, "warning", action))


class Interval(NamedTuple):
    """A checked ``[t_start, t_end]`` interval, seconds."""

    t_start: float
    t_end: float


def parse_number(value: object, log: IssueLog, video_id: str | None, field: str,
                 action: Action) -> float | None:
    """A finite float from a JSON number or a CSV cell; on failure log an error and return None.

    ``action`` says what the caller does with the item when the number is bad.
    """
    if isinstance(value, bool):  # JSON true/false are ints to Python, never times
        number = math.nan
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
    else:
        number = math.nan
    if not math.isfinite(number):
        what = "missing" if value is None or value == "" else f"not a finite number: {value!r}"
        log.error(video_id, field, what, action)
        return None
    return number


def parse_frames(value: object, log: IssueLog, video_id: str | None, field: str,
                 action: Action) -> int | None:
    """A non-negative whole number of frames (``"4169"`` or ``4169.0``), or None after an error."""
    number = parse_number(value, log, video_id, field, action)
    if number is None:
        return None
    if number < 0 or not number.is_integer():
        log.error(video_id, field, f"not a whole number of frames: {value!r}", action)
        return None
    return int(number)


def check_interval(t_start: float, t_end: float, duration: float | None, log: IssueLog,
                   video_id: str, field: str, *, clamp: bool) -> Interval | None:
    """Check ``[t_start, t_end]`` (seconds) against itself and ``[0, duration]``.

    end <= start, or start >= duration: error, dropped. Start < 0 or end > duration: clamped
    with a warning when ``clamp`` (TSP clamps segments to the video before sampling clips),
    else error and dropped. Returns the interval to keep, or None when it was dropped.
    """
    if t_end <= t_start:
        log.error(video_id, field, f"end {t_end!r} s <= start {t_start!r} s", "dropped_segment")
        return None
    if duration is not None and t_start >= duration:
        log.error(video_id, field, f"start {t_start!r} s >= video duration {duration!r} s",
                  "dropped_segment")
        return None
    problems = []
    if t_start < 0:
        problems.append(f"start {t_start!r} s < 0")
    if duration is not None and t_end > duration:
        problems.append(f"end {t_end!r} s > video duration {duration!r} s")
    if not problems:
        return Interval(t_start, t_end)
    if not clamp:
        log.error(video_id, field, "; ".join(problems), "dropped_segment")
        return None
    clamped = Interval(max(t_start, 0.0), t_end if duration is None else min(t_end, duration))
    log.warning(video_id, field,
                f"{'; '.join(problems)}: clamped to [{clamped.t_start!r}, {clamped.t_end!r}]",
                "clamped")
    return clamped


def check_label(label: object, known: frozenset[str] | None, log: IssueLog, video_id: str,
                field: str) -> str | None:
    """The label if it is a non-empty string in ``known`` (any, when None); else error, None."""
    if not isinstance(label, str) or not label:
        log.error(video_id, field, f"missing or not a string: {label!r}", "dropped_segment")
        return None
    if known is not None and label not in known:
        log.error(video_id, field, f"unknown label {label!r} (not in the class list)",
                  "dropped_segment")
        return None
    return label


def sort_segments(segments: Iterable[Segment]) -> list[Segment]:
    """Segments by start, end, then label: the order of formats that keep none."""
    return sorted(segments, key=lambda s: (s.t_start, s.t_end, s.label))


def infer_subset(path: str | Path) -> str | None:
    """The subset a file name names (``..._valid_tsp_groundtruth.csv`` -> ``validation``)."""
    for word in re.split(r"[^a-z]+", Path(path).name.lower()):
        if word in _SUBSET_WORDS:
            return _SUBSET_WORDS[word]
    return None


def suggest_subset(value: str) -> str | None:
    """The subset a near miss meant: another case (``Validation``), a TSP file-name word
    (``valid``), or a typo one or two letters off (``trainng``: difflib's ratio >= 0.8);
    None when no subset is close."""
    word = value.strip().lower()
    if word in _SUBSET_WORDS:
        return _SUBSET_WORDS[word]
    close = difflib.get_close_matches(word, SUBSETS, n=1, cutoff=0.8)
    return close[0] if close else None


def is_background_issue(issue: AnnotationIssue) -> bool:
    return issue.field.startswith(BACKGROUND)


def log_report(file: str | Path, issues: list[AnnotationIssue]) -> None:
    """One log line per file (not per issue: the real CSVs have over a thousand clamps)."""
    if not issues:
        return
    actions = Counter(i.action for i in issues)
    errors = sum(1 for i in issues if i.severity == "error")
    logger.warning("%s: %d errors, %d warnings (%s); first: %s", file, errors,
                   len(issues) - errors, dict(sorted(actions.items())), issues[0])
    for issue in issues:
        logger.debug("%s", issue)
