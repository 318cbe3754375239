"""DDP: two CPU processes (Gloo, started by torchrun) follow the loss curve of one
process with the same global batch.

BatchNorm layers normalize with per-rank batch statistics unless they are synchronized,
and SyncBatchNorm has no CPU kernel, so both runs use ``freeze_bn`` (running statistics):
every number then depends on the clip alone, and the two runs differ only in the order
floating-point sums are taken (convolutions over a batch of 4 instead of 8, gradients
averaged by the all-reduce). Measured: losses agree to 1.0e-7 relative, weights to 1.5e-8;
the test allows 1e-5 relative (losses, validation metrics) and 1e-5 absolute (weights).
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from pretrain_helpers import (
    CLIP,
    VARIANT,
    make_run_dir,
    pretrain_config,
    state_dict_of,
    subprocess_env,
)

from tspipe.paths import RunPaths
from tspipe.pretrain import StepLog, train

RTOL = 1e-5


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_loss_curve(synth_set, tmp_path,
                                                                 repo_root):
    cfg = pretrain_config(synth_set, epochs=1, clips_per_segment=2, freeze_bn=True,
                          lr_heads=0.01, lr_backbone=0.01)
    single = StepLog()
    one = train(cfg, CLIP, groundtruth=synth_set.groundtruth, videos=synth_set.videos,
                out_dir=tmp_path / "single", gvf=synth_set.gvf, on_metrics=single)

    root = tmp_path / "ddp"
    params = make_run_dir(synth_set, root, cfg, repo_root)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "tspipe.doors.train", str(params),
                           str(root)], env=subprocess_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DDP rank 1 of 2 on cpu (gloo)" in proc.stderr

    paths = RunPaths.at(root).for_variant(VARIANT)
    with paths.plot("pretrain", "steps").open() as fh:
        steps = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in steps] == [int(r["step"]) for r in single.rows] == \
        list(range(1, 7))
    for ddp_row, row in zip(steps, single.rows, strict=True):
        for key in ("loss", "loss_action", "loss_region"):
            assert float(ddp_row[key]) == pytest.approx(row[key], rel=RTOL), key
    with paths.plot("pretrain", "epochs").open() as fh:
        (epoch,) = list(csv.DictReader(fh))
    for key in ("train_loss", "train_action_acc", "train_region_acc", "valid_loss",
                "valid_action_acc", "valid_region_acc", "valid_region_bacc"):
        assert float(epoch[key]) == pytest.approx(one.epochs[0][key], rel=RTOL), key

    got = state_dict_of(paths.model_dir("pretrain") / "model.pt")
    want = state_dict_of(one.model_checkpoint)
    worst = max((got[k].double() - want[k].double()).abs().max().item() for k in want
                if want[k].is_floating_point())
    assert worst < 1e-5
    rel = max(abs(float(a["loss"]) / b["loss"] - 1) for a, b in zip(steps, single.rows,
                                                                     strict=True))
    print(f"largest relative loss difference {rel:.1e}, weight difference {worst:.1e}")
