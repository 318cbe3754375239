"""TSP / TAC fine-tuning of a video encoder: sample plans, clip dataset, loss, optimizer
and schedule, the training loop with exact resume, DDP under torchrun.

``train(cfg, clip, groundtruth=..., videos=..., out_dir=...)`` is the entry point;
``python -m tspipe.doors.train PARAMS RUN_DIR`` runs it on a run directory (also under
``torchrun``).
"""

from tspipe.pretrain.loss import LossTerms, tsp_loss
from tspipe.pretrain.optim import build_optimizer, build_scheduler, lr_factor
from tspipe.pretrain.report import StepLog, write_reports
from tspipe.pretrain.samples import (
    BatchPlan,
    SampleKey,
    Segments,
    select_segments,
    train_plan,
    valid_plan,
)
from tspipe.pretrain.state import StateError, TrainingInterrupted
from tspipe.pretrain.train import PretrainResult, train

__all__ = [
    "BatchPlan",
    "LossTerms",
    "PretrainResult",
    "SampleKey",
    "Segments",
    "StateError",
    "StepLog",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "select_segments",
    "train",
    "train_plan",
    "tsp_loss",
    "valid_plan",
    "write_reports",
]
