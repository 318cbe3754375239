"""Sample plans: counts, jitter per epoch, fixed validation positions, TAC's foreground
only, and each process's share of a step."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tspipe.data.clips import GROUNDTRUTH_SCHEMA, ClipSampler
from tspipe.errors import ConfigError
from tspipe.pretrain.samples import (
    TRAIN,
    BatchPlan,
    SampleKey,
    select_segments,
    steps_per_epoch,
    train_plan,
    valid_plan,
)

SAMPLER = ClipSampler(16, 15, 16)  # 16/15 s clips
# (video, t_start, t_end, action_index, subset); background rows have action -1.
ROWS = [
    ("a", 0.0, 4.0, 0, "training"),
    ("a", 4.0, 5.0, -1, "training"),    # 1.0 s < one clip: dropped
    ("a", 5.0, 12.5, 1, "training"),
    ("b", 0.0, 2.0, -1, "training"),
    ("b", 2.0, 3.0, 1, "training"),     # 1.0 s action: dropped
    ("b", 3.0, 10.0, 2, "training"),
    ("c", 0.0, 6.0, 0, "training"),     # video c was not decoded
    ("d", 0.0, 5.0, 1, "validation"),
    ("d", 5.0, 9.0, -1, "validation"),
]
VIDEOS = {v: Path(f"/videos/{v}.mp4") for v in "abd"}


def table(rows: list[tuple] = ROWS) -> pa.Table:
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    return pa.table({
        "video_id": cols[0], "t_start": cols[1], "t_end": cols[2],
        "action_label": [None if a < 0 else f"c{a}" for a in cols[3]],
        "action_index": pa.array(cols[3], pa.int32()),
        "region_label": ["No action" if a < 0 else "Action" for a in cols[3]],
        "region_index": pa.array([1 if a < 0 else 0 for a in cols[3]], pa.int8()),
        "video_duration": [20.0] * n, "fps": [30.0] * n, "video_frames": [600] * n,
        "filename": [f"{v}.mp4" for v in cols[0]], "subset": cols[4],
    }, schema=GROUNDTRUTH_SCHEMA)


def test_selection_counts_what_it_leaves_out():
    sel = select_segments(table(), SAMPLER, VIDEOS, subsets=["training"], mode="tsp")
    assert sel.counts == {"rows": 7, "no_video": 1, "background_unused": 0,
                          "dropped_action": 1, "dropped_background": 1, "segments": 4,
                          "videos": 2}
    seg = sel.segments
    assert seg.video_ids == ("a", "b")
    assert [seg.video_id(i) for i in range(4)] == ["a", "a", "b", "b"]
    assert seg.action.tolist() == [0, 1, -1, 2] and seg.region.tolist() == [0, 0, 1, 0]
    # first/last start frames: [0, 4) s at 15 fps is frames 0..59, a clip starts at <= 44
    assert (seg.first[0], seg.last[0]) == (0, 44)


def test_tac_keeps_foreground_only():
    sel = select_segments(table(), SAMPLER, VIDEOS, subsets=["training"], mode="tac")
    assert sel.counts["background_unused"] == 2
    assert sel.counts["dropped_background"] == 0  # removed before the length rule
    assert (sel.segments.action >= 0).all() and (sel.segments.region == 0).all()
    assert len(sel.segments) == 3


def test_train_plan_counts_and_clips_inside_their_segment():
    seg = select_segments(table(), SAMPLER, VIDEOS, subsets=["training"], mode="tsp").segments
    plan = train_plan(seg, 5, seed=0, epoch=0)
    assert len(plan) == 4 * 5
    assert Counter(k.segment for k in plan) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert all(k.split == TRAIN and k.seed >= 0 for k in plan)
    assert len({k.seed for k in plan}) == len(plan)  # one augmentation stream per clip
    for k in plan:
        window = SAMPLER.window(k.start_frame)
        assert seg.first[k.segment] <= k.start_frame <= seg.last[k.segment]
        assert seg.t_start[k.segment] - 1e-6 <= window.t_start
        assert window.t_end <= seg.t_end[k.segment] + 1e-6


def test_jitter_and_order_differ_by_epoch_and_repeat_for_the_same_epoch():
    seg = select_segments(table(), SAMPLER, VIDEOS, subsets=["training"], mode="tsp").segments
    e0, e0_again, e1 = (train_plan(seg, 5, 0, 0), train_plan(seg, 5, 0, 0),
                        train_plan(seg, 5, 0, 1))
    assert e0 == e0_again
    starts = lambda plan: sorted((k.segment, k.start_frame) for k in plan)  # noqa: E731
    assert starts(e0) != starts(e1)  # other jitter
    assert [k.segment for k in e0] != [k.segment for k in e1]  # other order
    assert train_plan(seg, 5, seed=1, epoch=0) != e0
    # jitter covers the segment: the long segment's starts are not all equal
    assert len({k.start_frame for k in e0 if k.segment == 1}) > 1


def test_validation_positions_are_fixed():
    seg = select_segments(table(), SAMPLER, VIDEOS, subsets=["validation"], mode="tsp").segments
    plan = valid_plan(seg, SAMPLER, 5)
    assert plan == valid_plan(seg, SAMPLER, 5)
    assert [k.seed for k in plan] == [-1] * 10
    # [0, 5) s: clips start at linspace(0, 1, 5) x (5 - 16/15) s -> frames 0, 15, 30, 45, 59
    assert [k.start_frame for k in plan[:5]] == [0, 15, 30, 45, 59]
    assert [k.start_frame for k in plan[:5]] == [
        w.start_frame for w in SAMPLER.valid_clip_starts(0.0, 5.0, 5)]


def keys(n: int) -> list[SampleKey]:
    return [SampleKey(TRAIN, i, 0, i) for i in range(n)]


@pytest.mark.parametrize(("world", "accum"), [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_ranks_share_each_step_exactly(world, accum):
    plan = keys(21)  # 3 steps of 8, the last padded by wrapping around
    per_rank = []
    for rank in range(world):
        batches = BatchPlan(8, world_size=world, rank=rank, accum=accum)
        batches.set_train(plan)
        per_rank.append(list(batches))
    assert steps_per_epoch(21, 8) == 3
    for step in range(3):
        got = []
        for rank in range(world):
            micro = per_rank[rank][step * accum:(step + 1) * accum]
            assert all(len(m) == 8 // (world * accum) for m in micro)
            got += [k for m in micro for k in m]
        want = [plan[i % 21] for i in range(step * 8, step * 8 + 8)]
        assert sorted(got) == sorted(want)
        assert BatchPlan(8, world_size=world, rank=0, accum=accum).padded(plan)[
            step * 8:step * 8 + 8] == want


def test_resume_position_skips_whole_steps():
    batches = BatchPlan(4)
    batches.set_train(keys(12), start_step=2)
    assert list(batches) == [keys(12)[8:12]]
    assert batches.step_keys(2) == keys(12)[8:12]


def test_batch_must_split_evenly():
    with pytest.raises(ConfigError, match="multiple of world_size"):
        BatchPlan(6, world_size=4)


def test_validation_split_by_rank_covers_every_clip_once():
    plan = keys(11)
    seen = []
    for rank in range(3):
        batches = BatchPlan(6, world_size=3, rank=rank)
        batches.set_valid(plan, batch=2)
        seen += [k for b in batches for k in b]
    assert sorted(seen) == plan
    assert np.all(np.diff(sorted(k.segment for k in seen)) == 1)


def test_jitter_narrows_the_starts_to_the_centre_of_each_segment():
    seg = select_segments(table(), SAMPLER, VIDEOS, subsets=["training"], mode="tsp").segments
    fixed = train_plan(seg, 5, seed=0, epoch=0, jitter=0.0)
    # jitter 0: every clip of a segment starts at its middle start, every epoch
    for k in fixed:
        first, last = int(seg.first[k.segment]), int(seg.last[k.segment])
        assert k.start_frame in {(first + last) // 2, (first + last + 1) // 2}
    assert sorted((k.segment, k.start_frame) for k in train_plan(seg, 5, 0, 1, 0.0)) == \
        sorted((k.segment, k.start_frame) for k in fixed)
    # half: inside the centred half of the long segment's range, and not one start only
    long = max(range(len(seg)), key=lambda s: int(seg.last[s] - seg.first[s]))
    first, last = int(seg.first[long]), int(seg.last[long])
    half = [k.start_frame for k in train_plan(seg, 40, 0, 0, 0.5) if k.segment == long]
    assert all(first + (last - first) // 4 <= f <= last - (last - first) // 4 for f in half)
    assert len(set(half)) > 1
    # 1: the TSP plan, draw for draw
    assert train_plan(seg, 5, 0, 0, 1.0) == train_plan(seg, 5, 0, 0)
    with pytest.raises(ValueError, match="jitter"):
        train_plan(seg, 5, 0, 0, 1.5)


def test_the_shuffled_region_control_permutes_the_training_labels_only(tmp_path):
    from tspipe.config_sections import PretrainConfig
    from tspipe.data.clips import write_table
    from tspipe.pretrain.samples import select_splits

    rows = [(v, 2.0 * k, 2.0 * k + 2, (k % 3) if k % 2 else -1, subset)
            for v, subset in (("a", "training"), ("b", "training"), ("d", "validation"))
            for k in range(10)]
    path = write_table(table(rows), tmp_path / "gt.parquet")
    given = select_splits(PretrainConfig(), SAMPLER, path, VIDEOS)
    broken = select_splits(PretrainConfig(region_labels="shuffled"), SAMPLER, path, VIDEOS)
    again = select_splits(PretrainConfig(region_labels="shuffled"), SAMPLER, path, VIDEOS)
    # The same segments and actions; region labels permuted (same counts), seeded.
    assert (broken.train.action == given.train.action).all()
    assert sorted(broken.train.region) == sorted(given.train.region)
    assert (broken.train.region != given.train.region).any()
    assert (broken.train.region == again.train.region).all()
    # Validation keeps the true labels: the control is scored honestly.
    assert (broken.valid.region == given.valid.region).all()
