"""Stage ``synth``: the SynthActions videos and their ActivityNet JSON (the demo's data),
and the base stage's trimmed-clip corpus; :func:`tspipe.data.synth.generate` makes them."""

from __future__ import annotations

from tspipe.config import Params
from tspipe.data.synth import SynthResult, generate
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import Stage


def run(params: Params, paths: RunPaths, reporter: Reporter) -> SynthResult:
    return generate(params.synth, paths.resolve(params.synth.out_dir), reporter=reporter)


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
)
