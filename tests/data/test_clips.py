"""The clip sampler against hand-computed cases, its properties, and the ground-truth table
built from small hand-made annotations."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tspipe.config import ClipConfig
from tspipe.data.annotations import Annotations, Segment, Video
from tspipe.data.annotations.tsp_csv import GROUNDTRUTH_COLUMNS
from tspipe.data.clips import (
    GROUNDTRUTH_SCHEMA,
    WINDOWS_SCHEMA,
    ClipSampler,
    Window,
    as_fraction,
    background_gaps,
    build_groundtruth,
    read_table,
    to_reference_columns,
    trainable_segments,
    windows_table,
    write_table,
)
from tspipe.errors import AnnotationError, StageError

TSP = ClipSampler(16, 15, 16)
NTSC = Fraction(30000, 1001)

# -- sliding windows: (frames, stride, n frames at the clip rate) -> starts, ends, padding --
WINDOWS = [
    # TSP's default: 6 windows, the 4-frame tail dropped
    (16, 16, 100, [0, 16, 32, 48, 64, 80], [16, 32, 48, 64, 80, 96], [0] * 6),
    (16, 16, 96, [0, 16, 32, 48, 64, 80], [16, 32, 48, 64, 80, 96], [0] * 6),
    (16, 16, 95, [0, 16, 32, 48, 64], [16, 32, 48, 64, 80], [0] * 5),
    (16, 16, 32, [0, 16], [16, 32], [0, 0]),
    (16, 16, 31, [0], [16], [0]),
    (16, 16, 16, [0], [16], [0]),
    # shorter than a clip: one window, the last frame repeated
    (16, 16, 15, [0], [15], [1]),
    (16, 16, 1, [0], [1], [15]),
    (16, 16, 0, [], [], []),
    # dense (THUMOS released features) and half-overlapping
    (16, 1, 20, [0, 1, 2, 3, 4], [16, 17, 18, 19, 20], [0] * 5),
    (16, 8, 40, [0, 8, 16, 24], [16, 24, 32, 40], [0] * 4),
    (8, 3, 20, [0, 3, 6, 9, 12], [8, 11, 14, 17, 20], [0] * 5),
    (1, 1, 3, [0, 1, 2], [1, 2, 3], [0, 0, 0]),
]


@pytest.mark.parametrize(("frames", "stride", "n", "starts", "ends", "padded"), WINDOWS)
def test_windows_table_of_cases(frames, stride, n, starts, ends, padded):
    sampler = ClipSampler(frames, 15, stride)
    windows = sampler.windows(n)
    assert [w.index for w in windows] == list(range(len(starts)))
    assert [w.start_frame for w in windows] == starts
    assert [w.end_frame for w in windows] == ends
    assert [w.padded_frames for w in windows] == padded
    assert sampler.num_windows(n) == len(starts)


# (fps, start frame, end frame) -> t_start, t_end as the nearest floats of the exact times
TIMES = [
    (15, 0, 16, 0.0, 1.0666666666666667),     # 16/15 s
    (15, 16, 32, 1.0666666666666667, 2.1333333333333333),
    (15, 1500, 1516, 100.0, 101.06666666666666),
    (NTSC, 16, 32, 0.5338666666666667, 1.0677333333333334),  # 16 * 1001 / 30000
    ("30000/1001", 30000, 30016, 1001.0, 1001.5338666666667),
]


@pytest.mark.parametrize(("fps", "start", "end", "t_start", "t_end"), TIMES)
def test_window_times_are_exact(fps, start, end, t_start, t_end):
    window = ClipSampler(16, fps, 16).window(start)
    assert window == Window(0, start, end, t_start, t_end, 0)


# clip frames of one window -> source frames: floor(k * source_fps / clip_fps)
SOURCE = [
    # 30 -> 15 fps: TSP's index step 2
    (15, 30, 0, list(range(0, 32, 2))),
    (15, 30, 16, list(range(32, 64, 2))),
    (15, 15, 0, list(range(16))),
    # 25 -> 15: floor(5k/3)
    (15, 25, 0, [0, 1, 3, 5, 6, 8, 10, 11, 13, 15, 16, 18, 20, 21, 23, 25]),
    # 29.97 -> 15: floor(2000k/1001) = 2k - 1 for k in 1..500 ...
    (15, NTSC, 0, [0, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]),
    # ... and 2k - 2 from k = 501: the one source frame every 1001 that is skipped
    (15, NTSC, 496, [991, 993, 995, 997, 999, 1000, 1002, 1004, 1006, 1008, 1010, 1012,
                     1014, 1016, 1018, 1020]),
    (15, 29.97002997002997, 0, [0, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]),
    # a slower source repeats frames: floor(2k/3)
    (15, 10, 0, [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10]),
]


@pytest.mark.parametrize(("clip_fps", "source_fps", "start", "expected"), SOURCE)
def test_source_indices_table_of_cases(clip_fps, source_fps, start, expected):
    sampler = ClipSampler(16, clip_fps, 16)
    indices = sampler.source_indices(sampler.window(start), source_fps)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


def test_source_indices_of_a_padded_window_repeat_the_last_frame():
    (window,) = TSP.windows(15)
    assert window.padded_frames == 1
    assert TSP.source_indices(window, 30).tolist() == [*range(0, 30, 2), 28]
    # A container that holds fewer frames than it said: indices stop at its last frame.
    clipped = TSP.source_indices(TSP.window(0), 30, num_source_frames=25)
    assert clipped.tolist() == [*range(0, 26, 2), 24, 24, 24]


# how many clip-rate frames a video has
FRAME_COUNTS = [
    ("source", (4169, 30), 2085),             # len(range(4169)[::2]): the reference's count
    ("source", (4168, 30), 2084),
    ("source", (4169, 25), 2502),             # ceil(4169 * 15 / 25) = ceil(2501.4)
    ("source", (100, NTSC), 51),              # ceil(100 * 15 * 1001 / 30000) = ceil(50.05)
    ("source", (0, 30), 0),
    ("duration", 138.96666666666667, 2085),   # 4169 / 30 s: 2084.5 frames
    ("duration", 10.0, 150),
    ("duration", 1.0666666666666667, 16),     # 16/15 s, not 17 by float noise
    ("duration", 10.000000000000002, 150),
    ("duration", 0.05, 1),
    ("duration", 0.0, 0),
]


@pytest.mark.parametrize(("kind", "given", "expected"), FRAME_COUNTS)
def test_frame_counts_table_of_cases(kind, given, expected):
    if kind == "source":
        assert TSP.frames_from_source(*given) == expected
    else:
        assert TSP.frames_in(given) == expected


# training positions: segment (s) -> fits, first and last clip start (clip frames)
START_RANGES = [
    ((0.0, 2.0), True, 0, 14),                 # frames 14..29 at 29/15 s < 2 s
    ((0.2, 1.3), True, 3, 4),                  # 3 = 0.2 * 15; ceil(19.5) - 16 = 4
    ((1.0666666666666667, 2.1333333333333333), True, 16, 16),  # exactly one clip
    ((0.0, 1.0666666666666667), True, 0, 0),
    ((10.01, 11.1), True, 151, 151),           # 1.09 s: fits, one grid position
    ((0.5, 1.5), False, None, None),           # 1.0 s < 16/15 s
    ((0.0, 1.06), False, None, None),
]


@pytest.mark.parametrize(("segment", "fits", "first", "last"), START_RANGES)
def test_start_range_table_of_cases(segment, fits, first, last):
    assert TSP.fits(*segment) is fits
    assert bool(TSP.fits_mask(np.array([segment[0]]), np.array([segment[1]]))[0]) is fits
    if fits:
        assert TSP.start_range(*segment) == (first, last)
    else:
        with pytest.raises(ValueError, match="shorter than one clip"):
            TSP.start_range(*segment)


# validation positions: linspace(0, 1, n) of the start range, first grid frame at or after
VALID = [
    ((0.0, 2.0), 5, [0, 4, 7, 11, 14]),   # 0, 3.5, 7, 10.5, 14 rounded up
    ((0.0, 2.0), 2, [0, 14]),
    ((0.0, 2.0), 1, [0]),
    ((0.2, 1.3), 5, [3, 4, 4, 4, 4]),      # 0, .25, .5, .75, 1 of one step
    ((1.0666666666666667, 2.1333333333333333), 5, [16] * 5),
]


@pytest.mark.parametrize(("segment", "n", "starts"), VALID)
def test_valid_clip_starts_table_of_cases(segment, n, starts):
    windows = TSP.valid_clip_starts(*segment, n=n)
    assert [w.start_frame for w in windows] == starts
    assert [w.index for w in windows] == list(range(n))
    assert all(w.end_frame - w.start_frame == 16 for w in windows)


def test_train_clip_start_is_uniform_over_the_grid_positions():
    rng = np.random.default_rng(0)
    starts = [TSP.train_clip_start(0.2, 1.3, rng).start_frame for _ in range(200)]
    assert set(starts) == {3, 4}
    starts = [TSP.train_clip_start(0.0, 2.0, rng).start_frame for _ in range(3000)]
    counts = np.bincount(starts, minlength=15)
    assert len(counts) == 15 and counts.min() > 120  # 15 positions, ~200 each
    window = TSP.train_clip_start(0.0, 2.0, np.random.default_rng(1))
    assert window.t_start == float(Fraction(window.start_frame, 15))
    with pytest.raises(ValueError, match="shorter than one clip"):
        TSP.train_clip_start(0.0, 1.0, rng)


def test_from_config_and_fps_parsing():
    sampler = ClipSampler.from_config(ClipConfig())
    assert sampler == ClipSampler(16, Fraction(15), 16)
    assert sampler.clip_duration == Fraction(16, 15)
    assert as_fraction(29.97002997002997) == NTSC
    assert as_fraction(29.97) == Fraction(2997, 100)
    assert as_fraction(" 30000/1001 ") == NTSC
    for bad in (0, -15, float("nan"), True):
        with pytest.raises((ValueError, TypeError)):
            as_fraction(bad)
    for frames, stride in ((0, 16), (16, 0), (16.0, 16), (16, True)):
        with pytest.raises(ValueError, match="must be an int"):
            ClipSampler(frames, 15, stride)
    assert ClipSampler(np.int64(16), 15, np.int64(8)).stride == 8


# -- properties ---------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(frames=st.integers(1, 40), stride=st.integers(1, 40), n=st.integers(0, 3000))
def test_windows_properties(frames, stride, n):
    sampler = ClipSampler(frames, 15, stride)
    windows = sampler.windows(n)
    expected = 0 if n == 0 else 1 if n < frames else (n - frames) // stride + 1
    assert len(windows) == expected == sampler.num_windows(n)
    starts = [w.start_frame for w in windows]
    assert starts == [i * stride for i in range(len(windows))]
    for w in windows:
        assert 0 <= w.start_frame < w.end_frame <= n
        assert w.end_frame - w.start_frame + w.padded_frames == frames
        assert (w.padded_frames > 0) == (n < frames)
    if n >= frames:  # the next window would not fit: only a tail shorter than a step is left
        assert starts[-1] + stride + frames > n


@settings(max_examples=200, deadline=None)
@given(num_source=st.integers(1, 5000),
       source_fps=st.sampled_from([Fraction(30), Fraction(25), NTSC, Fraction(24000, 1001),
                                   Fraction(10), Fraction(60), Fraction(15)]),
       stride=st.integers(1, 32))
def test_source_indices_stay_inside_the_source(num_source, source_fps, stride):
    n = TSP.frames_from_source(num_source, source_fps)
    assert n >= 1
    windows = ClipSampler(16, 15, stride).windows(n)
    for w in (windows[0], windows[-1]):
        idx = TSP.source_indices(w, source_fps)
        assert len(idx) == 16
        assert np.all(np.diff(idx) >= 0)
        assert idx[0] >= 0 and idx[-1] < num_source
    # the first frame past the video would have no source frame
    assert (n * source_fps / TSP.fps) >= num_source


@settings(max_examples=300, deadline=None)
@given(t_start=st.floats(0, 500), length=st.floats(16 / 15, 60), n=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_training_clips_lie_inside_their_segment(t_start, length, n, seed):
    t_end = t_start + length
    assert TSP.fits(t_start, t_end)
    first, last = TSP.start_range(t_start, t_end)
    assert first <= last
    tol = 2e-6
    for w in [TSP.train_clip_start(t_start, t_end, np.random.default_rng(seed)),
              *TSP.valid_clip_starts(t_start, t_end, n=n)]:
        assert first <= w.start_frame <= last
        assert w.start_frame / 15 >= t_start - tol            # first frame's time
        assert (w.end_frame - 1) / 15 < t_end + tol          # last frame's time
        assert w.end_frame - w.start_frame == 16 and w.padded_frames == 0
    starts = [w.start_frame for w in TSP.valid_clip_starts(t_start, t_end, n=n)]
    assert starts == sorted(starts) and starts[0] == first
    assert starts[-1] == (last if n > 1 else first)


# -- the extraction windows table -------------------------------------------------------
def test_windows_table_rows_are_the_samplers_windows():
    videos = [Video("a", num_frames=4169, fps=30.0, duration=138.96666666666667),
              Video("short", num_frames=20, fps=30.0),   # 10 frames at 15 fps: padded
              Video("by_duration", duration=3.2),         # 48 frames: 3 windows
              Video("empty", duration=0.0)]
    table = windows_table(videos, TSP)
    assert table.schema.equals(WINDOWS_SCHEMA)
    assert table.schema.metadata[b"tspipe.clip.fps"] == b"15"
    rows = table.to_pylist()
    expected = [(v, w) for v, n in (("a", 2085), ("short", 10), ("by_duration", 48))
                for w in TSP.windows(n)]
    assert len(rows) == len(expected) == 130 + 1 + 3
    for row, (video_id, w) in zip(rows, expected, strict=True):
        assert row == {"video_id": video_id, "clip_index": w.index,
                       "start_frame": w.start_frame, "end_frame": w.end_frame,
                       "t_start": w.t_start, "t_end": w.t_end,
                       "padded_frames": w.padded_frames}
    assert rows[130]["padded_frames"] == 6
    assert windows_table([], TSP).num_rows == 0
    with pytest.raises(StageError, match=r"'unknown'.*probe it first"):
        windows_table([Video("unknown")], TSP)


def test_windows_table_times_equal_exact_fractions_for_ntsc():
    sampler = ClipSampler(16, NTSC, 1)
    table = windows_table([Video("v", duration=100.0)], sampler)
    starts = table["start_frame"].to_numpy()
    assert table.num_rows == sampler.frames_in(100.0) - 15 == 2983
    assert table["t_start"].to_pylist() == [float(k / NTSC) for k in starts.tolist()]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from([30.0, 25.0, 29.97002997002997])),
                max_size=6),
       st.integers(1, 20), st.integers(1, 20))
def test_windows_table_matches_windows_for_any_videos(videos, frames, stride):
    sampler = ClipSampler(frames, 15, stride)
    table = windows_table([Video(f"v{i}", num_frames=n, fps=fps)
                           for i, (n, fps) in enumerate(videos)], sampler)
    expected = [(f"v{i}", *w) for i, (n, fps) in enumerate(videos)
                for w in sampler.windows(sampler.frames_from_source(n, fps))]
    assert list(zip(*(table[c].to_pylist() for c in WINDOWS_SCHEMA.names),
                    strict=True)) == expected


# -- the ground-truth table ------------------------------------------------------------
def _ann(*videos: Video, classes=("A", "B")) -> Annotations:
    return Annotations(videos={v.video_id: v for v in videos}, classes=list(classes),
                       source="test.json")


def _video(video_id: str, duration: float | None, *segments: tuple[float, float, str],
           **kw) -> Video:
    return Video(video_id, duration=duration, segments=[Segment(*s) for s in segments], **kw)


def _rows(table: pa.Table, region: int) -> list[tuple]:
    t = table.filter(pa.compute.equal(table["region_index"], region))
    return list(zip(t["video_id"].to_pylist(), t["t_start"].to_pylist(),
                    t["t_end"].to_pylist(), strict=True))


# segments of one 60 s video -> merged background gaps at min_background 0 and 9.5 s
GAP_CASES = [
    # overlapping (10-20, 15-25) and touching (25-30) segments merge; 40-41 is a segment;
    # 50-70 is clamped to the video's end, so no gap after it
    ([(10, 20), (15, 25), (25, 30), (40, 41), (50, 70)],
     [(0, 10), (30, 40), (41, 50)], [(0, 10), (30, 40)]),
    # nested segment: no gap inside the longer one; the gap after the last one counts
    ([(10, 40), (15, 20), (45, 50)], [(0, 10), (40, 45), (50, 60)], [(0, 10), (50, 60)]),
    # from 0 to the end: no background
    ([(0, 60)], [], []),
    ([(0, 30), (30, 60)], [], []),
    # unsorted input
    ([(45, 50), (0, 5)], [(5, 45), (50, 60)], [(5, 45), (50, 60)]),
]


@pytest.mark.parametrize(("segments", "gaps_all", "gaps_long"), GAP_CASES)
def test_merged_background_gaps_table_of_cases(segments, gaps_all, gaps_long):
    video = _video("v", 60.0, *[(float(s), float(e), "A") for s, e in segments])
    for min_background, expected in ((0.0, gaps_all), (9.5, gaps_long)):
        table = build_groundtruth(_ann(video), min_background=min_background)
        assert _rows(table, 1) == [("v", float(s), float(e)) for s, e in expected]
    # min_background is inclusive: a gap exactly that long is kept
    table = build_groundtruth(_ann(video), min_background=10.0)
    assert [(s, e) for _, s, e in _rows(table, 1)] == [
        (float(s), float(e)) for s, e in gaps_all if e - s >= 10]


def test_consecutive_gaps_reproduce_the_reference_rule():
    # The reference's rule: sort by start, gap from the previous row's end: the segment
    # nested in 10-40 opens a false gap 20-45 over the end of 10-40.
    video = _video("v", 60.0, (10.0, 40.0, "A"), (15.0, 20.0, "A"), (45.0, 50.0, "B"))
    table = build_groundtruth(_ann(video), min_background=0.0, gaps="consecutive")
    assert _rows(table, 1) == [("v", 0.0, 10.0), ("v", 20.0, 45.0), ("v", 50.0, 60.0)]
    # Segments starting together keep the annotations' order: the last one listed decides.
    first_longer = _video("v", 60.0, (10.0, 40.0, "A"), (10.0, 20.0, "A"))
    first_shorter = _video("v", 60.0, (10.0, 20.0, "A"), (10.0, 40.0, "A"))
    assert _rows(build_groundtruth(_ann(first_longer), min_background=0.0,
                                   gaps="consecutive"), 1)[-1] == ("v", 20.0, 60.0)
    assert _rows(build_groundtruth(_ann(first_shorter), min_background=0.0,
                                   gaps="consecutive"), 1)[-1] == ("v", 40.0, 60.0)


def test_groundtruth_columns_and_order():
    ann = _ann(
        _video("v1", 30.0, (20.0, 25.0, "B"), (2.0, 8.0, "A"), fps=30.0, num_frames=900,
               filename="v1.mp4", subset="training"),
        _video("v0", 12.0, (-1.0, 4.0, "A"), subset="training"),
        _video("unannotated", 50.0, subset="training"),
    )
    table = build_groundtruth(ann, min_background=1.0)
    assert table.schema.equals(GROUNDTRUTH_SCHEMA)
    assert table.schema.metadata == {b"tspipe.background.gaps": b"merged",
                                     b"tspipe.background.min_s": b"1.0"}
    rows = [(r["video_id"], r["t_start"], r["t_end"], r["action_label"], r["action_index"],
             r["region_label"], r["region_index"]) for r in table.to_pylist()]
    assert rows == [
        ("v1", 0.0, 2.0, None, -1, "No action", 1),
        ("v1", 2.0, 8.0, "A", 0, "Action", 0),
        ("v1", 8.0, 20.0, None, -1, "No action", 1),
        ("v1", 20.0, 25.0, "B", 1, "Action", 0),
        ("v1", 25.0, 30.0, None, -1, "No action", 1),
        ("v0", 0.0, 4.0, "A", 0, "Action", 0),          # clamped at 0
        ("v0", 4.0, 12.0, None, -1, "No action", 1),
    ]
    first = table.to_pylist()[0]
    assert (first["video_duration"], first["fps"], first["video_frames"], first["filename"],
            first["subset"]) == (30.0, 30.0, 900, "v1.mp4", "training")
    last = table.to_pylist()[-1]
    assert (last["fps"], last["video_frames"], last["filename"]) == (None, None, None)

    reference = to_reference_columns(table)
    assert tuple(reference.column_names) == GROUNDTRUTH_COLUMNS
    assert reference["action-label"].to_pylist()[:2] == ["", "A"]


def test_groundtruth_edge_videos():
    ann = _ann(
        _video("no_duration", None, (5.0, 9.0, "A")),           # no background
        _video("past_end", 10.0, (12.0, 15.0, "A"), (1.0, 2.0, "A")),  # first dropped
        _video("touching_float", 10.0, (0.0, 0.3, "A"), (0.1 + 0.2, 10.0, "A")),
    )
    table = build_groundtruth(ann, min_background=0.0)
    assert _rows(table, 0) == [("no_duration", 5.0, 9.0), ("past_end", 1.0, 2.0),
                               ("touching_float", 0.0, 0.3),
                               ("touching_float", 0.30000000000000004, 10.0)]
    # 0.30000000000000004 - 0.3 is float noise, not a gap (even at min_background 0)
    assert _rows(table, 1) == [("past_end", 0.0, 1.0), ("past_end", 2.0, 10.0)]
    empty = build_groundtruth(Annotations(), min_background=1.0)
    assert empty.num_rows == 0 and empty.schema.equals(GROUNDTRUTH_SCHEMA)
    with pytest.raises(AnnotationError, match="'C' is not in the class list"):
        build_groundtruth(_ann(_video("v", 10.0, (1.0, 2.0, "C"))), min_background=0.0)
    with pytest.raises(ValueError, match="min_background"):
        build_groundtruth(ann, min_background=-1.0)
    with pytest.raises(ValueError, match="gaps"):
        build_groundtruth(ann, min_background=1.0, gaps="sorted")  # type: ignore[arg-type]


def test_background_gaps_on_arrays_match_a_loop():
    rng = np.random.default_rng(7)
    n_videos, n = 50, 400
    video = rng.integers(0, n_videos, n)
    start = rng.uniform(0, 100, n).round(1)
    end = start + rng.uniform(0.1, 20, n).round(1)
    duration = np.full(n_videos, 110.0)
    got = background_gaps(video, start, end, duration, min_background=0.5)
    expected = []
    for v in range(n_videos):
        reach = 0.0
        for s, e in sorted(zip(start[video == v], end[video == v], strict=True)):
            if s - reach >= 0.5:
                expected.append((v, reach, s))
            reach = max(reach, e)
        if (video == v).any() and 110.0 - reach >= 0.5:
            expected.append((v, reach, 110.0))
    assert sorted(zip(*(a.tolist() for a in got), strict=True)) == sorted(expected)


def test_trainable_segments_drop_and_count_short_rows():
    video = _video("v", 20.0, (1.0, 2.0, "A"), (3.0, 4.0666666666666667, "A"),
                   (5.0, 10.0, "B"))
    table = build_groundtruth(_ann(video), min_background=0.0)
    kept = trainable_segments(table, TSP)
    # dropped: action 1-2 (1 s); background 0-1, 2-3 and 4.07-5 (under 16/15 s each);
    # 3-4.0667 is exactly one clip and stays
    assert (kept.dropped_action, kept.dropped_background) == (1, 3)
    assert _rows(kept.table, 0) == [("v", 3.0, 4.0666666666666667), ("v", 5.0, 10.0)]
    assert _rows(kept.table, 1) == [("v", 10.0, 20.0)]


def test_write_and_read_table(tmp_path):
    table = build_groundtruth(_ann(_video("v", 20.0, (1.0, 5.0, "A"))), min_background=0.0)
    path = write_table(table, tmp_path / "clips" / "groundtruth.parquet")
    assert [p.name for p in path.parent.iterdir()] == ["groundtruth.parquet"]
    back = read_table(path, schema=GROUNDTRUTH_SCHEMA)
    assert back.equals(table) and back.schema.metadata == table.schema.metadata
    with pytest.raises(StageError, match="lacks columns"):
        read_table(path, schema=WINDOWS_SCHEMA)
    write_table(table.drop_columns(["fps"]).append_column(
        "fps", pa.array(["x"] * table.num_rows)), path)
    with pytest.raises(StageError, match=r"wrong type: fps \(string"):
        read_table(path, schema=GROUNDTRUTH_SCHEMA)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(StageError, match=r"bad\.parquet: cannot read"):
        read_table(tmp_path / "bad.parquet")
