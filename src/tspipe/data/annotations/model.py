"""The one in-memory model of temporal annotations, whatever file format it came from.

Times are seconds (float). A ``Segment`` is an annotated action interval; ``background``
intervals are explicit "No action" rows, which only the TSP ground-truth CSVs carry (other
formats leave background implicit: the gaps between segments).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

SUBSETS = ("training", "validation", "testing")

Severity = Literal["error", "warning"]
# What the reader did about an issue: the report says what was kept and what was not.
Action = Literal["dropped_video", "dropped_segment", "clamped", "kept"]


@dataclass(frozen=True, slots=True)
class Segment:
    """An annotated action instance: ``[t_start, t_end]`` seconds with its class label."""

    t_start: float
    t_end: float
    label: str

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start


@dataclass(slots=True)
class Video:
    """One untrimmed video and its annotations."""

    video_id: str
    duration: float | None = None
    subset: str | None = None
    fps: float | None = None
    num_frames: int | None = None
    url: str | None = None
    filename: str | None = None
    resolution: str | None = None
    segments: list[Segment] = field(default_factory=list)
    background: list[tuple[float, float]] = field(default_factory=list)
    # Keys of the source entry tspipe does not model, kept so that round trips are lossless.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AnnotationIssue:
    """A problem found while reading: which file, which video, which field, and what was done."""

    file: str
    video_id: str | None
    field: str
    message: str
    severity: Severity
    action: Action

    def __str__(self) -> str:
        vid = f"video {self.video_id!r}: " if self.video_id is not None else ""
        return f"{self.file}: {vid}{self.field}: {self.message} [{self.action}]"


@dataclass(frozen=True, slots=True)
class AnnotationCounts:
    videos: int
    segments: int
    background: int
    classes: int
    per_subset: dict[str, int]


@dataclass(slots=True)
class Annotations:
    """Videos keyed by id, the ordered class list (index = class id), and the read report."""

    videos: dict[str, Video] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    version: str | None = None
    # ActivityNet's taxonomy nodes, kept verbatim for lossless round trips.
    taxonomy: list[dict[str, Any]] | None = None
    source: str | None = None
    issues: list[AnnotationIssue] = field(default_factory=list)
    # Top-level keys of the source file tspipe does not model, kept for lossless round trips.
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> AnnotationCounts:
        per_subset = Counter(v.subset or "unknown" for v in self.videos.values())
        return AnnotationCounts(
            videos=len(self.videos),
            segments=sum(len(v.segments) for v in self.videos.values()),
            background=sum(len(v.background) for v in self.videos.values()),
            classes=len(self.classes),
            per_subset=dict(sorted(per_subset.items())),
        )

    def subset(self, *names: str) -> Annotations:
        """The videos of the given subsets (same classes, same taxonomy, no issues)."""
        keep = {k: v for k, v in self.videos.items() if v.subset in names}
        return replace(self, videos=keep, issues=[])

    def without_report(self) -> Annotations:
        """The same content without the read report (``source``, ``issues``).

        Two reads of equal annotations from different files differ only in their report,
        so round trips compare ``a.without_report() == b.without_report()``.
        """
        return replace(self, source=None, issues=[])

    def errors(self) -> list[AnnotationIssue]:
        return [i for i in self.issues if i.severity == "error"]

    def warnings(self) -> list[AnnotationIssue]:
        return [i for i in self.issues if i.severity == "warning"]
