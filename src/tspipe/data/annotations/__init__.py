"""Temporal action annotations: ActivityNet v1.3 JSON, THUMOS14 text files and TSP's CSVs,
all read into (and written from) one model, ``Annotations``, with a report of every issue."""

from tspipe.data.annotations.activitynet import read_activitynet, write_activitynet
from tspipe.data.annotations.load import detect_format, read_annotations, summary
from tspipe.data.annotations.model import (
    SUBSETS,
    AnnotationCounts,
    AnnotationIssue,
    Annotations,
    Segment,
    Video,
)
from tspipe.data.annotations.thumos import read_thumos14, write_thumos14
from tspipe.data.annotations.tsp_csv import (
    apply_metadata,
    read_label_map,
    read_tsp_groundtruth,
    read_tsp_metadata,
    write_tsp_groundtruth,
    write_tsp_metadata,
)
from tspipe.data.annotations.validate import suggest_subset

__all__ = [
    "SUBSETS",
    "AnnotationCounts",
    "AnnotationIssue",
    "Annotations",
    "Segment",
    "Video",
    "apply_metadata",
    "detect_format",
    "read_activitynet",
    "read_annotations",
    "read_label_map",
    "read_thumos14",
    "read_tsp_groundtruth",
    "read_tsp_metadata",
    "suggest_subset",
    "summary",
    "write_activitynet",
    "write_thumos14",
    "write_tsp_groundtruth",
    "write_tsp_metadata",
]
