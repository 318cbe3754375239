"""Reading one clip: frames past the end, kept video readers, the training transform, GVF
per process, and batches that do not depend on the number of DataLoader workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from pretrain_helpers import CLIP, FEATURE_DIM, SPEC, SynthSet
from torch.utils.data import DataLoader

from tspipe.data.clips import ClipSampler, read_table
from tspipe.data.video import decode, read_frames
from tspipe.extract.preprocess import Preprocess
from tspipe.pretrain.dataset import (
    ClipDataset,
    ReaderCache,
    read_clip_frames,
    train_transform,
    worker_init,
)
from tspipe.pretrain.samples import (
    TRAIN,
    VALID,
    BatchPlan,
    SampleKey,
    select_segments,
    train_plan,
    valid_plan,
)

SAMPLER = ClipSampler.from_config(CLIP)
PREP = Preprocess.for_spec(SPEC, "reference", CLIP.resize)


def dataset(data: SynthSet, *, gvf: bool = True, **kwargs: int) -> ClipDataset:
    table = read_table(data.groundtruth)
    splits = tuple(select_segments(table, SAMPLER, data.videos, subsets=[s], mode="tsp").segments
                   for s in ("training", "validation"))
    return ClipDataset(splits, SAMPLER, PREP, gvf_path=data.gvf if gvf else None, **kwargs)


def test_a_clip_past_the_end_repeats_the_last_frame(synth_set):
    path = synth_set.videos["synth_000"]
    total = sum(1 for _ in decode(path))
    last = read_frames(path, [total - 1])[0]
    got = read_clip_frames(path, np.arange(total - 3, total + 5), video_id="synth_000")
    assert got.shape == (8, 48, 64, 3)
    assert np.array_equal(got[2], last)
    assert all(np.array_equal(f, last) for f in got[3:])  # 5 copies of the last frame
    assert not np.array_equal(got[0], last)


def _clip_reads(data: SynthSet, n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` clips' (video id, source indices) over every video in a shuffled order, with
    one clip past the end of a video and the same clip twice in a row."""
    rng = np.random.default_rng(0)
    videos = sorted(data.videos)
    reads = []
    for _ in range(n):
        vid = videos[int(rng.integers(0, len(videos)))]
        start = int(rng.integers(0, 140))
        reads.append((vid, np.arange(start, start + 16, 2)))
    total = sum(1 for _ in decode(data.videos[videos[0]]))
    reads += [(videos[0], np.arange(total - 5, total + 11, 2))] * 2
    return reads


def test_kept_readers_read_the_frames_of_fresh_ones(synth_set):
    readers = ReaderCache(size=2)
    for vid, idx in _clip_reads(synth_set, 30):
        path = synth_set.videos[vid]
        fresh = read_clip_frames(path, idx, video_id=vid)
        kept = read_clip_frames(path, idx, video_id=vid, readers=readers)
        assert np.array_equal(kept, fresh), (vid, idx)
        assert len(readers) <= 2
    readers.close()
    assert len(readers) == 0


def test_reader_cache_closes_the_least_recently_used_and_all_on_close(synth_set):
    paths = [synth_set.videos[v] for v in sorted(synth_set.videos)[:3]]
    readers = ReaderCache(size=2)
    closed: list[Path] = []

    def opened(path: Path) -> object:
        reader = readers.get(path)
        close = reader.close
        reader.close = lambda: (closed.append(reader.path), close())  # type: ignore[method-assign]
        return reader

    a, b = opened(paths[0]), opened(paths[1])
    assert readers.get(paths[0]) is a  # kept, and now the most recently used
    opened(paths[2])
    assert closed == [paths[1]] and len(readers) == 2
    assert readers.get(paths[0]) is a
    readers.close()
    assert sorted(closed) == sorted(paths) and len(readers) == 0
    assert readers.get(paths[1]) is not b  # usable again: opens the file anew
    readers.close()
    with pytest.raises(ValueError):
        ReaderCache(size=0)


def test_a_reader_whose_read_raised_is_dropped(synth_set):
    path = synth_set.videos[sorted(synth_set.videos)[0]]
    readers = ReaderCache(size=2)
    reader = readers.get(path)

    def fail(indices: object, size: object) -> dict:
        raise RuntimeError("decoder broke")

    reader.read = fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        readers.read(path, [0, 2])
    assert len(readers) == 0
    assert readers.read(path, [0, 2]).keys() == {0, 2}  # a fresh reader
    readers.close()


def test_dataset_keeps_readers_per_process_and_closes_them(synth_set):
    ds, fresh = dataset(synth_set, max_readers=2), dataset(synth_set, max_readers=0)
    plan = train_plan(ds.splits[TRAIN], 3, seed=1, epoch=0)
    keys = plan[:10] + valid_plan(ds.splits[VALID], SAMPLER, 2)[:4]
    for key in keys:
        assert torch.equal(ds[key].clip, fresh[key].clip)
        assert 1 <= len(ds._readers) <= 2
    assert fresh._readers is None
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy._readers) == 0 and copy._readers.size == 2  # never pickled
    assert torch.equal(copy[keys[0]].clip, ds[keys[0]].clip)
    ds.close()
    assert len(ds._readers) == 0 and ds._h5 is None
    copy.close()
    fresh.close()


def test_sample_fields_and_shapes(synth_set):
    ds = dataset(synth_set)
    seg = ds.splits[TRAIN]
    key = train_plan(seg, 1, seed=0, epoch=0)[0]
    sample = ds[key]
    assert sample.clip.shape == (3, CLIP.frames, SPEC.size, SPEC.size)
    assert sample.clip.dtype == torch.float32
    assert sample.action.item() == seg.action[key.segment]
    assert sample.region.item() == seg.region[key.segment]
    assert sample.gvf.shape == (FEATURE_DIM,)
    assert dataset(synth_set, gvf=False)[key].gvf.shape == (0,)


def test_augmentation_is_a_function_of_the_clip_seed(synth_set):
    ds = dataset(synth_set)
    key = train_plan(ds.splits[TRAIN], 1, seed=0, epoch=0)[0]
    a, b = ds[key].clip, ds[key].clip
    assert torch.equal(a, b)
    others = [ds[key._replace(seed=s)].clip for s in range(1, 6)]
    assert any(not torch.equal(a, o) for o in others)  # other crops / flips


def test_train_transform_is_a_crop_and_flip_of_the_resized_clip():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 30, 40, 3), dtype=np.uint8)
    prep = Preprocess.for_spec(SPEC, "reference", (19, 25))
    seen = set()
    for seed in range(40):
        clip = train_transform(frames, prep, np.random.default_rng(seed))
        assert clip.shape == (3, 4, 16, 16)
        r = np.random.default_rng(seed)
        i, j, flip = int(r.integers(0, 4)), int(r.integers(0, 10)), r.random() < 0.5
        seen.add((i, j, flip))
        # TSP's steps written plainly: float, resize, crop (i, j), flip, normalize
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.interpolate(x, size=(19, 25), mode="bilinear",
                                            align_corners=False)
        x = x[..., i:i + 16, j:j + 16]
        x = x.flip(-1) if flip else x
        want = SPEC.normalize(x.permute(1, 0, 2, 3).unsqueeze(0))[0]
        assert torch.allclose(clip, want, atol=1e-6)
    assert len(seen) > 20 and {f for *_, f in seen} == {True, False}


def test_validation_clip_is_the_extraction_transform(synth_set):
    ds = dataset(synth_set)
    key = valid_plan(ds.splits[VALID], SAMPLER, 5)[3]
    seg = ds.splits[VALID]
    idx = SAMPLER.source_indices(SAMPLER.window(key.start_frame), 15)
    frames = read_frames(seg.paths[int(seg.video[key.segment])], idx)
    assert torch.equal(ds[key].clip, PREP(frames))


def test_gvf_file_is_opened_once_and_never_pickled(synth_set):
    ds = dataset(synth_set)
    key = train_plan(ds.splits[TRAIN], 1, seed=0, epoch=0)[0]
    ds[key]
    handle = ds._h5
    assert handle is not None
    ds[key._replace(seed=7)]
    assert ds._h5 is handle  # the same open file
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._h5 is None and copy._gvf == {}
    assert torch.equal(copy[key].gvf, ds[key].gvf)
    ds.close()


@pytest.mark.slow
def test_batches_do_not_depend_on_the_number_of_workers(synth_set):
    ds = dataset(synth_set)
    plan = train_plan(ds.splits[TRAIN], 1, seed=3, epoch=2)[:12]

    def batches(workers: int) -> list:
        sampler = BatchPlan(4)
        sampler.set_train(plan)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                            worker_init_fn=worker_init if workers else None,
                            multiprocessing_context="spawn" if workers else None)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    assert isinstance(plan[0], SampleKey)


def test_without_fps_and_frames_in_the_table_the_header_decides(synth_set):
    table = read_table(synth_set.groundtruth)
    bare = table.set_column(table.schema.get_field_index("fps"), "fps",
                            pa.nulls(table.num_rows, pa.float64()))
    bare = bare.set_column(bare.schema.get_field_index("video_frames"), "video_frames",
                           pa.nulls(table.num_rows, pa.int64()))
    seg = select_segments(bare, SAMPLER, synth_set.videos, subsets=["training"],
                          mode="tsp").segments
    assert np.isnan(seg.fps).all() and (seg.frames == -1).all()
    with_facts = dataset(synth_set)
    without = ClipDataset((seg,), SAMPLER, PREP, gvf_path=synth_set.gvf)
    for key in train_plan(seg, 1, seed=0, epoch=0)[:3]:
        assert torch.equal(without[key].clip, with_facts[key].clip)
