"""Preprocessing on the model's device: workers send uint8 frames once, the consumer
preprocesses and gathers; the numbers are the host path's, bit for bit, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from extract_helpers import CountingModel, make_scene, scene_frames

from tspipe.data.clip_sampler import ClipSampler
from tspipe.data.video.encode import VideoWriter
from tspipe.errors import ConfigError
from tspipe.extract import MemoryWriter, Preprocess, VideoInput, extract_features, video_clips
from tspipe.extract.loader import pack_batches
from tspipe.extract.runner import DeviceFrames, resolve_preprocess_on
from tspipe.models import KINETICS_112, TINY_64, InputSpec

CPU = torch.device("cpu")
# A third crop: 96 pixels in [-1, 1] (I3D's convention), resize given.
RANGED_96 = InputSpec(frames=16, size=96, mean=(0.5,) * 3, std=(0.25,) * 3,
                      value_range=(-1.0, 1.0))


@pytest.fixture(scope="module")
def mixed(videos, tmp_path_factory) -> list[VideoInput]:
    """The session's videos (96x128 and 120x160) and a 360x640 one between them."""
    big = make_scene(tmp_path_factory.mktemp("big") / "big.mp4", 40, seed=7, size=(360, 640))
    return [videos[0], VideoInput("big", big), *videos[1:]]


def device_clips(videos, sampler, prep, batch_size, device=CPU):
    """Clips of the raw-frame batches, preprocessed by DeviceFrames; and the batches."""
    batches = list(pack_batches(videos, sampler, prep, batch_size, raw_frames=True))
    assemble = DeviceFrames(prep, device)
    clips = [assemble(b) for b in batches]
    return torch.cat([c.contiguous() for c in clips if c is not None]), batches


@pytest.mark.parametrize(("spec", "resize"), [(KINETICS_112, None), (TINY_64, None),
                                              (RANGED_96, (110, 140))])
@pytest.mark.parametrize(("stride", "batch_size"), [(16, 3), (5, 4)])
def test_device_clips_equal_host_clips_bit_for_bit(mixed, spec, resize, stride, batch_size):
    sampler = ClipSampler(16, 15, stride)
    prep = Preprocess.for_spec(spec, "reference", resize)
    host = torch.stack([c.clip for v in mixed for c in video_clips(v, sampler, prep)])
    got, batches = device_clips(mixed, sampler, prep, batch_size)
    assert got.shape == host.shape == (len(host), 3, 16, spec.size, spec.size)
    assert got.dtype == torch.float32
    assert torch.equal(got, host)
    assert all(b.clips is None and b.frame_index.shape == (len(b.video_ids), 16)
               for b in batches)


@pytest.mark.parametrize("stride", [16, 21])  # 21: frames between windows are skipped
def test_fast_mode_on_the_device_too(videos, stride):
    sampler = ClipSampler(16, 15, stride)
    prep = Preprocess.for_spec(TINY_64, "fast")
    host = torch.stack([c.clip for v in videos for c in video_clips(v, sampler, prep)])
    got, batches = device_clips(videos, sampler, prep, 4)
    assert torch.equal(got, host)
    assert {tuple(f.shape[1:]) for b in batches for f in b.frames} == {(73, 98, 3)}


def test_frames_at_source_size_each_sent_once(mixed):
    # Overlapping windows (stride 3 < 16 frames) in batches of 2: most of a window's
    # frames came in earlier batches and are referenced, not sent again.
    sampler = ClipSampler(16, 15, 3)
    prep = Preprocess.for_spec(KINETICS_112)
    _, batches = device_clips(mixed, sampler, prep, 2)
    sent = sum(len(f) for b in batches for f in b.frames)
    needed = {(vid, k) for b in batches for vid, w in zip(b.video_ids, b.windows, strict=True)
              for k in range(w.start_frame, w.end_frame)}
    assert sent == len(needed)
    assert all(f.dtype == torch.uint8 for b in batches for f in b.frames)
    sizes = {tuple(f.shape[1:3]) for b in batches for f in b.frames}
    assert sizes == {(96, 128), (360, 640), (120, 160)}
    # kept frames never outnumber what a window can share with the next one
    assert max(len(b.keep) for b in batches) <= 16 - 3


def test_one_batch_carries_every_source_size(mixed, sampler):
    prep = Preprocess.for_spec(KINETICS_112)
    (batch,) = pack_batches(mixed, sampler, prep, 64, raw_frames=True)  # all 9 windows
    assert len(batch.video_ids) == 9
    # by size, in order of appearance: long (3 windows) + exact (2) + short (10 frames, the
    # last one 7 times in its padded window); big (1 window); odd (2 windows)
    assert [tuple(f.shape) for f in batch.frames] == [
        (48 + 32 + 10, 96, 128, 3), (16, 360, 640, 3), (32, 120, 160, 3)]
    assert batch.frame_index[-1].tolist() == list(range(80, 90)) + [89] * 6  # short's
    assert len(batch.keep) == 0


def test_extract_features_same_on_host_and_device(mixed, tiny):
    # stride 8: windows share frames across batches. Bit for bit in one process; with
    # DataLoader workers the host path's numbers differ in the last bits, because the
    # CPU's bilinear kernel rounds differently with one thread (as workers run) than with
    # several (test_workers_with_device_preprocessing).
    sampler = ClipSampler(16, 15, 8)
    out = {}
    for where in ("host", "device"):
        writer = MemoryWriter()
        result = extract_features(mixed, tiny, tiny.input_spec, sampler, writer=writer,
                                  batch_size=3, workers=0, device="cpu", preprocess_on=where)
        assert result.preprocess_on == where and not result.failed
        out[where] = writer
    assert out["host"].features.keys() == out["device"].features.keys() == {
        v.video_id for v in mixed}
    for vid, feats in out["host"].features.items():
        assert np.array_equal(out["device"].features[vid], feats), vid
        assert out["device"].windows[vid] == out["host"].windows[vid]


def test_interleaved_workers_keep_their_own_frames(mixed):
    # Two workers' batches arrive in turn (as from a DataLoader); each refers to the frames
    # kept from its own previous batch.
    sampler = ClipSampler(16, 15, 3)
    prep = Preprocess.for_spec(TINY_64)
    streams = {w: pack_batches(mixed[w::2], sampler, prep, 2, raw_frames=True, worker=w)
               for w in (0, 1)}
    assemble = DeviceFrames(prep, CPU)
    got: dict[str, list[torch.Tensor]] = {}
    while streams:
        for worker, stream in list(streams.items()):
            batch = next(stream, None)
            if batch is None:
                del streams[worker]
                continue
            assert batch.worker == worker
            clips = assemble(batch)
            for vid, clip in zip(batch.video_ids, clips if clips is not None else [],
                                 strict=True):
                got.setdefault(vid, []).append(clip)
    for video in mixed:
        host = [c.clip for c in video_clips(video, sampler, prep)]
        assert len(got[video.video_id]) == len(host)
        assert all(torch.equal(a, b) for a, b in zip(got[video.video_id], host, strict=True))


def test_workers_with_device_preprocessing(mixed, tiny):
    sampler = ClipSampler(16, 15, 8)
    want, got = MemoryWriter(), MemoryWriter()
    extract_features(mixed, tiny, tiny.input_spec, sampler, writer=want, batch_size=3,
                     workers=0, device="cpu", preprocess_on="host")
    result = extract_features(mixed, tiny, tiny.input_spec, sampler, writer=got,
                              batch_size=3, workers=2, device="cpu", preprocess_on="device")
    assert result.preprocess_on == "device" and got.features.keys() == want.features.keys()
    for vid, feats in want.features.items():
        np.testing.assert_allclose(got.features[vid], feats, rtol=0, atol=1e-5)


def test_a_failing_video_leaves_the_next_ones_right(videos, tiny, tmp_path):
    whole = tmp_path / "whole.mp4"
    with VideoWriter(whole, rate=30, width=128, height=96,
                     container_options={"movflags": "+faststart"}) as out:
        for frame in scene_frames(200):
            out.write(frame)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    todo = [VideoInput("cut", cut), *videos[:2]]
    sampler = ClipSampler(16, 15, 8)
    got, want = MemoryWriter(), MemoryWriter()
    counting = CountingModel(tiny)
    result = extract_features(todo, counting, tiny.input_spec, sampler, writer=got,
                              batch_size=2, workers=0, device="cpu", preprocess_on="device")
    assert list(result.failed) == ["cut"]
    assert counting.clips > sum(len(f) for f in got.features.values())  # cut's were sent
    extract_features(videos[:2], tiny, tiny.input_spec, sampler, writer=want, workers=0,
                     device="cpu", preprocess_on="host")
    assert got.features.keys() == want.features.keys()
    for vid, feats in want.features.items():
        assert np.array_equal(got.features[vid], feats), vid


def test_where_preprocessing_runs():
    assert resolve_preprocess_on("auto", CPU) == "host"
    assert resolve_preprocess_on("auto", torch.device("cuda")) == "device"
    assert resolve_preprocess_on("device", CPU) == "device"
    assert resolve_preprocess_on("host", torch.device("cuda")) == "host"
    with pytest.raises(ConfigError, match="preprocess_on"):
        resolve_preprocess_on("gpu", CPU)
