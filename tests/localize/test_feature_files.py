"""Reading feature files: every layout read back with its timing, missing and bad videos
reported, unreadable sources, ids matched up to ActivityNet's ``v_`` prefix."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest

from tspipe.data.clip_sampler import ClipSampler
from tspipe.errors import ShapeError
from tspipe.extract.export import export_csv, export_npy
from tspipe.extract.writers import H5FeatureWriter
from tspipe.localize.feature_files import FeatureError, load_features, match_id

ATTRS = {"fps": 15.0, "stride": 16, "frames": 16, "encoder": "r2plus1d_34",
         "checkpoint_sha256": "0" * 64, "feature_version": "v1", "preprocessing": "center"}
SAMPLER = ClipSampler(16, 15, 16)


def _features(num_clips: int, dim: int = 3, offset: float = 0.0) -> np.ndarray:
    return (np.arange(num_clips * dim, dtype=np.float32).reshape(num_clips, dim) + offset)


def _tspipe_h5(path, videos: dict[str, int]) -> dict[str, np.ndarray]:
    """A tspipe feature file: video id -> number of 16-frame clips (at 15 fps)."""
    data = {}
    with H5FeatureWriter(path, ATTRS, compression=None) as writer:
        for i, (video_id, clips) in enumerate(videos.items()):
            data[video_id] = _features(clips, offset=100 * i)
            writer.write(video_id, data[video_id], SAMPLER.windows(clips * 16))
    return data


def test_version_folder_with_index(tmp_path) -> None:
    version = tmp_path / "features" / "abc123"
    data = _tspipe_h5(version / "shard-00000.h5", {"vid_a": 3, "vid_b": 2})
    data |= _tspipe_h5(version / "shard-00001.h5", {"vid_c": 4})
    index = {"feature_version": "abc123", "videos": {
        "vid_a": {"status": "ok", "shard": "shard-00000.h5", "num_clips": 3},
        "vid_b": {"status": "ok", "shard": "shard-00000.h5", "num_clips": 2},
        "vid_c": {"status": "ok", "shard": "shard-00001.h5", "num_clips": 4},
        "vid_d": {"status": "failed", "shard": None, "reason": "decode error"}}}
    (version / "index.json").write_text(json.dumps(index))

    got = load_features(version, ["vid_c", "vid_a", "vid_d"])
    assert list(got.videos) == ["vid_c", "vid_a"]
    assert got.bad == {"vid_d": "extraction failed: decode error"}
    assert got.missing == []
    np.testing.assert_array_equal(got["vid_c"].features, data["vid_c"])
    timing = got["vid_c"].timing
    np.testing.assert_allclose(timing.t_start, [0, 16 / 15, 32 / 15, 48 / 15])
    np.testing.assert_allclose(timing.t_end, [16 / 15, 32 / 15, 48 / 15, 64 / 15])
    assert (timing.fps, timing.stride, timing.frames) == (15.0, 16, 16)
    assert got["vid_c"].covered_duration == pytest.approx(64 / 15)

    everything = load_features(version)
    assert list(everything.videos) == ["vid_a", "vid_b", "vid_c"]
    assert list(everything.bad) == ["vid_d"]


def test_version_folder_without_index_reads_the_shards(tmp_path) -> None:
    _tspipe_h5(tmp_path / "shard-00000.h5", {"x": 2})
    _tspipe_h5(tmp_path / "shard-00001.h5", {"y": 5})
    got = load_features(tmp_path)
    assert {k: v.num_clips for k, v in got.videos.items()} == {"x": 2, "y": 5}


def test_tsp_merged_h5_with_prefix_missing_and_bad(tmp_path, caplog) -> None:
    path = tmp_path / "r2plus1d_34-tsp_on_activitynet.h5"
    good = _features(6, dim=4)
    nan = _features(3, dim=4)
    nan[1, 2] = np.nan
    with h5py.File(path, "w") as f:  # TSP style: no attributes, ids with v_
        f["v_abc"] = good.astype(np.float16)
        f["v_nan"] = nan
        f["v_flat"] = np.zeros(5, dtype=np.float32)
        f["plain"] = _features(2)
    asked = ["abc", "v_plain", "nan", "flat", "gone1", "gone2"]
    with caplog.at_level(logging.WARNING, logger="tspipe.localize.feature_files"):
        got = load_features(path, asked)
    assert list(got.videos) == ["abc", "v_plain"]
    assert got["abc"].key == "v_abc"
    assert got["v_plain"].key == "plain"
    assert got["abc"].features.dtype == np.float32
    np.testing.assert_array_equal(got["abc"].features, good)
    assert got["abc"].timing is None and got["abc"].covered_duration is None
    assert got.missing == ["gone1", "gone2"]
    assert "1 NaN/inf values in 1 snippets (first: snippet 1)" in got.bad["nan"]
    assert "shape (5,), a 2-D (T, C) array expected" in got.bad["flat"]
    text = caplog.text
    assert str(path) in text
    assert "2 requested videos have no features: gone1, gone2" in text
    assert "2 videos skipped" in text and "nan (" in text


def test_npy_folder_with_sidecar(tmp_path) -> None:
    data = _tspipe_h5(tmp_path / "shard.h5", {"abc": 3, "def": 1})
    export_npy(tmp_path / "shard.h5", tmp_path / "npy", id_prefix="v_")
    got = load_features(tmp_path / "npy", ["abc", "v_def"])
    np.testing.assert_array_equal(got["abc"].features, data["abc"])
    np.testing.assert_array_equal(got["v_def"].features, data["def"])
    # timing from features.json: fps 15, stride 16, frames 16
    np.testing.assert_allclose(got["abc"].timing.t_start, [0, 16 / 15, 32 / 15])
    assert got["abc"].covered_duration == pytest.approx(3.2)


def test_csv_folder_bmn_style(tmp_path) -> None:
    data = _tspipe_h5(tmp_path / "shard.h5", {"v_abc": 4})
    export_csv(tmp_path / "shard.h5", tmp_path / "csv")
    (tmp_path / "csv" / "broken.csv").write_text("f0,f1\n1,2\nthree,4\n")
    got = load_features(tmp_path / "csv", ["abc", "broken"])
    np.testing.assert_array_equal(got["abc"].features, data["v_abc"])
    assert got["abc"].timing is None
    assert "cannot read" in got.bad["broken"]


def test_unreadable_sources_raise(tmp_path) -> None:
    with pytest.raises(FeatureError, match="no such feature file"):
        load_features(tmp_path / "nope")
    with pytest.raises(FeatureError, match="no features found"):
        load_features(tmp_path)
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "b.csv").write_text("f0\n1\n")
    with pytest.raises(FeatureError, match=r"both \.npy and \.csv"):
        load_features(tmp_path)


def test_match_id_prefers_exact_key() -> None:
    assert match_id("abc", {"abc", "v_abc"}) == "abc"
    assert match_id("v_abc", {"abc"}) == "abc"
    assert match_id("abc", {"v_abc"}) == "v_abc"
    assert match_id("abc", {"v_v_abc"}) is None


def _version(folder, widths: dict[str, int], feature_dim: int | None = 3) -> None:
    """A version folder: one shard per video of the given widths, and its index."""
    videos = {}
    for i, (video_id, dim) in enumerate(widths.items()):
        shard = f"shard-{i:05d}.h5"
        with H5FeatureWriter(folder / shard, ATTRS, compression=None) as writer:
            writer.write(video_id, _features(2, dim=dim), SAMPLER.windows(32))
        videos[video_id] = {"status": "ok", "shard": shard, "num_clips": 2}
    index = {"feature_version": "abc123", "videos": videos}
    if feature_dim is not None:
        index["feature_dim"] = feature_dim
    (folder / "index.json").write_text(json.dumps(index))


def test_whole_refuses_what_a_lenient_read_leaves_out(tmp_path) -> None:
    folder = tmp_path / "v"
    _version(folder, {"a": 3, "b": 3, "c": 3})
    assert len(load_features(folder, whole=True)) == 3

    # A shard cut short: read leniently, its video is left out; whole, refused by name.
    shard = folder / "shard-00001.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert list(load_features(folder).bad) == ["b"]
    with pytest.raises(FeatureError, match=r"not a whole feature version: of the videos "
                       r"asked for, 1 cannot be used \(b: .*shard-00001\.h5: cannot read"):
        load_features(folder, whole=True)
    shard.write_bytes(data)
    # A video the index lists as failed, and one asked for that it lacks.
    index = json.loads((folder / "index.json").read_text())
    index["videos"]["c"] = {"status": "failed", "shard": None, "reason": "NaN features"}
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(FeatureError, match=r"1 cannot be used \(c: extraction failed: NaN "
                       r"features\); 1 are not in it \(gone\)"):
        load_features(folder, ["a", "c", "gone"], whole=True)


def test_whole_refuses_features_of_another_width(tmp_path) -> None:
    _version(tmp_path / "indexed", {"a": 3, "b": 4, "c": 3})
    with pytest.raises(ShapeError, match=r"shard-00001\.h5: video 'b': features 4 wide, "
                       r"expected 3 \(.*: its index\.json says feature_dim 3\)"):
        load_features(tmp_path / "indexed", whole=True)
    # Every video 4 wide where the index says 3: the index decides.
    _version(tmp_path / "all", {"a": 4, "b": 4}, feature_dim=3)
    with pytest.raises(ShapeError, match="2 of 2 videos have another width"):
        load_features(tmp_path / "all", whole=True)
    # No feature_dim recorded (an index from before it was): the most common width.
    _version(tmp_path / "old", {"a": 3, "b": 4, "c": 3}, feature_dim=None)
    with pytest.raises(ShapeError, match=r"features 4 wide, expected 3 \(.*2 of its 3 "
                       r"videos are 3 wide\)"):
        load_features(tmp_path / "old", whole=True)
    assert len(load_features(tmp_path / "old")) == 3  # a lenient read reads what is there
