"""Stage ``synth``: the SynthActions videos and their ActivityNet JSON (the demo's data),
and the base stage's trimmed-clip corpus; :func:`tspipe.data.synth.generate` makes them."""

from __future__ import annotations

from tspipe.config import Params
from tspipe.data.synth import SynthResult, generate
from tspipe.io import atomic_write_json
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import DisabledResult, Stage


def run(params: Params, paths: RunPaths, reporter: Reporter) -> SynthResult:
    return generate(params.synth, paths.resolve(params.synth.out_dir), reporter=reporter)


def disabled(params: Params, paths: RunPaths) -> DisabledResult:
    """``synth.enabled: false`` (the user's own annotations): only ``disabled.json`` in the
    output folder, for DVC, which runs every stage of dvc.yaml; videos generated earlier
    stay."""
    marker = paths.resolve(params.synth.out_dir) / "disabled.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    return DisabledResult("synth.enabled: false",
                          [atomic_write_json(marker, {"reason": "synth.enabled: false"})])


STAGE = Stage(
    name="synth",
    help="Generate the SynthActions videos and their ActivityNet JSON.",
    sections=("synth",),
    run_whole=run,
    inputs=lambda params, paths: [],
    outputs=lambda params, paths: [paths.resolve(params.synth.out_dir)],
    code=("tspipe.stages.synth", "tspipe.data.synth", "tspipe.data.synth_render",
          "tspipe.data.synth_sprites", "tspipe.data.synth_encode", "tspipe.data.synth_corpus"),
    enabled=lambda params: params.synth.enabled,
    disabled=disabled,
)
