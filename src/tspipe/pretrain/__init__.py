"""TSP / TAC fine-tuning of a video encoder: sample plans, clip dataset, loss, optimizer
and schedule, the training loop with exact resume, DDP under torchrun.

``train(cfg, clip, groundtruth=..., videos=..., out_dir=...)`` is the entry point;
``python -m tspipe.doors.train PARAMS RUN_DIR`` runs it on a run directory (also under
``torchrun``). Modules (each imports what it needs from the module that defines it):

- ``train``: :func:`train`, the epoch and step loop on one screen; ``PretrainResult``.
- ``samples``: the segments of each split (``select_splits``), each epoch's clip plan and
  the sampler of segments' clips (``BatchPlan``: this rank's micro-batches, resumable).
- ``dataset``: ``ClipDataset`` (a clip from its decoded video, labels, GVF), ``make_loader``.
- ``model``: backbone plus TSP / TAC heads (``build_model``), the exported checkpoints.
- ``loss``: ``tsp_loss``, the heads' cross-entropies weighted and summed (``LossTerms``).
- ``optim``: the optimizer's parameter groups (stem, backbone, heads), the lr schedule.
- ``metrics``: validation, and the rows of an epoch and of an optimizer step.
- ``state``: the resumable state's format and resume (``Progress``), ``StopSignal``.
- ``distributed``: the torchrun / DDP set-up (``Dist``), the model on its device.
- ``report``: the files a run reports (metrics JSON, epoch and step CSVs), ``StepLog``.
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
