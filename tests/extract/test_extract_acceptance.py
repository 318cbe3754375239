"""THE acceptance test: tspipe's extractor gives the TSP reference's features.

The yardstick decodes every frame with plain PyAV, picks every 2nd, cuts clips and applies
the reference transform with its own few lines (extract_helpers.tsp_reference_clips), then
runs the encoder clip by clip. tspipe decodes each video once, streams windows, packs
clips of several videos per batch and preprocesses frames in chunks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from extract_helpers import tsp_reference_clips

from tspipe.extract import MemoryWriter, extract_features
from tspipe.models import KINETICS_112, build_encoder


@pytest.fixture()
def tiny112() -> torch.nn.Module:
    """r2plus1d_tiny (seeded random weights) taking TSP's 112-pixel clips, so that the
    preprocessing is TSP's own: 128x171 resize, 112 centre crop."""
    torch.manual_seed(0)
    return build_encoder("r2plus1d_tiny", input_spec=KINETICS_112).eval()


def test_reference_mode_equals_plain_pyav_reference(videos, sampler, tiny112):
    writer = MemoryWriter()
    result = extract_features(videos, tiny112, KINETICS_112, sampler, writer=writer,
                              mode="reference", batch_size=3, workers=0, device="cpu")
    assert sorted(result.written) == sorted(v.video_id for v in videos)
    assert not result.failed
    for video in videos:
        clips = tsp_reference_clips(video.path, mean=KINETICS_112.mean, std=KINETICS_112.std)
        with torch.inference_mode():
            expected = np.stack([tiny112(c[None])[0].numpy() for c in clips])
        got = writer.features[video.video_id]
        assert got.shape == expected.shape == (len(clips), 128), video.video_id
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=video.video_id)
        # Clip times: window i covers clip frames [16 i, 16 i + 16) at 15 fps.
        windows = writer.windows[video.video_id]
        assert [w.t_start for w in windows] == pytest.approx([16 * i / 15 for i in
                                                              range(len(clips))])
