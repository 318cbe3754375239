"""``python -m tspipe.doors.train PARAMS RUN_DIR [--stage pretrain@tsp|base] [--resume]``.

One training of the pipeline on a run directory: the ``base`` stage's or a variant's
``pretrain`` (its params and folders, as :func:`tspipe.stages.bind` gives them). Reads the
decode stage's outputs (ground-truth table, decoded videos) and, for TSP with GVF, the gvf
stage's file; writes ``models/pretrain/<variant>/`` and the variant's metrics. Made to run under
``torchrun --nproc_per_node N -m tspipe.doors.train ...`` as well (one process per device).
Exit status: 0 done, 2 bad input, 128 + signal number when stopped by SIGTERM / SIGINT
(the state is saved: run again with --resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tspipe.config import load_params
from tspipe.errors import TspipeError
from tspipe.paths import RunPaths
from tspipe.pretrain.report import StepLog, write_reports
from tspipe.pretrain.state import TrainingInterrupted
from tspipe.pretrain.train import train
from tspipe.stages import bind
from tspipe.stages.decoded import decoded_videos

log = logging.getLogger("tspipe.pretrain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tspipe.doors.train", description=__doc__)
    parser.add_argument("params", type=Path, help="params.yaml")
    parser.add_argument("run_dir", type=Path, help="the run directory (paths.py layout)")
    parser.add_argument("--resume", action="store_true", help="continue from the saved state")
    parser.add_argument("--stage", default=None,
                        help="which training: base, or pretrain@VARIANT (default: the first "
                             "of compare.variants); its params and output folder")
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    steps = StepLog()
    try:
        params = load_params(args.params)
        stage = args.stage or f"pretrain@{next(iter(params.compare.variants))}"
        if stage.partition("@")[0] not in ("base", "pretrain"):
            raise TspipeError(f"--stage {stage}: base or pretrain@VARIANT")
        _, params, paths = bind(stage, params, RunPaths.at(args.run_dir))
        cfg = params.pretrain
        result = train(
            cfg, params.clip, groundtruth=paths.groundtruth_table,
            videos={v.video_id: v.path for v in decoded_videos(paths)},
            out_dir=paths.model_dir("pretrain"),
            gvf=paths.gvf_file if cfg.mode == "tsp" and cfg.use_gvf else None,
            init_checkpoint=paths.resolve(cfg.init_checkpoint) if cfg.init_checkpoint else None,
            resume=args.resume, on_metrics=steps)
    except TrainingInterrupted as exc:
        log.warning("%s", exc)
        return 128 + exc.signum
    except TspipeError as exc:
        log.error("%s", exc)
        return 2
    if rank == "0":
        write_reports(result, paths.metrics("pretrain"), paths.plot("pretrain", "epochs"),
                      steps=steps, steps_path=paths.plot("pretrain", "steps"))
    log.info("pretrain done: encoder %s (epoch %d)", result.encoder_checkpoint,
             result.exported_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
