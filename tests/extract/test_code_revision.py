"""The declared code revisions stand for numbers.

A feature version's id names the extraction code by a declared revision
(:data:`tspipe.provenance.FILES_EXTRACT_CODE`, ``EXTRACT_CODE``, ``GVF_CODE``), not by a
hash of its source text. So the numbers are pinned here: two videos drawn from a formula,
through ``tspipe extract``'s code with a seeded encoder, give the features and the id
recorded below. A change that moves them must give the affected revisions in
``tspipe/provenance.py`` a new value, and record the new numbers here; otherwise versions
made before and after would share ids with different numbers. (Recorded at the 2026-12
moving step; the code before it gave the same numbers and the same id.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tspipe.data.video.encode import h264_options, write_video
from tspipe.extract import read_attrs, read_features
from tspipe.extract.files import run_extract
from tspipe.extract.gvf import pool_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VERSION = "7711d14d09c4a6fbe8de235d13271f9c9e44cfd8dd231ddfb88a8cdec18ff7f0"
EXPECTED = {  # shape, sum, the first clip's first 4 values, the max-pooled GVF's first 4
    "formula_0": ((2, 128), 74.67424011230469,
                  [0.1284124106168747, 0.13088776171207428, 0.4020642638206482,
                   0.026187557727098465],
                  [0.12959536910057068, 0.14962084591388702, 0.4115956425666809,
                   0.026187557727098465]),
    "formula_1": ((1, 128), 34.828636169433594,
                  [0.0749216303229332, 0.2032495141029358, 0.4458557367324829,
                   0.03099631704390049],
                  [0.0749216303229332, 0.2032495141029358, 0.4458557367324829,
                   0.03099631704390049]),
}


def formula_frames(n: int, h: int, w: int, k: int):
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(n):
        a = np.sin((xx + (2 + k) * t) / (6.0 + k)) + np.cos((yy - t) / 4.0)
        img = (a * 60 + 128).clip(0, 255).astype(np.uint8)
        yield np.stack([img, np.roll(img, 3 * t, 1), 255 - img], -1)


def test_fixed_videos_give_the_recorded_numbers_and_id(tmp_path):
    files = []
    for k, (n, h, w) in enumerate([(70, 96, 128), (40, 120, 160)]):
        path = tmp_path / f"formula_{k}.mp4"
        write_video(path, formula_frames(n, h, w, k), fps=30,
                    options=h264_options(crf=18, gop=None))
        files.append(path)
    out = tmp_path / "features.h5"
    run_extract(files, out=out, encoder="r2plus1d_tiny", allow_random_init=True, seed=0,
                workers=0, device="cpu", batch_size=4)
    features = read_features(out)
    assert sorted(features) == sorted(EXPECTED)
    for video_id, (shape, total, first, gvf) in EXPECTED.items():
        f = features[video_id]
        assert f.shape == shape, video_id
        np.testing.assert_allclose(f.sum(), total, rtol=1e-5, err_msg=video_id)
        np.testing.assert_allclose(f[0, :4], first, rtol=1e-4, atol=1e-6, err_msg=video_id)
        np.testing.assert_allclose(pool_features(f, "max")[:4], gvf, rtol=1e-4, atol=1e-6,
                                   err_msg=video_id)
    assert read_attrs(out)["feature_version"] == VERSION
