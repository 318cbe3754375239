"""What the boundary-matching models (BMN, G-TAD) return: one record, two map layouts."""

from __future__ import annotations

from typing import NamedTuple

import torch


class MapOutput(NamedTuple):
    """All values in (0, 1). ``confidence_map`` ``(N, 2, A, B)``: channel 0 regresses the
    IoU, channel 1 classifies (IoU > 0.9). BMN's map is ``(T, T)`` indexed
    ``[start, end]``; G-TAD's is ``(D, T)`` indexed ``[duration, start]`` (see each
    model). ``start`` and ``end`` ``(N, T)`` are the boundary probabilities."""

    confidence_map: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor

    @property
    def reg_map(self) -> torch.Tensor:
        """``(N, A, B)`` IoU regression map (channel 0)."""
        return self.confidence_map[:, 0]

    @property
    def cls_map(self) -> torch.Tensor:
        """``(N, A, B)`` classification map (channel 1)."""
        return self.confidence_map[:, 1]
