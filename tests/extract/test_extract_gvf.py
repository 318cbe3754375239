"""Global video features: TSP's released file format, both ways; pooling by hand."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from extract_helpers import MeanColour, make_levels

from tspipe.data.clip_sampler import ClipSampler
from tspipe.errors import StageError
from tspipe.extract import GVFWriter, VideoInput, extract_gvf, pool_features, read_gvf
from tspipe.models import InputSpec


@pytest.fixture(scope="module")
def real_gvf(shared_data: Path) -> Path:
    path = shared_data / "annotations" / "tsp" / "thumos14_r2plus1d_34-max_gvf.h5"
    if not path.is_file():
        pytest.fail(f"the released GVF file is missing: {path}")
    return path


def _layout(path: Path) -> set[tuple]:
    """What a reader could notice of a GVF file's datasets."""
    with h5py.File(path) as f:
        return {(type(f[k]).__name__, f[k].dtype.str, f[k].ndim, f[k].chunks == f[k].shape,
                 f[k].compression, f[k].compression_opts, f[k].shuffle, len(f[k].attrs))
                for k in f}


def test_read_gvf_on_the_released_file(real_gvf):
    gvf = read_gvf(real_gvf)
    assert len(gvf) == 413
    assert sum(k.startswith("video_validation_") for k in gvf) == 200
    values = np.stack(list(gvf.values()))
    assert values.dtype == np.float32 and values.shape == (413, 512)
    assert values.min() >= 0  # a max over post-ReLU features
    assert values.mean() == pytest.approx(2.0, abs=0.05)


def test_our_file_has_the_released_layout_both_ways(real_gvf, tmp_path):
    real = read_gvf(real_gvf)
    ids = sorted(real)[::20]
    out = tmp_path / "ours_gvf.h5"
    with GVFWriter(out, attrs={"encoder": "r2plus1d_34"}) as writer:
        for vid in ids:
            # one "clip" per video: its max over time is the vector itself
            writer.write(vid, real[vid][None], [])
    ours = read_gvf(out)
    assert sorted(ours) == ids
    for vid in ids:
        np.testing.assert_array_equal(ours[vid], real[vid])
    assert _layout(out) == _layout(real_gvf) == {("Dataset", "<f4", 1, True, "gzip", 9, False,
                                                   0)}
    # TSP's training code reads h5[video_id] as an array; it reads ours the same way.
    with h5py.File(out) as f:
        vid = ids[0]
        assert torch.equal(torch.tensor(np.asarray(f[vid])), torch.from_numpy(real[vid]))
        assert dict(f.attrs)["gvf_pooling"] == "max"  # ours says how it was made


def test_read_gvf_refuses_clip_features(tmp_path):
    path = tmp_path / "clips.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((3, 4), np.float32)
    with pytest.raises(StageError, match="not a GVF"):
        read_gvf(path)


def test_max_and_mean_pooling_by_hand(tmp_path):
    # Clip 0: 32 frames of colour (40, 80, 120); clip 1: (200, 30, 90). The toy encoder
    # returns each clip's mean colour in [0, 1]: max pools to (200, 80, 120) / 255, mean to
    # (120, 55, 105) / 255 (H.264 moves flat colours by a level or two).
    video = VideoInput("two", make_levels(tmp_path / "two.mp4",
                                          [(40, 80, 120)] * 32 + [(200, 30, 90)] * 32))
    spec = InputSpec(frames=16, size=32, mean=(0.0,) * 3, std=(1.0,) * 3)
    sampler = ClipSampler(16, 15, 16)
    expected = {"max": np.array([200, 80, 120]) / 255, "mean": np.array([120, 55, 105]) / 255}
    for pooling, want in expected.items():
        out = tmp_path / f"{pooling}.h5"
        result = extract_gvf([video], MeanColour(), spec, sampler, out, pooling=pooling,
                             batch_size=2, workers=0, device="cpu")
        assert result.written == ["two"] and result.clips == 2
        np.testing.assert_allclose(read_gvf(out)["two"], want, atol=3 / 255)


def test_pool_features():
    feats = np.array([[1, 5], [3, 2], [2, 2]], np.float32)
    np.testing.assert_array_equal(pool_features(feats, "max"), [3, 5])
    np.testing.assert_allclose(pool_features(feats, "mean"), [2, 3])
    with pytest.raises(StageError):
        pool_features(feats, "median")  # type: ignore[arg-type]
