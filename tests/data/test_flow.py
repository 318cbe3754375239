"""tspipe.data.flow: flow recovers a known motion from a real encoded video; storage."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tspipe.data.flow import (
    DEFAULT_BOUND,
    FlowSettings,
    dequantize,
    frames_flow,
    quantize,
    read_flow,
    video_flow,
    write_flow,
)
from tspipe.data.video.encode import write_video
from tspipe.errors import ConfigError, VideoError

# A smooth random texture moved by a known whole number of pixels a frame.
DX, DY = 3, -2  # pixels per frame at 15 fps: content moves right 3, up 2
H, W = 72, 96


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.5)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    rgb = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], -1)
    return (rgb * 255).astype(np.uint8)


def _translating_frames(n: int) -> list[np.ndarray]:
    margin = 40
    big = _texture(0, H + 2 * margin + n * abs(DY), W + 2 * margin + n * abs(DX))
    out = []
    for t in range(n):
        # content at (y, x) in frame t sits at (y + t DY, x + t DX): the window moves back
        y0 = margin + n * max(DY, 0) - t * DY
        x0 = margin + n * max(DX, 0) - t * DX
        out.append(np.ascontiguousarray(big[y0:y0 + H, x0:x0 + W]))
    return out


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("flow") / "moving.mp4"
    # 15 fps, decoded at 15 fps: consecutive frames are (DX, DY) apart. Near-lossless
    # (crf 10), so the codec does not blur the texture away.
    write_video(path, _translating_frames(24), fps=15, options={"crf": "10"})
    return path


@pytest.mark.parametrize("method, tolerance", [("tvl1", 0.15), ("farneback", 0.3)])
def test_flow_recovers_a_known_translation_from_an_encoded_video(moving_video, method,
                                                                 tolerance):
    flow = video_flow(moving_video, FlowSettings(method=method, fps=15.0))
    assert flow.shape == (24, H, W, 2) and flow.dtype == np.uint8
    px = dequantize(flow, DEFAULT_BOUND)
    inner = px[:-1, 12:-12, 12:-12]  # away from the borders, where content enters
    med = np.median(inner.reshape(-1, 2), axis=0)
    assert abs(med[0] - DX) < tolerance and abs(med[1] - DY) < tolerance, med
    # most pixels, not just the median, see the motion
    err = np.hypot(inner[..., 0] - DX, inner[..., 1] - DY)
    assert np.mean(err < 0.5) > 0.9
    # the last frame repeats the flow before it
    assert np.array_equal(flow[-1], flow[-2])


def test_resized_frames_scale_the_flow(moving_video):
    flow = video_flow(moving_video, FlowSettings(method="farneback", fps=15.0, short_side=36))
    assert flow.shape[1:3] == (36, 48)
    med = np.median(dequantize(flow[:-1, 6:-6, 6:-6]).reshape(-1, 2), axis=0)
    assert abs(med[0] - DX / 2) < 0.3 and abs(med[1] - DY / 2) < 0.3, med


def test_clip_rate_pairs_frames_the_sampler_keeps(tmp_path):
    """At 7.5 fps from a 15 fps file every second frame is kept: twice the motion."""
    path = tmp_path / "m.mp4"
    write_video(path, _translating_frames(20), fps=15, options={"crf": "10"})
    flow = video_flow(path, FlowSettings(method="farneback", fps=7.5))
    assert flow.shape[0] == 10
    med = np.median(dequantize(flow[:-1, 12:-12, 12:-12]).reshape(-1, 2), axis=0)
    assert abs(med[0] - 2 * DX) < 0.5 and abs(med[1] - 2 * DY) < 0.5, med


def test_repeated_frames_have_zero_flow():
    still = np.full((16, 16, 3), 90, np.uint8)
    a = _texture(1, 16, 16)
    flow = frames_flow([a, still, still, a], "farneback")
    assert flow.shape == (4, 16, 16, 2)
    assert np.abs(dequantize(flow[1])).max() <= DEFAULT_BOUND / 255 + 1e-6
    one = frames_flow([a], "farneback")
    assert one.shape == (1, 16, 16, 2)
    assert np.abs(dequantize(one)).max() <= DEFAULT_BOUND / 255 + 1e-6


def test_quantization_round_trip_error_and_clipping():
    f = np.linspace(-30, 30, 1201, dtype=np.float32)
    q = quantize(f, 20.0)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    back = dequantize(q, 20.0)
    inside = np.abs(f) <= 20
    assert np.abs(back[inside] - f[inside]).max() <= 20.0 / 255 + 1e-5
    assert np.allclose(back[f <= -20], -20.0) and np.allclose(back[f >= 20], 20.0)
    with pytest.raises(ValueError, match="bound"):
        quantize(f, 0.0)


def test_flow_file_round_trip_and_errors(tmp_path):
    settings = FlowSettings(method="farneback", fps=15.0)
    flow = quantize(np.random.default_rng(0).normal(0, 5, (5, 8, 10, 2)).astype(np.float32))
    dest = write_flow(tmp_path / "v.h5", flow, settings, source="data/v.mp4")
    back = read_flow(dest)
    assert np.array_equal(back.flow, flow)
    assert (back.bound, back.fps, back.method) == (20.0, 15.0, "farneback")
    assert back.settings == settings.to_dict()
    assert np.allclose(back.pixels(1, 3), dequantize(flow[1:3]))
    with h5py.File(dest) as f:
        assert f.attrs["source"] == "data/v.mp4" and f["flow"].compression == "lzf"
        assert json.loads(f.attrs["settings"])["method"] == "farneback"
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]  # no temp file left

    with pytest.raises(ValueError, match="uint8"):
        write_flow(tmp_path / "w.h5", flow.astype(np.float32), settings)
    assert not (tmp_path / "w.h5").exists()
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(VideoError, match=r"bad\.h5.*not a readable tspipe flow file"):
        read_flow(tmp_path / "bad.h5", video_id="bad")
    with pytest.raises(ConfigError, match="choose one of tvl1, farneback"):
        FlowSettings(method="lucas", fps=15.0)  # type: ignore[arg-type]


def test_undecodable_video_is_a_video_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        video_flow(bad, FlowSettings(method="farneback", fps=15.0), video_id="broken")
