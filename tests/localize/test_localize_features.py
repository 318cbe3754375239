"""Features on a model's time axis: rescaling, covered durations and windows over long
videos."""

from __future__ import annotations

import numpy as np
import pytest

from tspipe.localize.features import (
    SnippetWindow,
    covered_duration,
    cut_window,
    rescale,
    sliding_windows,
    snippet_covered_duration,
    window_to_video,
)

# -- rescale -------------------------------------------------------------------------------

@pytest.mark.parametrize(("num", "scale"), [(5, 9), (9, 5), (5, 5), (2, 100), (101, 11)])
def test_linear_ramp_stays_exact(num: int, scale: int) -> None:
    # ramp 2k + 1 in column 0, -k in column 1: at position x it must read 2x + 1 and -x,
    # x = i (num - 1) / (scale - 1); these positions are exact binary fractions or integers.
    k = np.arange(num, dtype=np.float64)
    out = rescale(np.stack([2 * k + 1, -k], axis=1), scale)
    x = np.arange(scale) * (num - 1) / (scale - 1)
    assert out.shape == (scale, 2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.stack([2 * x + 1, -x], axis=1).astype(np.float32))


def test_ramp_to_bmn_scale_and_endpoints_kept() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(37, 4)).astype(np.float32)
    out = rescale(data, 100)
    np.testing.assert_array_equal(out[0], data[0])
    np.testing.assert_array_equal(out[-1], data[-1])
    ramp = rescale(np.arange(37, dtype=np.float32)[:, None], 100)[:, 0]
    np.testing.assert_allclose(ramp, np.arange(100) * 36 / 99, rtol=0, atol=1e-5)
    # position 1 is 36/99 = 0.3636 of the way from snippet 0 to 1
    np.testing.assert_allclose(out[1], data[0] + 36 / 99 * (data[1] - data[0]), atol=1e-6)


def test_single_snippet_repeats_and_bad_input() -> None:
    out = rescale(np.array([[1.5, -2.0]]), 4)
    np.testing.assert_array_equal(out, [[1.5, -2.0]] * 4)
    with pytest.raises(ValueError, match="scale must be >= 2"):
        rescale(np.ones((3, 2)), 1)
    with pytest.raises(ValueError, match="non-empty"):
        rescale(np.ones((0, 2)), 4)


# -- durations -----------------------------------------------------------------------------

def test_covered_durations() -> None:
    # 3 clips of 16 frames every 16 frames at 15 fps end at frame 48: 3.2 s
    assert covered_duration(3, fps=15.0, stride=16, frames=16) == pytest.approx(3.2)
    # overlapping: every 8 frames, last starts at 16 and ends at 32: 32/15 s
    assert covered_duration(3, fps=15.0, stride=8, frames=16) == pytest.approx(32 / 15)
    assert covered_duration(0, fps=15.0, stride=16, frames=16) == 0.0
    # CUHK: 1000 frames -> 62 snippets of 16 = 992 frames: 992 / 1000 * 40 s = 39.68 s
    assert snippet_covered_duration(1000, 40.0) == pytest.approx(39.68)
    assert snippet_covered_duration(992, 40.0) == pytest.approx(40.0)


# -- windows -------------------------------------------------------------------------------

def test_sliding_windows_hand_checked() -> None:
    # 10 snippets, windows of 4 every 3: starts 0, 3, 6; 6 + 4 = 10 reaches the end
    assert sliding_windows(10, 4, 3) == [SnippetWindow(0, 0, 4), SnippetWindow(1, 3, 7),
                                         SnippetWindow(2, 6, 10)]
    # 11 snippets: 0, 3, 6 stop at 10, so one more window aligned to the end: 7..11
    assert [w.start for w in sliding_windows(11, 4, 3)] == [0, 3, 6, 7]
    assert sliding_windows(11, 4, 3)[-1].end == 11
    assert sliding_windows(4, 4, 2) == [SnippetWindow(0, 0, 4, 0)]
    assert sliding_windows(3, 4, 2) == [SnippetWindow(0, 0, 3, 1)]
    assert sliding_windows(0, 4, 2) == []


def test_cut_window_pads_and_maps_back() -> None:
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)  # [0, 1], [2, 3], [4, 5]
    (win,) = sliding_windows(3, 5, 5)
    np.testing.assert_array_equal(cut_window(feats, win), [[0, 1], [2, 3], [4, 5], [0, 0],
                                                           [0, 0]])
    np.testing.assert_array_equal(cut_window(feats, win, pad="edge")[3:], [[4, 5], [4, 5]])
    assert cut_window(feats, SnippetWindow(0, 1, 3)).tolist() == [[2, 3], [4, 5]]
    # a window of 4 snippets starting at 7: normalized [0.25, 0.5] -> snippets [8, 9]
    np.testing.assert_allclose(window_to_video([[0.25, 0.5]], SnippetWindow(3, 7, 11)),
                               [[8.0, 9.0]])
