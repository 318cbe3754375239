"""``python -m tspipe.pretrain PARAMS RUN_DIR [--resume]``: pretrain on a run directory.

Reads the decode stage's outputs (ground-truth table, decoded videos) and, for TSP with
GVF, the gvf stage's file; writes ``models/pretrain/`` and the metrics. Made to run under
``torchrun --nproc_per_node N -m tspipe.pretrain ...`` as well (one process per device).
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

log = logging.getLogger("tspipe.pretrain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tspipe.pretrain", description=__doc__)
    parser.add_argument("params", type=Path, help="params.yaml")
    parser.add_argument("run_dir", type=Path, help="the run directory (paths.py layout)")
    parser.add_argument("--resume", action="store_true", help="continue from the saved state")
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    from tspipe.stages.encoder_runs import decoded_videos

    steps = StepLog()
    try:
        params = load_params(args.params)
        paths = RunPaths.at(args.run_dir)
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
