"""fast vs reference preprocessing, measured on the test videos."""

from __future__ import annotations

from tspipe.extract import compare_modes


def test_fast_mode_stays_close_to_the_reference(videos, sampler, tiny, capsys):
    cmp = compare_modes(videos, tiny, tiny.input_spec, sampler, batch_size=4, workers=0,
                        device="cpu")
    with capsys.disabled():
        print(f"\nfast vs reference on {cmp.clips} clips: {cmp.to_dict()}")
    assert cmp.clips == 8
    assert cmp.cosine_mean > 0.95
    assert cmp.cosine_min > 0.95
    assert cmp.max_abs_diff < cmp.feature_scale  # differences are a fraction of the values
    assert 0 < cmp.input_mean_abs_diff < 0.1  # normalized units (1 = one std of Kinetics)
    assert cmp.centered_cosine_mean > 0.9  # also once the shared positive mean is removed
