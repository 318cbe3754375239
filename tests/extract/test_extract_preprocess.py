"""Preprocessing: the reference transform's arithmetic, crop rounding, sizes, other specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tspipe.errors import ConfigError
from tspipe.extract import Preprocess, center_crop_offsets, default_resize
from tspipe.extract.preprocess import gather_clips
from tspipe.models import KINETICS_112, KINETICS_MEAN, KINETICS_STD, InputSpec


def test_centre_crop_rounds_like_torchvision_0_5():
    # (171 - 112) / 2 = 29.5 rounds to even: 30; (128 - 112) / 2 = 8.
    assert center_crop_offsets(128, 171, 112) == (8, 30)
    assert center_crop_offsets(73, 98, 64) == (4, 17)  # 4.5 -> 4, 17
    assert center_crop_offsets(75, 99, 64) == (6, 18)  # 5.5 -> 6, 17.5 -> 18


def test_default_resize_scales_tsp_margins():
    assert default_resize(112) == (128, 171)
    assert default_resize(224) == (256, 342)
    assert default_resize(64) == (73, 98)


@pytest.mark.parametrize("shape", [(5, 90, 160, 3), (16, 360, 640, 3), (3, 721, 1283, 3)])
def test_reference_is_tsp_transform_bit_for_bit(shape):
    # The larger frames go through in chunks of a few frames; the result must not change.
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, shape, dtype=np.uint8)
    got = Preprocess.for_spec(KINETICS_112, "reference")(frames)
    # torchvision 0.5 order: to float, resize, normalize, crop (written out here)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).to(torch.float32) / 255
    x = F.interpolate(x, size=(128, 171), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(KINETICS_MEAN).view(-1, 1, 1, 1)) / torch.tensor(
        KINETICS_STD).view(-1, 1, 1, 1)
    expected = x[..., 8:120, 30:142]
    assert got.shape == (3, shape[0], 112, 112)
    assert got.is_contiguous()
    assert torch.equal(got, expected)
    # frame by frame gives the same numbers (the loader preprocesses in chunks)
    one_by_one = torch.cat([Preprocess.for_spec(KINETICS_112)(frames[i:i + 1])
                            for i in range(shape[0])], dim=1)
    assert torch.equal(one_by_one, got)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("spec", "mode", "shape"), [
    (KINETICS_112, "reference", (7, 360, 640, 3)),
    (InputSpec(frames=4, size=48, mean=(0.5,) * 3, std=(0.25,) * 3, value_range=(-1.0, 1.0)),
     "reference", (5, 90, 160, 3)),
    (KINETICS_112, "fast", (3, 128, 171, 3)),
])
def test_frames_are_call_bit_for_bit(spec, mode, shape, threads):
    # The device path's op order on the CPU, in any chunking. Equal at equal thread
    # counts: the CPU's bilinear kernel rounds differently with one thread than several.
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, shape, dtype=np.uint8)
    prep = Preprocess.for_spec(spec, mode)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        expected = prep(frames)  # (C, T, crop, crop)
        for chunk_bytes in (1, 1 << 20, 1 << 30):
            got = prep.frames(torch.from_numpy(frames), chunk_bytes)  # (T, crop, crop, C)
            assert got.shape == (shape[0], spec.size, spec.size, 3) and got.is_contiguous()
            assert torch.equal(got.permute(3, 0, 1, 2), expected)
    finally:
        torch.set_num_threads(before)
    index = torch.tensor([[0, 1, 1], [2, 2, 2]])
    clips = gather_clips(got, index)
    assert clips.shape == (2, 3, 3, spec.size, spec.size)
    assert clips.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(clips[1, :, 0], expected[:, 2]) and torch.equal(clips[0, :, 2],
                                                                         expected[:, 1])
    assert prep.frames(torch.zeros(0, 20, 30, 3, dtype=torch.uint8)).shape == (0, spec.size,
                                                                               spec.size, 3)


def test_fast_only_crops_and_normalizes_decoder_sized_frames():
    frames = np.full((2, 128, 171, 3), 51, np.uint8)  # 0.2 after / 255
    prep = Preprocess.for_spec(KINETICS_112, "fast")
    assert prep.decode_size == (128, 171)
    out = prep(frames)
    assert out.shape == (3, 2, 112, 112)
    expected = (0.2 - np.array(KINETICS_MEAN)) / np.array(KINETICS_STD)
    np.testing.assert_allclose(out.mean(dim=(1, 2, 3)).numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="decoded at"):
        prep(np.zeros((1, 96, 128, 3), np.uint8))


def test_other_specs_i3d_style_range():
    i3d = InputSpec(frames=16, size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    prep = Preprocess.for_spec(i3d, "reference")
    assert (prep.resize, prep.crop) == ((256, 342), 224)
    out = prep(np.full((1, 240, 320, 3), 255, np.uint8))
    assert torch.allclose(out, torch.ones_like(out))  # x / 127.5 - 1 at 255
    ranged = InputSpec(frames=4, size=16, mean=(0.0,) * 3, std=(1.0,) * 3,
                       value_range=(-1.0, 1.0))
    out = Preprocess.for_spec(ranged, "reference", (16, 16))(np.zeros((1, 16, 16, 3), np.uint8))
    assert torch.all(out == -1)


FLOW = InputSpec(frames=16, size=8, mean=(0.0, 0.0), std=(20.0, 20.0), channels=2,
                 value_range=(-20.0, 20.0), flow_clip=20.0)


def test_flow_is_resized_with_its_vectors_scaled_then_cropped_and_clipped():
    prep = Preprocess.for_spec(FLOW, "reference", (12, 24))
    assert prep.is_flow and prep.to_dict()["flow_clip"] == 20.0
    # a uniform flow (u, v) = (3, -2) on 6x8 frames, resized to 12x24: x3 in x, x2 in y
    flow = np.zeros((2, 6, 8, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0
    out = prep(flow)
    assert out.shape == (2, 2, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.full_like(out[0], 9.0 / 20))
    assert torch.allclose(out[1], torch.full_like(out[1], -4.0 / 20))
    # a ramp in x keeps its values' order after the crop (columns 8..15 of 24)
    ramp = np.zeros((1, 12, 24, 2), np.float32)
    ramp[..., 0] = np.arange(24, dtype=np.float32)[None, None, :] - 12
    got = Preprocess.for_spec(FLOW, "reference", (12, 24))(ramp)[0, 0, 0]
    assert torch.allclose(got * 20, torch.arange(8, dtype=torch.float32) - 4)
    # beyond the bound: clipped to +-1
    big = np.full((1, 12, 24, 2), 50.0, np.float32)
    assert torch.all(prep(big) == 1.0)
    with pytest.raises(ValueError, match="float flow"):
        prep(np.zeros((1, 12, 24, 2), np.uint8))
    with pytest.raises(ConfigError, match="on the host"):
        prep.frames(torch.zeros(1, 12, 24, 2))


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="flow_clip"):
        Preprocess.for_spec(InputSpec(frames=16, size=8, mean=(0.0, 0.0), std=(1.0, 1.0),
                                      channels=2))
    with pytest.raises(ConfigError, match="expects 4"):
        Preprocess.for_spec(InputSpec(frames=16, size=8, mean=(0.0,) * 4, std=(1.0,) * 4,
                                      channels=4))
    with pytest.raises(ConfigError, match="smaller"):
        Preprocess.for_spec(KINETICS_112, resize=(100, 171))
    with pytest.raises(ConfigError, match="mode"):
        Preprocess.for_spec(KINETICS_112, "bicubic")  # type: ignore[arg-type]
