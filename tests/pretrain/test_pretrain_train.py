"""TSP and TAC fine-tuning on a small SynthActions set: the loss falls, the action head
learns, and the files left are what extraction loads."""

from __future__ import annotations

import pytest
import torch
from pretrain_helpers import CLIP, SPEC, pretrain_config, state_dict_of

from tspipe.models.checkpoints import read_checkpoint
from tspipe.models.loading import load_encoder
from tspipe.pretrain import StepLog, train, write_reports


@pytest.mark.slow
def test_tsp_trains_and_leaves_an_encoder_extraction_loads(synth_set, tmp_path):
    cfg = pretrain_config(synth_set, epochs=5, clips_per_segment=4, lr_heads=0.004,
                          lr_backbone=0.02)
    steps = StepLog()
    result = train(cfg, CLIP, groundtruth=synth_set.groundtruth, videos=synth_set.videos,
                   out_dir=tmp_path / "out", gvf=synth_set.gvf, on_metrics=steps)
    first, last = result.epochs[0], result.epochs[-1]
    assert result.steps_per_epoch == 12  # 24 segments x 4 clips / 8
    assert len(steps.rows) == 5 * 12 and steps.rows[-1]["step"] == 60
    assert last["train_loss"] < 0.75 * first["train_loss"]
    assert last["train_action_acc"] >= 0.8 > first["train_action_acc"]
    for row in result.epochs:
        assert 0 <= row["valid_region_bacc"] <= 1 and 0 <= row["valid_action_acc"] <= 1
        assert row["valid_score"] == pytest.approx(
            (row["valid_action_acc"] + row["valid_region_acc"]) / 2)
    best = max(result.epochs, key=lambda r: r["valid_score"])
    assert result.best_epoch == best["epoch"] == result.exported_epoch
    assert result.counts["train_segments"] == 24 and result.counts["valid_segments"] == 14

    # The encoder file loads where extraction loads it, with the spec it trained on.
    loaded = load_encoder("r2plus1d_tiny", result.encoder_checkpoint)
    assert loaded.spec == SPEC
    ckpt = read_checkpoint(result.model_checkpoint)
    assert ckpt.metadata["extra"]["epoch"] == result.exported_epoch
    assert set(ckpt.heads) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert ckpt.heads["fc2.weight"].shape == (2, 2 * 128)  # concat(clip feature, GVF)
    enc = loaded.model.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in ckpt.backbone.items())
    assert ckpt.sha256 != result.encoder_sha256

    write_reports(result, tmp_path / "metrics.json", tmp_path / "epochs.csv", steps=steps,
                  steps_path=tmp_path / "steps.csv")
    assert (tmp_path / "epochs.csv").read_text().count("\n") == 6
    assert (tmp_path / "steps.csv").read_text().count("\n") == 61
    print({k: round(v, 3) for k, v in last.items()})


@pytest.mark.slow
def test_tac_trains_on_foreground_clips(synth_set, tmp_path):
    cfg = pretrain_config(synth_set, mode="tac", epochs=5, clips_per_segment=4,
                          lr_heads=0.004, lr_backbone=0.02)
    result = train(cfg, CLIP, groundtruth=synth_set.groundtruth, videos=synth_set.videos,
                   out_dir=tmp_path / "out")  # no GVF in TAC mode
    assert result.counts["train_background_unused"] == 14
    assert result.counts["train_segments"] == 10 and result.steps_per_epoch == 5
    first, last = result.epochs[0], result.epochs[-1]
    assert last["train_loss"] < 0.75 * first["train_loss"]
    assert last["train_action_acc"] >= 0.8
    assert "train_region_acc" not in last and "valid_region_acc" not in last
    assert last["valid_score"] == last["valid_action_acc"]
    ckpt = read_checkpoint(result.model_checkpoint)
    assert ckpt.layout == "tspipe" and set(ckpt.heads) == {"fc.weight", "fc.bias"}
    assert ckpt.metadata["extra"]["mode"] == "tac"
    print({k: round(v, 3) for k, v in last.items()})


@pytest.mark.slow
def test_dataloader_workers_change_no_number(synth_set, tmp_path):
    # Two persistent workers serve training and validation batches in turn; the clips,
    # and so the weights, are those of reading in the main process.
    runs = []
    for workers in (0, 2):
        cfg = pretrain_config(synth_set, epochs=2, clips_per_segment=1, workers=workers)
        runs.append(train(cfg, CLIP, groundtruth=synth_set.groundtruth,
                          videos=synth_set.videos, out_dir=tmp_path / str(workers),
                          gvf=synth_set.gvf))
    a, b = (state_dict_of(r.model_checkpoint) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["valid_loss"] for r in runs[0].epochs] == [r["valid_loss"] for r in runs[1].epochs]


@pytest.mark.slow
def test_i3d_is_a_tsp_backbone(synth_set, tmp_path):
    """The method is encoder-agnostic: I3D (the tiny member, 16 frames at 64 px, 128-d
    like the GVF here) fine-tunes with both heads and leaves an encoder extraction loads."""
    from tspipe.config import ClipConfig

    clip = ClipConfig(frames=16, fps=15, stride=16, resize=(73, 98), crop=64)
    cfg = pretrain_config(synth_set, encoder="i3d_tiny", init_checkpoint=None, epochs=4,
                          clips_per_segment=4, lr_heads=0.004, lr_backbone=0.02)
    result = train(cfg, clip, groundtruth=synth_set.groundtruth, videos=synth_set.videos,
                   out_dir=tmp_path / "out", gvf=synth_set.gvf)
    first, last = result.epochs[0], result.epochs[-1]
    assert last["train_loss"] < 0.8 * first["train_loss"]
    assert last["train_action_acc"] > first["train_action_acc"]
    loaded = load_encoder("i3d_tiny", result.encoder_checkpoint)
    assert (loaded.spec.frames, loaded.spec.size, loaded.spec.mean) == (16, 64, (0.5,) * 3)
    ckpt = read_checkpoint(result.model_checkpoint)
    assert ckpt.heads["fc2.weight"].shape == (2, 2 * 128)
    assert not any(k.startswith("logits") for k in ckpt.backbone)
    x = torch.zeros(1, 3, 16, 64, 64)
    assert loaded.model.eval()(x).shape == (1, 128)
    print({k: round(v, 3) for k, v in last.items()})
