"""Presets (`tspipe init`), the check of user-supplied files, and dry runs of the presets
on the real ActivityNet / THUMOS14 annotation files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tspipe.config import load_params
from tspipe.doors.cli import main
from tspipe.doors.cli_init import preset_text, presets

PRESETS = ["activitynet-tsp", "activitynet-tac", "thumos14-tsp", "thumos14-i3d", "demo",
           "synth-hard"]


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`tspipe ARGS` through the console script's entry (exit code 2 on tspipe's errors)."""
    monkeypatch.setattr(sys, "argv", ["tspipe", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def anet_json(tmp_path_factory, shared_data) -> Path:
    """ActivityNet v1.3 JSON (training + validation) made from TSP's two real CSVs."""
    from tspipe.data.annotations import read_tsp_groundtruth, write_activitynet

    tsp = shared_data / "annotations/tsp"
    labels = tsp / "activitynet_v1-3_action_label_mapping.json"
    train = read_tsp_groundtruth(tsp / "activitynet_v1-3_train_tsp_groundtruth.csv",
                                 label_map=labels)
    valid = read_tsp_groundtruth(tsp / "activitynet_v1-3_valid_tsp_groundtruth.csv",
                                 label_map=labels)
    train.videos.update(valid.videos)
    return write_activitynet(train, tmp_path_factory.mktemp("anet") / "anet.json")


@pytest.fixture(scope="module")
def thumos_dir(tmp_path_factory, shared_data) -> Path:
    """The official THUMOS14 layout (one folder of <Class>_val/_test.txt, one metadata
    CSV) made from TSP's real valid and test CSVs."""
    from tspipe.data.annotations import read_tsp_groundtruth, write_thumos14

    tsp = shared_data / "annotations/tsp"
    labels = tsp / "thumos14_action_label_mapping.json"
    ann = read_tsp_groundtruth(tsp / "thumos14_valid_tsp_groundtruth.csv", label_map=labels)
    test = read_tsp_groundtruth(tsp / "thumos14_test_tsp_groundtruth.csv", label_map=labels)
    ann.videos.update(test.videos)
    out = tmp_path_factory.mktemp("thumos")
    write_thumos14(ann, out / "annotations", metadata_csv=out / "metadata.csv")
    shutil.copy(labels, out / "labels.json")
    return out


def supply(root: Path, preset: str, anet_json: Path, thumos_dir: Path,
           skip: str | None = None) -> Path:
    """Write the preset into ``root`` and put a stand-in at every SUPPLY path (but ``skip``)."""
    (root / "params.yaml").write_text(preset_text(preset), encoding="utf-8")
    raw = yaml.safe_load(preset_text(preset))
    given = {"dataset.annotations": anet_json if preset.startswith("activitynet")
             else thumos_dir / "annotations",
             "dataset.label_map": thumos_dir / "labels.json",
             "dataset.metadata": thumos_dir / "metadata.csv"}
    for section, fields in raw.items():
        for field, value in (fields or {}).items():
            key = f"{section}.{field}"
            if not (isinstance(value, str) and value.startswith("inputs/")) or key == skip:
                continue
            dest = root / value
            dest.parent.mkdir(parents=True, exist_ok=True)
            if key in given:
                src = given[key]
                (shutil.copytree if src.is_dir() else shutil.copy)(src, dest)
            elif key == "download.mirror":
                dest.mkdir()
            else:
                dest.write_bytes(b"stand-in")
    return root


def test_presets_are_shipped_and_validate():
    assert sorted(presets()) == sorted(PRESETS)
    for name in PRESETS:
        params = load_params(Path(str(__import__("importlib.resources").resources.files(
            "tspipe").joinpath("presets", f"{name}.yaml"))))
        assert params.dataset.name


def test_demo_preset_is_the_projects_params_yaml_byte_for_byte(repo_root):
    assert preset_text("demo") == (repo_root / "params.yaml").read_text(encoding="utf-8")


def test_paper_presets_set_the_reference_recipes():
    anet = yaml.safe_load(preset_text("activitynet-tsp"))
    p = anet["pretrain"]
    assert (p["encoder"], p["clips_per_segment"], p["epochs"], p["lr_milestones"]) == \
        ("r2plus1d_34", 5, 8, [4, 6])
    assert (p["batch_size"], p["lr_backbone"], p["lr_heads"]) == (64, 1e-4, 2e-3)
    assert anet["localize"]["temporal_scale"] == 100
    assert anet["localize"]["model_size"] == "reference"
    assert anet["base"]["enabled"] is False and anet["synth"]["enabled"] is False
    tac = yaml.safe_load(preset_text("activitynet-tac"))
    assert tac["pretrain"]["mode"] == "tac" and tac["gvf"]["enabled"] is False
    thumos = yaml.safe_load(preset_text("thumos14-tsp"))
    assert thumos["pretrain"]["lr_heads"] == 4e-3
    assert thumos["pretrain"]["train_subsets"] == ["validation"]
    assert thumos["localize"]["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    i3d = yaml.safe_load(preset_text("thumos14-i3d"))
    assert (i3d["extract"]["encoder"], i3d["extract"]["flow_encoder"]) == ("i3d", "i3d_flow")
    assert i3d["flow"]["method"] == "tvl1" and i3d["pretrain"]["enabled"] is False


def test_synth_hard_preset_compares_with_power(tmp_path, monkeypatch, capsys):
    from tspipe.config import parse_params
    from tspipe.data.synth import plan_videos

    code, out, _ = cli(monkeypatch, capsys, "init", str(tmp_path / "h"), "--preset",
                       "synth-hard")
    assert code == 0 and "nothing to supply" in out
    code, out, _ = cli(monkeypatch, capsys, "init", str(tmp_path / "a"), "--preset",
                       "activitynet-tsp")
    assert code == 0 and "supply the files it marks SUPPLY" in out

    params = parse_params(yaml.safe_load(preset_text("synth-hard")), env={})
    assert params.synth.difficulty == "hard" and params.base.enabled
    videos = plan_videos(params.synth)
    assert sum(v.subset == "validation" for v in videos) >= 48
    lengths = [s.stop - s.start for v in videos for s in v.spans]
    assert min(lengths) <= params.synth.fps and max(lengths) >= 10 * params.synth.fps
    assert params.compare.seeds == [0, 1, 2]
    runs = params.compare.runs()
    assert len(runs) == 9 and runs["tsp-shuffled-seed2"] == ("tsp-shuffled", 2)
    control = params.for_variant("tsp-shuffled-seed2").pretrain
    assert (control.mode, control.region_labels, control.seed) == ("tsp", "shuffled", 2)
    assert params.for_variant("tsp").pretrain.region_labels == "given"


def test_init_writes_only_params_yaml_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, out, _ = cli(monkeypatch, capsys, "init", str(run), "--preset", "thumos14-tsp")
    assert code == 0, out
    assert [p.name for p in run.iterdir()] == ["params.yaml"]
    assert (run / "params.yaml").read_text() == preset_text("thumos14-tsp")
    code, _, err = cli(monkeypatch, capsys, "init", str(run), "--preset", "demo")
    assert code == 2 and "already exists" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert (run / "params.yaml").read_text() == preset_text("thumos14-tsp")
    code, _, _ = cli(monkeypatch, capsys, "init", str(run), "--preset", "demo", "--force")
    assert code == 0 and (run / "params.yaml").read_text() == preset_text("demo")
    code, _, err = cli(monkeypatch, capsys, "init", str(run), "--preset", "kinetics")
    assert code == 2 and "activitynet-tsp" in err


def test_demo_files_made_by_earlier_stages_are_not_flagged(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(preset_text("demo"))
    code, out, err = cli(monkeypatch, capsys, "params", "--root", str(tmp_path))
    assert code == 0, err
    assert json.loads(out)["pretrain"]["init_checkpoint"] == "models/pretrain/base/checkpoint.pt"


@pytest.mark.parametrize(("preset", "key"), [
    ("activitynet-tsp", "pretrain.init_checkpoint"),
    ("activitynet-tsp", "dataset.annotations"),
    ("activitynet-tsp", "localize.class_scores"),
    ("activitynet-tsp", "download.mirror"),
    ("thumos14-tsp", "dataset.metadata"),
    ("thumos14-i3d", "extract.flow_checkpoint"),
])
def test_a_missing_file_is_named_in_one_line_before_any_work(
        tmp_path, monkeypatch, capsys, anet_json, thumos_dir, preset, key):
    root = supply(tmp_path, preset, anet_json, thumos_dir, skip=key)
    value = yaml.safe_load(preset_text(preset))[key.split(".")[0]][key.split(".")[1]]
    for args in (["params"], ["run"], ["stage", "ingest"] if key.startswith("dataset") else
                 ["stage", "extract" if "extract" in key else "evaluate" if "localize" in key
                  else "download" if "mirror" in key else "pretrain"]):
        code, _, err = cli(monkeypatch, capsys, *args, "--root", str(root))
        assert code == 2, (args, err)
        line, = err.strip().splitlines()
        assert line.startswith(f"Error: {key}: {value} does not exist"), line
        assert "Put there" in line and "Traceback" not in err
    assert not (root / "data").exists() and not (root / "mlflow.db").exists()


def test_a_variant_override_is_named_by_its_own_key(tmp_path, monkeypatch, capsys, anet_json,
                                                    thumos_dir):
    root = supply(tmp_path, "activitynet-tsp", anet_json, thumos_dir)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["compare"]["variants"]["released"] = {"pretrain": {"enabled": False},
                                              "extract": {"checkpoint": "nope.pth"}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    code, _, err = cli(monkeypatch, capsys, "params", "--root", str(root))
    assert code == 2
    assert err.startswith("Error: compare.variants.released.extract.checkpoint: nope.pth")


@pytest.mark.parametrize("preset", ["activitynet-tsp", "activitynet-tac"])
def test_activitynet_presets_dry_run_on_the_real_annotations(
        tmp_path, monkeypatch, capsys, anet_json, thumos_dir, preset):
    root = supply(tmp_path, preset, anet_json, thumos_dir)
    code, out, err = cli(monkeypatch, capsys, "params", "--root", str(root))
    assert code == 0, err
    code, out, err = cli(monkeypatch, capsys, "run", "--dry-run", "--json", "--root", str(root))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["videos"] == {"training": 10024, "validation": 4926}
    # one window per 16/15 s of ~14,950 videos of ~2 min: about 1.6 million clips
    assert 1_500_000 < sum(plan["clips"].values()) < 1_800_000
    variant = "tsp" if preset.endswith("tsp") else "tac"
    stages = [r["stage"] for r in plan["stages"]]
    gvf = ["gvf"] if variant == "tsp" else []
    assert stages == ["ingest", "download", "decode", "flow", *gvf,
                      f"pretrain@{variant}", f"extract@{variant}", f"evaluate@{variant}",
                      "compare"]
    assert all(r["cache"].startswith("runs") for r in plan["stages"])
    extract = next(r for r in plan["stages"] if r["stage"].startswith("extract"))
    assert extract["estimate_s"] > 3600 and "H100" in extract["estimate_source"]
    assert plan["missing"] == [] and plan["notes"] == []
    assert not (root / "data").exists()
    code, out, _ = cli(monkeypatch, capsys, "run", "--dry-run", "--root", str(root))
    assert code == 0 and "extract@" in out and "estimate from README" in out


@pytest.mark.parametrize("preset", ["thumos14-tsp", "thumos14-i3d"])
def test_thumos_presets_dry_run_on_the_real_annotations(
        tmp_path, monkeypatch, capsys, anet_json, thumos_dir, preset):
    root = supply(tmp_path, preset, anet_json, thumos_dir)
    code, out, err = cli(monkeypatch, capsys, "run", "--dry-run", "--json", "--root", str(root))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["videos"] == {"testing": 212, "validation": 200}
    assert plan["missing"] == []
    # evaluate trains on validation and scores testing: both there, nothing to warn of
    assert plan["notes"] == []
    evaluate = next(r for r in plan["stages"] if r["stage"].startswith("evaluate"))
    assert "200 validation videos" in json.dumps(evaluate)
    # ... and a subset the annotations lack is said, not hidden
    params = (root / "params.yaml").read_text().replace("eval_subset: testing",
                                                        "eval_subset: test")
    (root / "params.yaml").write_text(params)
    code, out, err = cli(monkeypatch, capsys, "run", "--dry-run", "--json", "--root", str(root))
    assert code == 0, err
    assert any("localize.eval_subset is 'test'" in n for n in json.loads(out)["notes"])
    stages = [r["stage"] for r in plan["stages"]]
    assert ("gvf" in stages) == (preset == "thumos14-tsp")
    assert ("pretrain@tsp" in stages) == (preset == "thumos14-tsp")


def test_dry_run_lists_missing_files_without_failing(tmp_path, monkeypatch, capsys, anet_json,
                                                     thumos_dir):
    root = supply(tmp_path, "activitynet-tsp", anet_json, thumos_dir,
                  skip="pretrain.init_checkpoint")
    code, out, _ = cli(monkeypatch, capsys, "run", "--dry-run", "--json", "--root", str(root))
    assert code == 0
    assert [m["key"] for m in json.loads(out)["missing"]] == ["pretrain.init_checkpoint"]
