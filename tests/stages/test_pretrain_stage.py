"""The pretrain stage through its door on tiny SynthActions: the encoder extraction loads,
metrics and plots, the catalog's checkpoint lineage, the MLflow run and its registered
model version; a rerun resumes the finished run, a changed param starts afresh, and
extraction then reads the trained encoder."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from stage_helpers import VARIANT, write_params

from tspipe.catalog import Catalog
from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.io import sha256_file
from tspipe.models.loading import load_encoder
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = {"videos": 4, "classes": 2, "seed": 2, "min_duration": 20.0, "max_duration": 24.0,
        "fps": 10, "width": 64, "height": 48, "min_instances": 1, "max_instances": 2,
        "min_action": 3.0, "max_action": 6.0}
PRETRAIN = {"enabled": True, "epochs": 2, "batch_size": 8, "clips_per_segment": 1, "workers": 0,
            "warmup_epochs": 1, "lr_milestones": [2]}


def test_pretrain_stage_trains_records_and_feeds_extraction(tmp_path, repo_root):
    from mlflow import MlflowClient

    root = tmp_path / "run"
    root.mkdir()
    sections = dict(synth=TINY, gvf={"workers": 0, "batch_size": 16},
                    extract={"workers": 0, "batch_size": 16}, pretrain=PRETRAIN)
    write_params(root, repo_root, **sections)
    params, run_paths = load_params(root / "params.yaml"), RunPaths.at(root)
    paths = run_paths.for_variant(VARIANT)  # where the variant's stages write
    pretrain = f"pretrain@{VARIANT}"
    for stage in ("synth", "ingest", "download", "decode", "gvf"):
        run_stage(stage, params, run_paths, NullReporter(), track=False)
    outcome = run_stage(pretrain, params, run_paths, NullReporter())
    result = outcome.result

    ckpt = paths.pretrain_checkpoint
    assert ckpt == root / "models" / "pretrain" / VARIANT / "checkpoint.pt"
    assert result.checkpoint == ckpt and result.checkpoint_sha256 == sha256_file(ckpt)
    assert result.gvf_source == sha256_file(paths.gvf_file) and result.mode == "tsp"
    assert result.init_sha256 is None  # seeded random weights
    loaded = load_encoder("r2plus1d_tiny", ckpt)
    assert loaded.checkpoint_sha256 == result.checkpoint_sha256
    with torch.inference_mode():
        assert loaded.model(torch.zeros(1, 3, 16, 64, 64)).shape == (1, 128)
    assert [r["epoch"] for r in result.epochs] == [1, 2]
    metrics = json.loads(paths.metrics("pretrain").read_text())
    assert metrics == pytest.approx(result.metrics(), nan_ok=True)
    assert 0.0 <= metrics["valid_action_acc"] <= 1.0 and metrics["train_loss"] > 0
    with open(paths.plot("pretrain", "epochs"), newline="") as fh:
        assert [int(float(r["epoch"])) for r in csv.DictReader(fh)] == [1, 2]
    with open(paths.plot("pretrain", "steps"), newline="") as fh:
        steps = list(csv.DictReader(fh))
    assert len(steps) == 2 * result.steps_per_epoch
    assert all(float(r["loss"]) > 0 for r in steps)

    # Catalog: a pretrain checkpoint without parent (random init), on this dataset.
    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        [row] = [c for c in cat.checkpoints() if c.sha256 == result.checkpoint_sha256]
        [dataset] = cat.datasets()
    assert (row.origin, row.arch, row.parent_sha256) == ("pretrain", "r2plus1d_tiny", None)
    assert row.dataset_id == dataset.id and row.mlflow_run_id == outcome.mlflow_run_id
    assert row.params["pretrain"]["epochs"] == 2 and row.params["random_init_seed"] == 0

    # MLflow: per-step loss, the epoch metrics, one registered version with its tags.
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    history = client.get_metric_history(outcome.mlflow_run_id, "train/loss")
    assert [m.value for m in history] == pytest.approx([float(r["loss"]) for r in steps])
    [version] = client.search_model_versions("name = 'tspipe-encoder'")
    assert version.run_id == outcome.mlflow_run_id
    assert version.tags["sha256"] == result.checkpoint_sha256
    assert (version.tags["mode"], version.tags["dataset"]) == ("tsp", "synthactions")

    # Same inputs: the finished run is resumed (re-exported), nothing retrained or re-registered.
    state_mtime = (paths.model_dir("pretrain") / "state.pt").stat().st_mtime_ns
    again = run_stage(pretrain, params, run_paths, NullReporter()).result
    assert again.checkpoint_sha256 == result.checkpoint_sha256
    assert again.resumed_from == {"epoch": 2, "step": 0}
    assert (paths.model_dir("pretrain") / "state.pt").stat().st_mtime_ns == state_mtime
    assert len(client.search_model_versions("name = 'tspipe-encoder'")) == 1

    # Extraction's default weights are now the trained encoder, recorded with its lineage.
    extract = run_stage(f"extract@{VARIANT}", params, run_paths, NullReporter(),
                        track=False).result
    assert extract.checkpoint_sha256 == result.checkpoint_sha256
    assert extract.checkpoint_origin == "pretrain"
    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        lineage = cat.show(extract.feature_version)
    assert lineage.checkpoint.sha256 == result.checkpoint_sha256
    assert lineage.checkpoint.origin == "pretrain"

    # A changed param: the old state is not resumed; a new encoder is trained.
    # (With export_epoch "best", 1 epoch could export the same weights as 2; a new seed
    # cannot.)
    write_params(root, repo_root, **{**sections, "pretrain": {**PRETRAIN, "epochs": 1,
                                                              "seed": 1}})
    params = load_params(root / "params.yaml")
    third = run_stage(pretrain, params, run_paths, NullReporter(), track=False).result
    assert third.resumed_from is None and [r["epoch"] for r in third.epochs] == [1]
    assert third.checkpoint_sha256 != result.checkpoint_sha256


def test_base_stage_trains_on_the_trimmed_clip_corpus_alone(tmp_path, repo_root):
    """The base stage with pretrain.corpus (the demo's Kinetics role): it reads the synth
    corpus's clips and classes, not the dataset's (nothing is decoded), trains the stem
    from scratch with AdamW, and a corpus entry pointing outside its folder is refused."""
    from tspipe.data.synth_corpus import plan_corpus
    from tspipe.errors import ConfigError

    root = tmp_path / "run"
    root.mkdir()
    corpus = {"corpus_videos": 3, "corpus_clips": 6, "corpus_clip_seconds": 1.6,
              "corpus_validation_fraction": 0.34, "classes": 3}
    base_pretrain = {"mode": "tac", "use_gvf": False,
                     "corpus": "data/synth/corpus/synthactions_corpus.json",
                     "epochs": 2, "batch_size": 4, "clips_per_segment": 1, "workers": 0,
                     "optimizer": "adamw", "freeze_stem": False, "lr_backbone": 2e-3,
                     "lr_heads": 2e-3, "warmup_epochs": 0, "lr_milestones": [2]}
    write_params(root, repo_root, synth={**TINY, **corpus},
                 base={"enabled": True, "pretrain": base_pretrain})
    params, run_paths = load_params(root / "params.yaml"), RunPaths.at(root)
    run_stage("synth", params, run_paths, NullReporter(), track=False)
    assert not run_paths.decode_report.exists()
    result = run_stage("base", params, run_paths, NullReporter(), track=False).result
    assert result.mode == "tac" and result.init_sha256 is None
    videos = plan_corpus(params.synth)
    assert result.counts["train_videos"] == 2 and result.counts["valid_videos"] == 1
    assert result.counts["train_segments"] == 12 and result.counts["valid_segments"] == 6
    assert result.steps_per_epoch == 3  # 12 clips in batches of 4
    model = torch.load(result.model, map_location="cpu", weights_only=True)
    assert model["num_classes"] == 3 == len({label for v in videos for label in v.labels})
    # the stem moved: trained from scratch, not frozen at its random start
    import tspipe.models.registry as registry

    torch.manual_seed(params.for_base().pretrain.seed)
    start = registry.build_encoder("r2plus1d_tiny", num_classes=None).state_dict()
    trained = load_encoder("r2plus1d_tiny", result.checkpoint).model.state_dict()
    stem = [k for k in start if k.startswith("stem.") and k.endswith("weight")]
    assert stem and all(not torch.equal(start[k], trained[k]) for k in stem)

    corpus_json = root / "data/synth/corpus/synthactions_corpus.json"
    data = json.loads(corpus_json.read_text())
    data["database"]["corpus_000"]["url"] = "../../../params.yaml"
    corpus_json.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="leaves the corpus folder"):
        run_stage("base", params, run_paths, NullReporter(), track=False)
