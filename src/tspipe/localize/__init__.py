"""Temporal action localization: ActivityNet-exact metrics (detection mAP, proposal AR@AN)."""

from tspipe.localize.metrics import (
    ACTIVITYNET_TIOU,
    AR_AT,
    THUMOS14_TIOU,
    Counts,
    DetectionResult,
    ProposalResult,
    evaluate_detection,
    evaluate_proposals,
    segment_tiou,
)
from tspipe.localize.metrics_io import (
    EvaluationError,
    GroundTruth,
    PredictionError,
    Predictions,
    load_ground_truth,
    load_predictions,
    read_blocked,
)

__all__ = [
    "ACTIVITYNET_TIOU",
    "AR_AT",
    "THUMOS14_TIOU",
    "Counts",
    "DetectionResult",
    "EvaluationError",
    "GroundTruth",
    "PredictionError",
    "Predictions",
    "ProposalResult",
    "evaluate_detection",
    "evaluate_proposals",
    "load_ground_truth",
    "load_predictions",
    "read_blocked",
    "segment_tiou",
]
