"""The HDF5 feature writer (parts, merge, resume, refusals) and the exporters."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tspipe.data.clip_sampler import ClipSampler
from tspipe.errors import StageError
from tspipe.extract import (
    H5FeatureWriter,
    Preprocess,
    export_csv,
    export_npy,
    feature_attrs,
    merge_h5,
    read_attrs,
    read_csv_features,
    read_features,
)
from tspipe.models import KINETICS_112

SAMPLER = ClipSampler(16, 15, 16)
SHA = "ab" * 32


def _attrs(version: str = "cd" * 32) -> dict:
    return feature_attrs(encoder="r2plus1d_34", checkpoint_sha256=SHA, feature_version=version,
                         sampler=SAMPLER, prep=Preprocess.for_spec(KINETICS_112))


def _video(n: int, seed: int, dim: int = 8) -> tuple[np.ndarray, list]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), SAMPLER.windows(16 * n + 3)


def test_parts_then_atomic_merge(tmp_path):
    out = tmp_path / "features.h5"
    data = {"v_a": _video(3, 0), "v_b": _video(1, 1), "c": _video(5, 2)}
    writer = H5FeatureWriter(out, _attrs())
    for vid, (feats, wins) in data.items():
        writer.write(vid, feats, wins)
    assert not out.exists()  # nothing merged yet
    assert writer.done_ids() == set(data)
    parts = sorted(p.name for p in (tmp_path / "features.h5.parts").iterdir())
    assert parts == ["attrs.json", "c.h5", "v_a.h5", "v_b.h5"]
    writer.finalize()
    assert not (tmp_path / "features.h5.parts").exists()
    got = read_features(out)
    assert got.keys() == data.keys()
    for vid, (feats, wins) in data.items():
        np.testing.assert_array_equal(got[vid], feats)
        attrs = read_attrs(out, vid)
        assert attrs["t_start"] == [w.t_start for w in wins]
        assert attrs["t_end"] == [w.t_end for w in wins]
        assert attrs["encoder"] == "r2plus1d_34" and attrs["checkpoint_sha256"] == SHA
        assert (attrs["fps"], attrs["stride"], attrs["frames"]) == (15.0, 16, 16)
        assert attrs["preprocessing"] == "reference"
        assert attrs["feature_version"] == "cd" * 32
    assert read_attrs(out)["feature_version"] == "cd" * 32
    # A second writer on the finished file resumes: everything is done.
    again = H5FeatureWriter(out, _attrs())
    assert again.done_ids() == set(data)
    again.finalize()
    assert read_features(out).keys() == data.keys()


def test_more_videos_merge_into_an_existing_file_and_leftover_parts_are_not_doubled(tmp_path):
    out = tmp_path / "f.h5"
    with H5FeatureWriter(out, _attrs()) as w:
        w.write("a", *_video(2, 0))
    w = H5FeatureWriter(out, _attrs())
    w.write("b", *_video(2, 1))
    # A kill after the merge's rename but before the parts were deleted leaves a part whose
    # id the file already has: merging again must not fail or duplicate it.
    w.write("a", *_video(2, 0))
    w.finalize()
    assert sorted(read_features(out)) == ["a", "b"]


def test_float16_and_temp_files_ignored(tmp_path):
    out = tmp_path / "f.h5"
    w = H5FeatureWriter(out, _attrs(), dtype="float16")
    feats, wins = _video(2, 0)
    w.write("a", feats, wins)
    (w.store.parts_dir / ".b.h5.tmp-xyz.h5").write_bytes(b"half written")  # a killed write
    assert w.done_ids() == {"a"}
    w.finalize()
    got = read_features(out)["a"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, feats, atol=1e-2)


def test_refusals(tmp_path):
    out = tmp_path / "f.h5"
    with H5FeatureWriter(out, _attrs()) as w:
        w.write("a", *_video(1, 0))
    with pytest.raises(StageError, match="another extraction"):
        H5FeatureWriter(out, _attrs(version="ef" * 32))
    with pytest.raises(StageError, match="missing"):
        H5FeatureWriter(tmp_path / "g.h5", {"encoder": "x"})
    w = H5FeatureWriter(tmp_path / "g.h5", _attrs())
    with pytest.raises(StageError, match="windows"):
        w.write("b", np.zeros((2, 4), np.float32), SAMPLER.windows(16))
    with pytest.raises(Exception, match="file name"):
        w.write("../evil", *_video(1, 0))


def test_exports_read_back_equal(tmp_path):
    out = tmp_path / "f.h5"
    data = {"v_a": _video(3, 0), "b": _video(4, 1)}
    with H5FeatureWriter(out, _attrs()) as w:
        for vid, (feats, wins) in data.items():
            w.write(vid, feats, wins)

    paths = export_npy(out, tmp_path / "npy", id_prefix="v_")
    assert sorted(p.name for p in paths) == ["v_a.npy", "v_b.npy"]  # no v_v_
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "v_a.npy"), data["v_a"][0])
    b = np.load(tmp_path / "npy" / "v_b.npy")
    assert b.shape == (4, 8)  # (T, C)
    np.testing.assert_array_equal(b, data["b"][0])
    side = json.loads((tmp_path / "npy" / "features.json").read_text())
    assert (side["fps"], side["stride"], side["frames"]) == (15.0, 16, 16)
    assert side["feature_stride_s"] == pytest.approx(16 / 15)
    assert side["clip_offset_s"] == pytest.approx(8 / 15)
    assert side["videos"]["v_b"]["num_clips"] == 4
    assert side["attrs"]["checkpoint_sha256"] == SHA

    paths = export_csv(out, tmp_path / "csv")
    assert sorted(p.name for p in paths) == ["b.csv", "v_a.csv"]
    header = (tmp_path / "csv" / "b.csv").read_text().splitlines()[0]
    assert header == ",".join(f"f{i}" for i in range(8))
    for vid, (feats, _) in data.items():
        np.testing.assert_array_equal(read_csv_features(tmp_path / "csv" / f"{vid}.csv"), feats)


def test_merge_h5_of_shards(tmp_path):
    shards = []
    for i, ids in enumerate([["a", "b"], ["c"]]):
        path = tmp_path / f"shard{i}.h5"
        with H5FeatureWriter(path, _attrs()) as w:
            for j, vid in enumerate(ids):
                w.write(vid, *_video(2 + j, ord(vid)))
        shards.append(path)
    merged = merge_h5(shards, tmp_path / "all.h5")
    got = read_features(merged)
    assert sorted(got) == ["a", "b", "c"]
    np.testing.assert_array_equal(got["c"], _video(2, ord("c"))[0])
    assert read_attrs(merged)["feature_version"] == "cd" * 32
    assert read_attrs(merged, "b")["t_start"] == [w.t_start for w in _video(3, 0)[1]]
    with h5py.File(merged) as f:
        assert f["a"].compression == "gzip"
    with pytest.raises(StageError, match="both"):
        merge_h5([shards[0], shards[0]], tmp_path / "dup.h5")
    other = tmp_path / "other.h5"
    with H5FeatureWriter(other, _attrs(version="ef" * 32)) as w:
        w.write("z", *_video(1, 0))
    with pytest.raises(StageError, match="differ"):
        merge_h5([shards[0], other], tmp_path / "mixed.h5")
    assert not (tmp_path / "mixed.h5").exists()
