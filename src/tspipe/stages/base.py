"""Stage ``base``: a from-scratch pretraining in Kinetics' role (the demo has no Kinetics
weights); ``pretrain.init_checkpoint`` points at its encoder, so the GVF and every
fine-tune start from it.

It is the pretrain stage's training (:func:`tspipe.stages.pretrain.run`) with the
``pretrain`` section updated by ``base.pretrain`` and its products under ``base/``
(``models/pretrain/base/``, ``metrics/base/``, ``plots/base/``); the catalog records it
as a pretrain checkpoint. Real runs set ``base.enabled: false`` and
``pretrain.init_checkpoint`` to the Kinetics weights.

Sharing the pretrain stage's code, it shares its safety: inputs checked before any output
is touched, a new training written beside the finished one (``models/pretrain/.base.next``)
and swapped in when complete, a disabled base's encoder set aside rather than deleted. The
stages that read its encoder through ``pretrain.init_checkpoint`` (gvf, every variant's
pretrain) refuse a missing file instead of starting from random weights.
"""

from __future__ import annotations

from tspipe.stages.contract import Stage
from tspipe.stages.pretrain import CODE, disabled, inputs, outputs, run

STAGE = Stage(
    name="base",
    help="From-scratch pretraining in Kinetics' role (demo): GVF and fine-tunes start from it.",
    sections=("base", "pretrain", "clip"),
    run_whole=run,
    inputs=inputs,
    outputs=outputs,
    code=("tspipe.stages.base", *CODE),
    enabled=lambda params: params.base.enabled,
    disabled=lambda params, paths: disabled(paths, reason="base.enabled: false"),
    scope=lambda params, paths: (params.for_base(), paths.for_variant("base")),
    record_as="pretrain",
)
