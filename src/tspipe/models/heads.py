"""TSP heads and the TSP/TAC model around a backbone.

Module names follow the TSP reference's ``Model`` so that its checkpoints' ``model`` dict
loads as is: the backbone is ``features`` (built with ``num_classes=None``, so there are no
``features.fc.*`` keys), the action head ``fc1`` and the temporal-region head ``fc2`` in TSP
mode; TAC (the supervised-on-actions baseline) has one head, ``fc``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn

from tspipe.errors import TspipeError

Mode = Literal["tsp", "tac"]
#: Index -> name of the temporal-region head's classes (TSP's region label map).
REGION_LABELS: tuple[str, str] = ("Action", "No action")


def _init_head(linear: nn.Linear) -> None:
    # The reference's Model._build_fc: N(0, 0.01) weights, zero bias.
    nn.init.normal_(linear.weight, 0, 0.01)
    nn.init.constant_(linear.bias, 0)


class ActionHead(nn.Linear):
    """Linear(feature_dim, num_classes) on the clip feature ``(N, F)`` -> ``(N, C)``."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__(feature_dim, num_classes)

    def reset_parameters(self) -> None:
        _init_head(self)


class RegionHead(nn.Linear):
    """Temporal-region head: Linear(2F, 2) on ``concat(clip_feature, gvf)`` (clip feature
    first, as the reference concatenates), or Linear(F, 2) on the clip feature alone when
    ``with_gvf`` is False. Classes are :data:`REGION_LABELS`."""

    def __init__(self, feature_dim: int, with_gvf: bool = True) -> None:
        super().__init__(2 * feature_dim if with_gvf else feature_dim, len(REGION_LABELS))
        self.feature_dim = feature_dim
        self.with_gvf = with_gvf

    def reset_parameters(self) -> None:
        _init_head(self)

    def forward(self, clip_feature: torch.Tensor,  # type: ignore[override]
                gvf: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, F)`` clip features and ``(N, F)`` global video features -> ``(N, 2)``."""
        if not self.with_gvf:
            return super().forward(clip_feature)
        if gvf is None:
            raise TspipeError("RegionHead: this head was built with_gvf=True, so it needs the "
                              "global video feature (gvf), got None")
        if gvf.shape != clip_feature.shape:
            raise TspipeError(f"RegionHead: gvf shape {tuple(gvf.shape)} must equal the clip "
                              f"feature shape {tuple(clip_feature.shape)}")
        return super().forward(torch.cat([clip_feature, gvf], dim=1))


class TSPOutput(NamedTuple):
    """What :class:`TSPModel` returns; read the fields by name. ``region_logits`` is None in
    TAC mode."""

    action_logits: torch.Tensor
    region_logits: torch.Tensor | None
    features: torch.Tensor


class TSPModel(nn.Module):
    """A backbone with TSP's heads (``mode="tsp"``: ``fc1`` actions, ``fc2`` temporal region,
    on GVF if ``with_gvf``) or TAC's single action head (``mode="tac"``: ``fc``;
    ``with_gvf`` is ignored).

    ``backbone`` must return clip features ``(N, F)`` from ``forward`` (built with
    ``num_classes=None``); ``F`` is read from its ``feature_dim`` attribute unless given.
    The backbone's ``input_spec`` is exposed as ``self.input_spec``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, with_gvf: bool = True,
                 mode: Mode = "tsp", *, feature_dim: int | None = None) -> None:
        super().__init__()
        if mode not in ("tsp", "tac"):
            raise TspipeError(f"TSPModel: mode must be 'tsp' or 'tac', got {mode!r}")
        if getattr(backbone, "fc", None) is not None:
            raise TspipeError("TSPModel: the backbone has a classifier (fc); build it with "
                              "num_classes=None so it returns clip features")
        dim = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
        if not isinstance(dim, int):
            raise TspipeError("TSPModel: the backbone has no integer feature_dim attribute; "
                              "pass feature_dim=")
        self.mode: Mode = mode
        self.with_gvf = with_gvf and mode == "tsp"
        self.feature_dim = dim
        self.num_classes = num_classes
        self.input_spec = getattr(backbone, "input_spec", None)
        self.features = backbone
        if mode == "tsp":
            self.fc1 = ActionHead(dim, num_classes)
            self.fc2 = RegionHead(dim, with_gvf=self.with_gvf)
        else:
            self.fc = ActionHead(dim, num_classes)

    def heads(self) -> list[nn.Linear]:
        """The heads, in the order of their names (``fc1``, ``fc2``; or ``fc``)."""
        return [self.fc1, self.fc2] if self.mode == "tsp" else [self.fc]

    def forward(self, x: torch.Tensor, gvf: torch.Tensor | None = None) -> TSPOutput:
        """``(N, 3, T, H, W)`` clips (and ``(N, F)`` GVFs in TSP mode with GVF) -> logits of
        each head and the clip features."""
        features = self.features(x)
        if self.mode == "tac":
            return TSPOutput(action_logits=self.fc(features), region_logits=None,
                             features=features)
        return TSPOutput(action_logits=self.fc1(features),
                         region_logits=self.fc2(features, gvf), features=features)
