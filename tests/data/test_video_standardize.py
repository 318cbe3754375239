"""standardize: constant frame rate by the decode rule, exact keyframe interval, even sizes,
atomic output, source untouched."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from video_helpers import expected_indices, make_video, read_pattern

from tspipe.data.video import decode, probe, standardize
from tspipe.errors import VideoError
from tspipe.io import sha256_file

VFR_PTS_MS = [0, 40, 80, 200, 220, 287, 320, 570, 580, 620, 710, 750, 790, 910, 930, 997,
              1030, 1280, 1290, 1330]


def keyframe_numbers(path: Path, fps: int) -> tuple[list[int], int]:
    """Frame numbers (pts * fps) of the keyframe packets, and the number of packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        keys = sorted(round(p.pts * stream.time_base * fps) for p in packets if p.is_keyframe)
    return keys, len(packets)


def test_vfr_to_constant_30fps(tmp_path):
    src = make_video(tmp_path / "vfr.mp4", len(VFR_PTS_MS), size=(48, 64), pts=VFR_PTS_MS,
                     time_base=Fraction(1, 1000))
    before = sha256_file(src)
    source = probe(src)
    assert not source.constant_fps
    dst = tmp_path / "out" / "vfr_30.mp4"

    result = standardize(src, dst, fps=30, gop=15)

    assert sha256_file(src) == before
    assert result.path == str(dst) and dst.is_file()
    assert [p.name for p in dst.parent.iterdir()] == ["vfr_30.mp4"]  # no temp file left
    assert result.codec == "h264" and result.constant_fps and result.warnings == ()
    assert result.fps == pytest.approx(30)
    assert result.frames_decoded == math.ceil(source.duration * 30 - 1e-6)
    assert abs(result.frames_decoded - round(source.duration * 30)) <= 1
    assert result.duration == pytest.approx(source.duration, abs=1 / 30)
    keys, packets = keyframe_numbers(dst, 30)
    assert packets == result.frames_decoded
    assert keys == list(range(0, packets, 15))  # exactly every 15 frames, no extra ones
    # Content: frame k is the source frame the decode rule picks for k / 30.
    want = expected_indices([t / 1000 for t in VFR_PTS_MS], source.duration, 30)
    assert [read_pattern(f.frame) for f in decode(dst)] == want


def test_25fps_to_30fps_with_short_side(tmp_path):
    src = make_video(tmp_path / "odd.avi", 50, fps=25, size=(61, 97), codec="mpeg4")
    result = standardize(src, tmp_path / "std.mp4", fps=30, short_side=45, gop=10)
    assert (result.height, result.width) == (44, 72)  # 45 x 71.6 -> even: 44 x 72
    assert result.frames_decoded == 60 and result.duration == pytest.approx(2.0)
    assert result.frames_header == 60 and not result.has_audio
    assert [read_pattern(f.frame) for f in decode(tmp_path / "std.mp4")] == \
        [k * 25 // 30 for k in range(60)]
    keys, _ = keyframe_numbers(tmp_path / "std.mp4", 30)
    assert keys == [0, 10, 20, 30, 40, 50]


def test_tree_avi_sparse_frames_to_30fps(shared_data, tmp_path):
    src = shared_data / "videos" / "tree.avi"
    before = sha256_file(src)
    result = standardize(src, tmp_path / "tree.mp4", fps=30, short_side=120)
    assert sha256_file(src) == before
    assert abs(result.frames_decoded - round(29.6 * 30)) <= 1
    assert result.duration == pytest.approx(29.6, abs=1 / 30)
    assert result.constant_fps and (result.height, result.width) == (120, 160)
    keys, _ = keyframe_numbers(tmp_path / "tree.mp4", 30)
    assert keys == list(range(0, result.frames_decoded, 15))
    # The copy follows our own 30 fps decode of the source (lossy: close, not equal), and
    # clearly better than the same decode one source picture (~0.4 s) later.
    ours = [f.frame.astype(np.int16) for f in decode(src, fps=30, short_side=120)]
    copy = [f.frame.astype(np.int16) for f in decode(tmp_path / "tree.mp4")]
    assert len(ours) == len(copy)
    aligned = np.mean([np.abs(a - b).mean() for a, b in zip(copy, ours, strict=True)])
    shifted = np.mean([np.abs(a - b).mean() for a, b in zip(copy, ours[12:], strict=False)])
    assert aligned < 4.0 < shifted


def test_bad_source_leaves_no_output(tmp_path):
    src = tmp_path / "notes.mp4"
    src.write_text("no video here")
    dst = tmp_path / "out" / "std.mp4"
    with pytest.raises(VideoError, match="not a video file"):
        standardize(src, dst, fps=30)
    assert not dst.exists()
    assert not dst.parent.exists() or list(dst.parent.iterdir()) == []  # no temp file left
    with pytest.raises(VideoError, match="overwrite its own source"):
        standardize(tmp_path / "notes.mp4", tmp_path / "notes.mp4", fps=30)
