"""The window loader: which frames, which windows, packing across videos, workers, failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import WINDOWS
from extract_helpers import CountingModel, make_levels, scene_frames

from tspipe.data.clip_sampler import ClipSampler
from tspipe.data.video.encode import VideoWriter
from tspipe.extract import (
    MemoryWriter,
    Preprocess,
    VideoInput,
    extract_features,
    make_loader,
    video_clips,
)
from tspipe.extract.loader import clip_rate_frames, pack_batches
from tspipe.models import InputSpec

# Frame i of a "levels" video is grey 4 i: its index can be read back from the pixels.
RAW = InputSpec(frames=4, size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _index(frame: np.ndarray) -> int:
    return round(float(frame.mean()) / 4)


@pytest.fixture(scope="module")
def levels(tmp_path_factory) -> VideoInput:
    path = tmp_path_factory.mktemp("levels") / "levels.mp4"
    return VideoInput("levels", make_levels(path, [(4 * i,) * 3 for i in range(41)],
                                            size=(32, 32)))


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_clip_rate_frames_take_every_second_source_frame(levels, mode):
    prep = Preprocess.for_spec(RAW, mode, resize=(32, 32))
    frames = list(clip_rate_frames(levels, ClipSampler(4, 15, 4), prep))
    # 41 source frames at 30 fps -> ceil(41 / 2) = 21 clip frames: sources 0, 2, ..., 40.
    assert [_index(f) for f in frames] == list(range(0, 41, 2))


@pytest.mark.parametrize(("frames", "stride", "starts"), [
    (4, 4, [0, 4, 8, 12, 16]),      # 21 clip frames: the tail (frame 20) dropped
    (4, 2, list(range(0, 18, 2))),  # overlapping windows, each frame preprocessed once
    (4, 7, [0, 7, 14]),             # gaps between windows
    (8, 5, [0, 5, 10]),
])
def test_windows_follow_the_sampler(levels, frames, stride, starts):
    sampler = ClipSampler(frames, 15, stride)
    prep = Preprocess.for_spec(RAW, "reference", resize=(32, 32))
    items = list(video_clips(levels, sampler, prep))
    assert [c.window for c in items] == sampler.windows(21)
    assert [c.window.start_frame for c in items] == starts
    for item in items:
        assert item.clip.shape == (3, frames, 16, 16)
        # each clip frame k shows source frame 2 k, i.e. grey 8 k
        got = [round(float(item.clip[:, t].mean()) * 255 / 8) for t in range(frames)]
        assert got == list(range(item.window.start_frame, item.window.start_frame + frames))


def test_short_video_gets_one_padded_window(tmp_path):
    video = VideoInput("tiny", make_levels(tmp_path / "t.mp4", [(8 * i,) * 3 for i in range(7)],
                                           size=(32, 32)))
    sampler = ClipSampler(8, 15, 8)
    (item,) = video_clips(video, sampler, Preprocess.for_spec(RAW, "reference", (32, 32)))
    # 7 source frames -> 4 clip frames (sources 0, 2, 4, 6) + 4 copies of the last
    assert item.window == sampler.windows(4)[0]
    assert item.window.padded_frames == 4
    got = [round(float(item.clip[:, t].mean()) * 255 / 16) for t in range(8)]
    assert got == [0, 1, 2, 3, 3, 3, 3, 3]


def test_batches_are_full_and_flag_each_videos_last_window(videos, sampler):
    prep = Preprocess.for_spec(InputSpec(16, 64, (0.4,) * 3, (0.2,) * 3), "fast")
    batches = list(pack_batches(videos, sampler, prep, 3))
    sizes = [len(b.video_ids) for b in batches]
    total = sum(WINDOWS.values())
    assert sizes == [3] * (total // 3) + ([total % 3] if total % 3 else [])
    rows = [(vid, int(i), bool(last)) for b in batches
            for vid, i, last in zip(b.video_ids, b.clip_indices, b.is_last, strict=True)]
    assert rows == [(v.video_id, i, i == WINDOWS[v.video_id] - 1) for v in videos
                    for i in range(WINDOWS[v.video_id])]
    assert all(b.clips.shape == (len(b.video_ids), 3, 16, 64, 64) for b in batches)
    assert all(b.clips.dtype == torch.float32 for b in batches)


def test_workers_split_by_video(videos, sampler):
    prep = Preprocess.for_spec(InputSpec(16, 64, (0.4,) * 3, (0.2,) * 3), "fast")
    loader = make_loader(videos, sampler, prep, batch_size=2, workers=2,
                         device=torch.device("cpu"))
    seen: dict[str, list[int]] = {}
    for batch in loader:
        for vid, i in zip(batch.video_ids, batch.clip_indices.tolist(), strict=True):
            seen.setdefault(vid, []).append(i)
    assert seen == {v.video_id: list(range(WINDOWS[v.video_id])) for v in videos}


@pytest.mark.parametrize(("batch_size", "workers"), [(3, 0), (5, 0), (2, 2), (7, 2)])
def test_packing_gives_the_features_of_batch_size_one(videos, sampler, tiny, batch_size,
                                                       workers):
    spec = tiny.input_spec
    one = MemoryWriter()
    extract_features(videos, tiny, spec, sampler, writer=one, batch_size=1, workers=0,
                     device="cpu")
    many = MemoryWriter()
    counting = CountingModel(tiny)
    result = extract_features(videos, counting, spec, sampler, writer=many,
                              batch_size=batch_size, workers=workers, device="cpu")
    assert counting.clips == result.clips == sum(WINDOWS.values())
    assert many.features.keys() == one.features.keys()
    for vid, feats in one.features.items():
        assert many.features[vid].shape == (WINDOWS[vid], 128)
        np.testing.assert_allclose(many.features[vid], feats, atol=1e-5, rtol=0)
        assert many.windows[vid] == one.windows[vid]


def test_bad_videos_are_reported_and_the_others_go_on(videos, sampler, tiny, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    good = videos[:2]
    todo = [good[0], VideoInput("empty", empty), VideoInput("junk", junk), good[1]]
    writer = MemoryWriter()
    result = extract_features(todo, tiny, tiny.input_spec, sampler, writer=writer,
                              batch_size=2, workers=0, device="cpu")
    assert result.written == [v.video_id for v in good]
    assert set(result.failed) == {"empty", "junk"}
    assert "empty file" in result.failed["empty"]
    assert set(writer.features) == {v.video_id for v in good}


def test_a_video_failing_midway_is_discarded_whole(videos, sampler, tiny, tmp_path):
    # An MP4 with its index first, cut at 2/3: two windows decode and are sent to the
    # model, then the decoder runs out of packets and the reader reports the cut.
    whole = tmp_path / "whole.mp4"
    with VideoWriter(whole, rate=30, width=128, height=96,
                     container_options={"movflags": "+faststart"}) as out:
        for frame in scene_frames(200):
            out.write(frame)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    prep = Preprocess.for_spec(tiny.input_spec, "reference")
    batches = list(pack_batches([VideoInput("cut", cut)], sampler, prep, 1))
    assert [b.video_ids for b in batches] == [("cut",), ("cut",), ()]  # sent, then failed
    assert "truncated" in batches[-1].failures[0].reason

    writer = MemoryWriter()
    counting = CountingModel(tiny)
    result = extract_features([VideoInput("cut", cut), videos[1]], counting, tiny.input_spec,
                              sampler, writer=writer, batch_size=1, workers=0, device="cpu")
    assert counting.clips == 2 + WINDOWS[videos[1].video_id]  # the cut one's were encoded
    assert list(result.failed) == ["cut"]  # ... and discarded
    assert set(writer.features) == {videos[1].video_id}
