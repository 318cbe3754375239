"""DDP set-up from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).

One process per device: NCCL on CUDA (``cuda:LOCAL_RANK``), Gloo on the CPU. Without those
variables (or with ``WORLD_SIZE=1``) everything here is a no-op for one process.
:meth:`Dist.place` puts the model on the process's device and wraps it in DDP.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from tspipe.errors import ConfigError
from tspipe.runtime import resolve_device

log = logging.getLogger(__name__)


class Placed(NamedTuple):
    """``model`` on the device (its SyncBatchNorm form under ``sync_bn``) and ``net``, what
    the training loop calls: ``model``, or its DDP wrapper."""

    model: nn.Module
    net: nn.Module


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world_size``, its ``device``; ``owns_group``:
    the process group was created here and is destroyed by :meth:`close`."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks (in place; returned for chaining). A CPU tensor goes through
        the device NCCL needs and comes back."""
        if not self.active:
            return tensor
        moved = tensor.to(self.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def barrier(self) -> None:
        if self.active:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def place(self, model: nn.Module, *, sync_bn: bool) -> Placed:
        """``model`` moved to this process's device (channels-last on CUDA) and, under DDP,
        wrapped (its BatchNorm layers synchronized with ``sync_bn``)."""
        device = self.device
        model.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last_3d)
            torch.backends.cudnn.benchmark = True  # fixed clip size: pick the fastest kernels
        if not self.active:
            return Placed(model, model)
        if sync_bn:
            if device.type != "cuda":
                raise ConfigError("pretrain.sync_bn needs CUDA (SyncBatchNorm has no CPU "
                                  "kernel); use freeze_bn for the same numbers on any device")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return Placed(model, nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None))

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str | torch.device) -> Dist:
    """The process group torchrun describes (created if not yet), and this rank's device:
    ``device`` (``auto``: CUDA if available), on CUDA the ``LOCAL_RANK``-th GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return Dist(0, 1, 0, dev)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    log.info("DDP rank %d of %d on %s (%s)", rank, world, dev, dist.get_backend())
    return Dist(rank, world, local_rank, dev, owns)
