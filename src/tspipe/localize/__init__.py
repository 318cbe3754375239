"""Temporal action localization: BMN and G-TAD trained on a feature version, and the
ActivityNet-exact metrics (detection mAP, proposal AR@AN). Modules, by what they hold:

- ``feature_files``: reading and validating feature files of every layout (``load_features``);
- ``features``: the feature records, covered durations, ``rescale``, windows for long videos;
- ``bmn``: BMN, its boundary-matching layer and sampling mask (maps ``[start, end]``);
- ``gtad``: G-TAD, its RoIAlign/SGAlign and ``[duration, start]`` map conversions;
- ``gcnext``: G-TAD's graph blocks, feature-space k-NN and GCNeXt;
- ``outputs``: the record both models return (``MapOutput``);
- ``targets``: BMN's training targets (IoU map, start/end) from segments;
- ``losses``: BMN's loss (TEM + PEM), which G-TAD shares;
- ``train``: the one training loop and inference for both models;
- ``postprocess``: score maps to proposals (soft-NMS, seconds), class scores, result JSON;
- ``classifier``: a video-level classifier for detection labels;
- ``metrics``: what the metrics share (tIoU, thresholds, loading, ranking) and the
  official evaluation's quirks;
- ``metrics_detection``: detection mAP; ``metrics_proposals``: proposal AR@AN and AUC;
- ``metrics_io``: reading ground truth and predictions the official way;
- ``plots``: the evaluate stage's figures (CSV + PNG).
"""

from tspipe.localize.metrics import (
    ACTIVITYNET_TIOU,
    THUMOS14_TIOU,
    Counts,
    segment_tiou,
)
from tspipe.localize.metrics_detection import DetectionResult, evaluate_detection
from tspipe.localize.metrics_io import (
    EvaluationError,
    GroundTruth,
    PredictionError,
    Predictions,
    load_ground_truth,
    load_predictions,
    read_blocked,
)
from tspipe.localize.metrics_proposals import AR_AT, ProposalResult, evaluate_proposals

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
