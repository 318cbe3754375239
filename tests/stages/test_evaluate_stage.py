"""The evaluate stage on tiny SynthActions features: results in the ActivityNet format,
metrics and the AR-AN curve, the catalog's evaluation rows, and videos without features."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from stage_helpers import VARIANT, write_params

from tspipe.catalog import Catalog
from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.errors import StageError
from tspipe.localize import evaluate_detection, evaluate_proposals
from tspipe.localize.bootstrap import VideoTable
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter
from tspipe.stages.evaluate import uniform_proposals

pytestmark = pytest.mark.slow

TINY = {"videos": 4, "classes": 2, "seed": 2, "min_duration": 20.0, "max_duration": 24.0,
        "fps": 10, "width": 64, "height": 48, "min_instances": 1, "max_instances": 2,
        "min_action": 3.0, "max_action": 6.0, "validation_fraction": 0.5}


def test_evaluate_scores_each_method_and_the_baseline(tmp_path, repo_root):
    root = tmp_path / "run"
    root.mkdir()
    write_params(root, repo_root, synth=TINY, gvf={"enabled": False},
                 pretrain={"enabled": False},  # features from seeded random weights
                 extract={"workers": 0, "batch_size": 16},
                 localize={"temporal_scale": 16, "epochs": 2})
    params, run_paths = load_params(root / "params.yaml"), RunPaths.at(root)
    paths = run_paths.for_variant(VARIANT)  # where the variant's stages write
    evaluate = f"evaluate@{VARIANT}"
    for stage in ("synth", "ingest", "download", "decode", f"extract@{VARIANT}"):
        run_stage(stage, params, run_paths, NullReporter(), track=False)
    result = run_stage(evaluate, params, run_paths, NullReporter(), track=False).result

    version = json.loads(paths.features_current.read_text())["feature_version"]
    assert result.feature_version == version
    assert set(result.scores) == {"uniform", "bmn", "gtad"}
    ann = json.loads(paths.annotations.read_text())["database"]
    classes = {a["label"] for e in ann.values() for a in e["annotations"]}
    val = sorted(v for v, e in ann.items() if e["subset"] == "validation")
    assert result.eval_videos == len(val) and result.train_videos == len(ann) - len(val)
    for method in ("bmn", "gtad"):
        doc = json.loads((paths.results_dir(version, method) / "proposals.json").read_text())
        assert sorted(doc["results"]) == val
        assert all(0 < len(p) <= 100 for p in doc["results"].values())
        history = json.loads((paths.results_dir(version, method) / "history.json").read_text())
        assert [h["epoch"] for h in history] == [0, 1]
        # The stored scores are what the evaluator gives for the stored files.
        again = evaluate_proposals(paths.annotations, doc)
        assert again.auc == pytest.approx(result.scores[method]["auc"])
        dets = json.loads((paths.results_dir(version, method) / "detections.json").read_text())
        assert all(len(d) <= 200 and {e["label"] for e in d} <= classes
                   for d in dets["results"].values())
        det = evaluate_detection(paths.annotations, dets)
        assert det.average_map == pytest.approx(result.scores[method]["average_map"])
        assert 0.0 <= det.average_map <= 1.0
        # The scores by video (the comparison's bootstrap) add up to the same numbers.
        table = VideoTable.load(paths.results_dir(version, method) / "per_video.npz")
        assert sorted(table.video_ids.tolist()) == val
        for key in ("auc", "ar_at_100", "average_map"):
            assert table.scores()[key] == pytest.approx(result.scores[method][key], abs=1e-9)
    # Linear probes of the validation clips: balanced accuracies, on every scored clip.
    probes = json.loads(paths.metrics("probe").read_text())
    assert set(probes) == {"action", "boundary"} and probes == result.probes
    for task in probes.values():
        assert 0.0 <= task["balanced_accuracy"] <= 1.0
        assert 0 < task["positives"] < task["clips"]
    assert result.metrics()["probe.action.balanced_accuracy"] == \
        probes["action"]["balanced_accuracy"]
    metrics = json.loads(paths.metrics("localize").read_text())
    assert metrics == {m: pytest.approx(v) for m, v in result.scores.items()}
    with open(paths.plot("evaluate", "ar_an"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"uniform", "bmn", "gtad"}
    assert len(rows) == 3 * 100
    with open(paths.plot("evaluate", "map_tiou"), newline="") as fh:
        maps = {(r["method"], r["tiou"]): float(r["map"]) for r in csv.DictReader(fh)}
    assert len(maps) == 3 * 10
    assert np.mean([maps[("bmn", f"{t:.4f}")] for t in np.arange(0.5, 0.96, 0.05)]) \
        == pytest.approx(100 * result.scores["bmn"]["average_map"], abs=1e-3)
    with open(paths.plot("evaluate", "losses"), newline="") as fh:
        loss_rows = list(csv.DictReader(fh))
    assert [(r["method"], r["epoch"]) for r in loss_rows] == [
        ("bmn", "0"), ("bmn", "1"), ("gtad", "0"), ("gtad", "1")]
    pngs = sorted(p.name for p in result.artifacts())
    assert pngs == ["evaluate_ar_an.png", "evaluate_losses.png", "evaluate_map_tiou.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.artifacts())
    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        lineage = cat.show(version)
    stored = {(e.method, e.metric): e.value for e in lineage.evaluations}
    assert stored[("bmn", "auc")] == pytest.approx(result.scores["bmn"]["auc"])
    assert stored[("uniform", "ar_at_100")] == pytest.approx(
        result.scores["uniform"]["ar_at_100"])

    # External class scores (CUHK's layout) replace the classifier: every proposal gets
    # both classes (top 2), scored by the proposal score x the file's class score; only
    # the classes with validation ground truth are kept.
    names = sorted(classes)
    file_scores = {names[0]: 0.5, names[1]: 0.25}
    external = {"class": names, "results": {**{v: [0.5, 0.25] for v in val},
                                            "not_a_validation_video": [0.1, 0.9]}}
    (root / "scores.json").write_text(json.dumps(external))
    write_params(root, repo_root, synth=TINY, gvf={"enabled": False},
                 pretrain={"enabled": False},  # features from seeded random weights
                 extract={"workers": 0, "batch_size": 16},
                 localize={"temporal_scale": 16, "epochs": 1, "methods": ["bmn"],
                           "class_scores": "scores.json"})
    params = load_params(root / "params.yaml")
    run_stage(evaluate, params, run_paths, NullReporter(), track=False)
    props = json.loads((paths.results_dir(version, "bmn") / "proposals.json").read_text())
    dets = json.loads((paths.results_dir(version, "bmn") / "detections.json").read_text())
    val_classes = {a["label"] for v in val for a in ann[v]["annotations"]}
    for v in val:
        assert {d["label"] for d in dets["results"][v]} == val_classes
        for label in val_classes:
            got = sorted(d["score"] for d in dets["results"][v] if d["label"] == label)
            want = sorted(p["score"] * file_scores[label] for p in props["results"][v])
            assert got == pytest.approx(want, rel=1e-6)
    # A file that covers none of the validation videos is refused, by name.
    (root / "scores.json").write_text(json.dumps({"class": names, "results": {
        "elsewhere": [0.5, 0.5]}}))
    with pytest.raises(StageError, match=r"scores\.json: class scores for none"):
        run_stage(evaluate, params, run_paths, NullReporter(), track=False)

    # The protocol is params: train on `validation`, score `training`, with one video left
    # out as the official evaluation's blocked list does; the catalog rows name the subset.
    train_ids = sorted(v for v, e in ann.items() if e["subset"] == "training")
    (root / "blocked.json").write_text(json.dumps([train_ids[0]]))
    write_params(root, repo_root, synth=TINY, gvf={"enabled": False},
                 pretrain={"enabled": False}, extract={"workers": 0, "batch_size": 16},
                 localize={"temporal_scale": 16, "epochs": 1, "methods": ["bmn"],
                           "train_subset": "validation", "eval_subset": "training",
                           "blocked": "blocked.json"})
    params = load_params(root / "params.yaml")
    swapped = run_stage(evaluate, params, run_paths, NullReporter(), track=False).result
    assert (swapped.train_videos, swapped.eval_videos) == (len(val), len(train_ids))
    baseline = json.loads((paths.results_dir(version, "uniform") / "proposals.json")
                          .read_text())
    assert sorted(baseline["results"]) == train_ids
    oracle = evaluate_proposals(paths.annotations, baseline, subset="training",
                                blocked={train_ids[0]})
    assert swapped.scores["uniform"]["auc"] == pytest.approx(oracle.auc)
    assert oracle.auc != pytest.approx(evaluate_proposals(paths.annotations, baseline,
                                                          subset="training").auc)
    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        subsets = {e.subset for e in cat.show(version, every=True).evaluations}
    assert subsets == {"validation", "training"}


def test_uniform_baseline_windows():
    seg, score = uniform_proposals(10.0)
    # 0.1-long windows every 0.025 (37), 0.2 every 0.05 (17), 0.4 every 0.1 (7), 0.8 every
    # 0.2 (2): 63 windows, all inside [0, 10] s, one constant score.
    assert len(seg) == 63 and set(score) == {1.0}
    assert seg.min() >= 0.0 and seg.max() <= 10.0 + 1e-9
    assert seg[0].tolist() == pytest.approx([0.0, 1.0])
