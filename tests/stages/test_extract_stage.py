"""The gvf and extract stages on tiny SynthActions: versioned shards, the catalog, reuse of
an older version's videos by copy, --shard, a video that fails, and GVF = max of features."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from stage_helpers import VARIANT, write_params

from tspipe.catalog import Catalog
from tspipe.config import load_params
from tspipe.data.video.encode import write_video
from tspipe.doors.runner import run_stage
from tspipe.extract import MemoryWriter, extract_features, read_features, read_gvf
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter
from tspipe.stages import PartialRun, bind
from tspipe.stages.extract import make_run

pytestmark = pytest.mark.slow

TINY = {"videos": 3, "classes": 2, "seed": 1, "min_duration": 20.0, "max_duration": 22.0,
        "fps": 10, "width": 64, "height": 48, "min_instances": 1, "max_instances": 2,
        "min_action": 3.0, "max_action": 5.0}
RUN = {"workers": 0, "batch_size": 16, "shard_size": 2}
EXTRACT = f"extract@{VARIANT}"
# Extraction from seeded random weights: no pretrain stage (its missing encoder is refused).
NO_PRETRAIN = {"enabled": False}


def _run(root, *stages, **kw):
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    out = None
    for stage in stages:
        out = run_stage(stage, params, paths, NullReporter(), track=False, **kw)
    return out.result


@pytest.fixture
def decoded(tmp_path, repo_root):
    root = tmp_path / "run"
    root.mkdir()
    write_params(root, repo_root, synth=TINY, gvf=RUN, pretrain=NO_PRETRAIN,
                 extract={**RUN, "export": ["npy", "h5"], "export_id_prefix": "v_"})
    _run(root, "synth", "ingest", "download", "decode")
    return root


def _catalog(root):
    return Catalog(f"sqlite:///{root / 'catalog.db'}")


def test_extract_writes_a_version_the_catalog_knows_and_reruns_add_nothing(decoded):
    root = decoded
    result = _run(root, EXTRACT)
    version = result.feature_version
    folder = root / "features" / VARIANT / version
    assert json.loads((root / "features" / VARIANT / "current.json").read_text())[
        "feature_version"] == version
    assert result.features_dir == folder  # the variant's folder, nothing unscoped
    assert not (root / "features" / "current.json").exists()
    assert sorted(p.name for p in folder.glob("shard-*.h5")) == ["shard-00000.h5",
                                                                "shard-00001.h5"]
    assert (result.ok, result.failed, result.reused, result.computed) == (3, 0, 0, 3)

    # The stage's numbers are extraction's numbers: same encoder, same windows.
    _, params, paths = bind(EXTRACT, load_params(root / "params.yaml"), RunPaths.at(root))
    run = make_run(params, paths)
    mem = MemoryWriter()
    extract_features([v for b in run.batches() for v in run.inputs(b)], run.loaded.model,
                     run.loaded.spec, run.sampler, writer=mem, workers=0, device="cpu")
    merged = read_features(folder / "features.h5")
    shards = {}
    for shard in folder.glob("shard-*.h5"):
        shards.update(read_features(shard))
    assert sorted(merged) == sorted(shards) == sorted(mem.features)
    for vid, feats in mem.features.items():
        assert feats.shape == (len(mem.windows[vid]), 128)
        np.testing.assert_array_equal(shards[vid], feats)
        np.testing.assert_array_equal(merged[vid], feats)
        np.testing.assert_array_equal(np.load(folder / "npy" / f"v_{vid}.npy"), feats)
    with h5py.File(folder / "shard-00000.h5") as f:
        assert f.attrs["feature_version"] == version
        assert f.attrs["checkpoint_origin"] == "scratch"
        assert f.attrs["precision"] == "float32"

    with _catalog(root) as cat:
        [row] = cat.list_feature_versions()
        assert (row.id, row.status, row.num_videos, row.feature_dim) == (version, "complete",
                                                                         3, 128)
        assert [c.origin for c in cat.checkpoints()] == ["scratch"]
        videos = cat.feature_videos(version)
    assert [(v.video_id, v.status, v.num_clips) for v in videos] == [
        (vid, "ok", len(mem.windows[vid])) for vid in sorted(mem.features)]

    # Same inputs: same id, nothing computed, nothing added.
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.h5")}
    again = _run(root, EXTRACT)
    assert again.feature_version == version
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.h5")} == before
    with _catalog(root) as cat:
        assert len(cat.list_feature_versions()) == 1
        assert len(cat.feature_videos(version)) == 3


def test_gvf_is_the_max_of_the_same_encoders_clip_features(decoded):
    root = decoded
    gvf = _run(root, "gvf")
    feats = _run(root, EXTRACT)
    assert gvf.path == root / "data" / "gvf" / "gvf.h5"  # shared by every variant
    vectors = read_gvf(gvf.path)
    clip_feats = read_features(feats.features_dir / "features.h5")
    assert sorted(vectors) == sorted(clip_feats) and gvf.ok == 3
    for vid, vector in vectors.items():
        assert vector.shape == (128,) and vector.dtype == np.float32
        np.testing.assert_allclose(vector, clip_feats[vid].max(axis=0), rtol=0, atol=1e-6)


def test_new_videos_make_a_new_version_that_copies_the_old_ones(decoded, repo_root):
    root = decoded
    first_gvf = _run(root, "gvf")
    first_gvf_vectors = read_gvf(first_gvf.path)
    first = _run(root, EXTRACT)
    # One more video in the annotation file; synth is switched off so the rest stay.
    ann = json.loads((root / "data/synth/synthactions.json").read_text())
    rng = np.random.default_rng(7)
    frames = [np.roll(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), i, axis=1)
              for i in range(60)]
    write_video(root / "extra.mp4", frames, fps=10)
    ann["database"]["extra"] = {"subset": "validation", "duration": 6.0,
                                "url": "../../extra.mp4",
                                "annotations": [{"segment": [1.0, 3.0], "label":
                                                 ann["database"]["synth_000"]["annotations"][0]
                                                 ["label"]}]}
    (root / "data/synth/synthactions.json").write_text(json.dumps(ann))
    write_params(root, repo_root, synth={**TINY, "enabled": False}, gvf=RUN,
                 pretrain=NO_PRETRAIN,
                 extract={**RUN, "export": ["npy", "h5"], "export_id_prefix": "v_"})
    _run(root, "ingest", "download", "decode")
    second_gvf = _run(root, "gvf")
    second = _run(root, EXTRACT)

    # The GVF: a new version that computed the new video alone and copied the others.
    assert second_gvf.version != first_gvf.version
    assert (second_gvf.ok, second_gvf.reused) == (4, 3)
    out = root / "data/gvf" / second_gvf.version
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("shard-*.json"))]
    assert sorted(v for r in reports for v in r["written"]) == ["extra"]
    index = json.loads((out / "index.json").read_text())
    assert index["recipe"] == json.loads(
        (root / "data/gvf" / first_gvf.version / "index.json").read_text())["recipe"]
    assert {v: e["reused_from"] for v, e in index["videos"].items()} == {
        **dict.fromkeys(first_gvf_vectors, first_gvf.version), "extra": None}
    vectors = read_gvf(second_gvf.path)
    assert sorted(vectors) == sorted([*first_gvf_vectors, "extra"])
    for vid, vector in first_gvf_vectors.items():
        np.testing.assert_array_equal(vectors[vid], vector)
    for report in reports:  # TSP's released layout: no attributes on a vector
        with h5py.File(out / report["shard"]) as f:
            assert all(not f[v].attrs for v in f)

    assert second.feature_version != first.feature_version
    assert (second.ok, second.reused, second.computed) == (4, 3, 1)
    old = read_features(first.features_dir / "features.h5")
    new = read_features(second.features_dir / "features.h5")
    assert sorted(new) == sorted([*old, "extra"])
    for vid in old:
        np.testing.assert_array_equal(new[vid], old[vid])
    with h5py.File(second.features_dir / "features.h5") as f:  # relabelled as the new one
        assert f["synth_000"].attrs["feature_version"] == second.feature_version
    with _catalog(root) as cat:
        assert len(cat.list_feature_versions()) == 2
        rows = {v.video_id: v for v in cat.feature_videos(second.feature_version)}
    assert {v: r.reused_from for v, r in rows.items()} == {
        **dict.fromkeys(old, first.feature_version), "extra": None}


def test_shards_one_by_one_then_a_video_that_cannot_be_read(decoded):
    root = decoded
    part = _run(root, EXTRACT, shard=(2, 2))
    assert isinstance(part, PartialRun) and (part.batches, part.ran, part.done) == (2, 1, 1)
    assert not (root / "features" / VARIANT / "current.json").exists()
    with _catalog(root) as cat:
        assert cat.list_feature_versions() == []
    full = _run(root, EXTRACT, shard=(1, 2))
    assert full.ok == 3 and full.shards == 2

    # A standardized copy damaged after decode: that video fails with a reason naming
    # it, the others are extracted, and the version (whole: a video's own input failed,
    # not the encoder) becomes current (a fresh features folder: nothing changed that the
    # id sees, so it is the same version).
    shutil.rmtree(root / "features" / VARIANT)
    report = json.loads((root / "data/reports/decode_report.json").read_text())
    victim = report["videos"][1]
    path = root / victim["standardized"]["path"]
    whole = path.read_bytes()
    path.write_bytes(whole[:2000])
    partial = _run(root, EXTRACT)
    assert (partial.ok, partial.failed) == (2, 1)
    current = root / "features" / VARIANT / "current.json"
    assert json.loads(current.read_text())["feature_version"] == partial.feature_version
    index_file = partial.index
    index = json.loads(index_file.read_text())
    failed = index["videos"][victim["video_id"]]
    assert failed["status"] == "failed" and victim["video_id"] in failed["reason"]
    assert [v["status"] for k, v in index["videos"].items() if k != victim["video_id"]] == \
        ["ok", "ok"]
    with _catalog(root) as cat:
        rows = cat.feature_videos(partial.feature_version, status="failed")
    assert [r.video_id for r in rows] == [victim["video_id"]] and rows[0].reason

    # A rerun keeps the version as it is: the failure is the video's (its input), and
    # trying it again would rewrite a finished shard on every run.
    before = {p.name: p.stat().st_mtime_ns for p in index_file.parent.glob("shard-*")}
    assert _run(root, EXTRACT).failed == 1
    assert {p.name: p.stat().st_mtime_ns for p in index_file.parent.glob("shard-*")} == before
