"""Variants without training: which stage runs the pipeline makes, the params and paths
each runs with (``tspipe.stages.bind``), and the variant names and overrides
params.yaml accepts."""

from __future__ import annotations

import pytest

from tspipe.config import BASE_CHECKPOINT, Params, parse_params
from tspipe.errors import ConfigError, StageError
from tspipe.paths import RunPaths
from tspipe.stages import bind, instances


@pytest.fixture
def paths(tmp_path):
    return RunPaths.at(tmp_path / "run")


def test_instances_run_each_per_variant_stage_once_per_variant():
    assert instances(Params()) == [
        "synth", "ingest", "download", "decode", "flow", "base", "gvf",
        "pretrain@tsp", "pretrain@tac", "extract@tsp", "extract@tac",
        "evaluate@tsp", "evaluate@tac", "compare"]
    # Disabled stages are left out; a variant may switch its own pretrain off.
    params = parse_params({"base": {"enabled": False}, "compare": {"variants": {
        "a": {}, "b": {"pretrain": {"enabled": False}}}}}, env={})
    assert instances(params, ("base", "pretrain", "extract")) == [
        "pretrain@a", "extract@a", "extract@b"]


def test_bind_gives_a_variant_its_overrides_and_its_folders(paths):
    stage, params, vpaths = bind("pretrain@tac", Params(), paths)
    assert stage.name == "pretrain"
    assert (params.pretrain.mode, params.pretrain.use_gvf) == ("tac", False)
    assert params.pretrain.init_checkpoint == BASE_CHECKPOINT  # the rest is pretrain's own
    assert vpaths.root == paths.root and vpaths.variant == "tac"
    assert vpaths.model_dir("pretrain") == paths.root / "models" / "pretrain" / "tac"
    assert vpaths.pretrain_checkpoint == paths.root / "models/pretrain/tac/checkpoint.pt"
    assert vpaths.features_current == paths.root / "features" / "tac" / "current.json"
    assert vpaths.features_dir("v1") == paths.root / "features" / "tac" / "v1"
    assert vpaths.results_dir("v1", "bmn") == paths.root / "results" / "tac" / "v1" / "bmn"
    assert vpaths.metrics("localize") == paths.root / "metrics" / "tac" / "localize.json"
    assert vpaths.plot("evaluate", "ar_an") == paths.root / "plots" / "tac" / "evaluate_ar_an.csv"
    # The shared data stays where it was.
    assert vpaths.gvf_file == paths.gvf_file == paths.root / "data" / "gvf" / "gvf.h5"
    assert vpaths.annotations == paths.annotations
    assert vpaths.decode_report == paths.decode_report
    assert vpaths.reports_dir == paths.reports_dir == paths.root / "reports"

    _, tsp, tsp_paths = bind("extract@tsp", Params(), paths)
    assert (tsp.pretrain.mode, tsp.pretrain.use_gvf) == ("tsp", True)
    assert tsp_paths.features_current == paths.root / "features" / "tsp" / "current.json"
    # The unscoped paths are untouched, and a variant's paths go back with None.
    assert paths.variant is None
    assert paths.features_current == paths.root / "features" / "current.json"
    assert tsp_paths.for_variant(None) == paths


def test_bind_extract_overrides_and_stages_without_variants(paths):
    params = parse_params({"compare": {"variants": {
        "half": {"extract": {"dtype": "float16"}}, "full": {}}}}, env={})
    assert bind("extract@half", params, paths)[1].extract.dtype == "float16"
    assert bind("extract@full", params, paths)[1].extract.dtype == "float32"
    # A stage without variants runs with the pipeline's params and paths.
    stage, same, same_paths = bind("gvf", params, paths)
    assert stage.name == "gvf" and same is params and same_paths == paths


def test_bind_refuses_a_missing_or_unknown_variant(paths):
    with pytest.raises(StageError, match=r"extract runs once per variant.*extract@tsp"
                                         r".*variants: tsp, tac"):
        bind("extract", Params(), paths)
    with pytest.raises(StageError, match=r"no variant 'nope' in compare\.variants"):
        bind("pretrain@nope", Params(), paths)
    with pytest.raises(StageError, match=r"gvf@tsp: stage gvf has no variants"):
        bind("gvf@tsp", Params(), paths)
    with pytest.raises(StageError, match=r"base@tsp: stage base has no variants"):
        bind("base@tsp", Params(), paths)
    with pytest.raises(StageError, match=r"unknown stage 'nope'"):
        bind("nope", Params(), paths)


def test_bind_base_trains_from_scratch_into_its_own_folder(paths):
    stage, params, bpaths = bind("base", Params(), paths)
    assert stage.name == "base"
    assert params.pretrain.init_checkpoint is None
    assert (params.pretrain.mode, params.pretrain.use_gvf) == ("tac", False)
    assert params.pretrain.lr_backbone == Params().base.pretrain["lr_backbone"]
    # Its encoder is where the variants' pretrain.init_checkpoint points by default.
    assert bpaths.pretrain_checkpoint == paths.resolve(BASE_CHECKPOINT)
    assert bpaths.gvf_file == paths.gvf_file


@pytest.mark.parametrize("variants", [
    {"base": {}},  # the base stage's folder
    {"a/b": {}},  # not a folder name
    {"": {}},
    {},  # nothing to run
])
def test_invalid_variant_names_are_refused(variants):
    with pytest.raises(ConfigError, match=r"compare\.variants"):
        parse_params({"compare": {"variants": variants}}, env={})


@pytest.mark.parametrize("override", [
    {"pretrain": {"epochs": 0}},
    {"pretrain": {"mode": "nope"}},
    {"pretrain": {"no_such_key": 1}},
    {"extract": {"dtype": "float64"}},
    {"gvf": {"enabled": False}},  # only pretrain and extract have variants
])
def test_invalid_variant_overrides_are_refused(override):
    with pytest.raises(ConfigError, match=r"compare\.variants"):
        parse_params({"compare": {"variants": {"x": override}}}, env={})


def test_a_disabled_training_writes_markers_instead_of_training(tmp_path):
    """DVC's foreach runs `tspipe stage pretrain@V` for every variant: a variant whose
    pretrain is off (I3D features from given weights) gets DVC's declared outputs as
    markers, with no training, MLflow run or catalog row; a former training's files go."""
    import json

    from tspipe.doors.runner import run_stage
    from tspipe.reporting import NullReporter

    root = tmp_path / "run"
    root.mkdir()
    params = parse_params({"base": {"enabled": False}, "compare": {"variants": {
        "i3d": {"pretrain": {"enabled": False}}}}}, env={})
    paths = RunPaths.at(root).for_variant("i3d")
    stale = paths.model_dir("pretrain") / "checkpoint.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier training's weights")
    outcome = run_stage("pretrain@i3d", params, RunPaths.at(root), NullReporter())
    assert outcome.mlflow_run_id is None and outcome.result.metrics() == {"enabled": 0.0}
    assert sorted(p.name for p in paths.model_dir("pretrain").iterdir()) == ["disabled.json"]
    assert json.loads((paths.model_dir("pretrain") / "disabled.json").read_text()) == {
        "reason": "pretrain.enabled: false"}
    assert json.loads(paths.metrics("pretrain").read_text()) == {"enabled": 0}
    assert paths.plot("pretrain", "epochs").read_text() == "epoch,valid_score\n"
    assert paths.plot("pretrain", "steps").read_text() == "step,loss\n"
    assert not (root / "mlflow.db").exists() and not (root / "catalog.db").exists()
    # The base stage the same way, in its own folder.
    base = run_stage("base", params, RunPaths.at(root), NullReporter()).result
    assert base.reason == "base.enabled: false"
    assert (root / "models/pretrain/base/disabled.json").exists()


def test_a_training_that_never_left_chance_level_is_reported():
    from tspipe.stages.pretrain import at_chance

    stuck = [{"valid_action_acc": 0.266}, {"valid_action_acc": 0.26}]  # the corpus base, seed 2
    msg = at_chance(stuck, 4)
    assert msg is not None and "best 0.266" in msg and "1/4 = 0.250" in msg
    assert at_chance([{"valid_action_acc": 0.469}, {"valid_action_acc": 0.635}], 4) is None
    assert at_chance([{"valid_action_acc": 0.55}], 2) is not None  # 2 classes: chance 0.5
    assert at_chance([{"valid_action_acc": float("nan")}], 4) is None  # nothing validated
    assert at_chance([{"train_loss": 1.0}], 4) is None and at_chance(stuck, 1) is None


def test_seeds_run_each_variant_once_per_seed(paths):
    params = parse_params({"base": {"enabled": False}, "localize": {"seed": 9},
                           "compare": {"seeds": [3, 4, 5]}}, env={})
    assert list(params.compare.runs()) == ["tsp", "tsp-seed4", "tsp-seed5",
                                           "tac", "tac-seed4", "tac-seed5"]
    assert instances(params, ("pretrain",)) == [
        "pretrain@tsp", "pretrain@tsp-seed4", "pretrain@tsp-seed5",
        "pretrain@tac", "pretrain@tac-seed4", "pretrain@tac-seed5"]
    # A run is its variant's overrides at its seed, in its own folders.
    _, p, vpaths = bind("evaluate@tac-seed5", params, paths)
    assert (p.pretrain.mode, p.pretrain.seed, p.extract.seed, p.localize.seed) == \
        ("tac", 5, 5, 5)
    assert vpaths.metrics("localize") == paths.root / "metrics/tac-seed5/localize.json"
    _, first, _ = bind("pretrain@tsp", params, paths)
    assert (first.pretrain.mode, first.pretrain.seed, first.localize.seed) == ("tsp", 3, 3)
    # Without seeds, the sections' own seeds.
    _, plain, _ = bind("evaluate@tsp", Params(localize={"seed": 9}), paths)
    assert plain.localize.seed == 9
    with pytest.raises(StageError, match="no variant 'tsp-seed7'"):
        bind("pretrain@tsp-seed7", params, paths)


@pytest.mark.parametrize(("compare", "message"), [
    ({"seeds": [1, 1]}, "distinct"),
    ({"seeds": [0, 2], "variants": {"a": {}, "a-seed2": {}}}, "also variant names"),
])
def test_bad_seeds_are_refused(compare, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"compare": compare}, env={})
