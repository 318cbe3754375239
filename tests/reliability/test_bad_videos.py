"""Bad videos are data, not a crash: each kind ends as a named per-video failure in the
decode report, is left out of the clip tables (training) and the decoded videos
(GVF, extraction), and the run goes on with the others.

Every file is real: encoded with PyAV (libx264), then broken as files break in the field
(cut short, emptied, renamed, a header's timescale rewritten). Odd frame sizes are not
bad: they decode, and the standardized copy rounds them to even.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from reliability_helpers import cli_env, tspipe, write_params

from tspipe.data.video import probe
from tspipe.data.video.encode import write_video
from tspipe.data.video.probe import MIN_DECODED_FRACTION
from tspipe.errors import VideoError
from tspipe.paths import RunPaths
from tspipe.stages.decoded import decoded_videos

pytestmark = pytest.mark.slow

WIDE = cli_env(COLUMNS="1000")
GOOD = ("good", "good2")


def frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    base = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def scale_timescale(path: Path, box: bytes, factor: float) -> int:
    """Multiply the timescale of an MP4's first ``box`` (``mdhd``: the video track's
    media header) by ``factor`` in place, as a muxer with the wrong time base writes it;
    returns the old one."""
    data = bytearray(path.read_bytes())
    at = data.index(box)
    version = data[at + 4]
    # after the type: version and flags (4 bytes), creation and modification times (4
    # bytes each, 8 in version 1)
    field = at + 8 + (16 if version == 1 else 8)
    old = struct.unpack(">I", data[field:field + 4])[0]
    struct.pack_into(">I", data, field, int(old * factor))
    path.write_bytes(bytes(data))
    return old


def wrong_timescale(path: Path) -> Path:
    """164 frames at 25 fps whose media timescale is 1000 times too small: its edit list
    (in the movie's own timescale, left right) now covers one frame of the media."""
    write_video(path, frames(164, seed=3), fps=25)
    scale_timescale(path, b"mdhd", 1 / 1000)
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _good(path: Path, seed: int) -> Path:
    write_video(path, frames(60, seed=seed), fps=25)
    return path


def _zero(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _truncated(path: Path) -> Path:
    write_video(path, frames(100, seed=4), fps=25)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _junk(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(5).bytes(50_000))
    return path


def _one_frame(path: Path) -> Path:
    write_video(path, frames(1, seed=6), fps=25)
    return path


def _odd(path: Path) -> Path:  # 63x47: x264 takes odd sizes in 4:4:4
    write_video(path, frames(40, h=47, w=63, seed=7), fps=25, pix_fmt="yuv444p")
    return path


# video id -> (maker, file name, status in the decode report, words its reason must hold)
CASES = {
    "good": (lambda p: _good(p, 1), "good.mp4", "ok", None),
    "good2": (lambda p: _good(p, 2), "good2.mp4", "ok", None),
    "zero": (_zero, "zero.mp4", "not_downloaded", "empty file"),
    "truncated": (_truncated, "truncated.mp4", "not_downloaded",
                  "truncated or incomplete MP4"),
    "junk": (_junk, "junk.mp4", "not_downloaded", "not a video file"),
    "audio": (audio_only, "audio.m4a", "not_downloaded", "no video stream"),
    "timescale": (wrong_timescale, "timescale.mp4", "failed",
                  "only 1 of 164 frames decode (0.6%"),
    "oneframe": (_one_frame, "oneframe.mp4", "failed", "only 1 frame decodes: a still picture"),
    "odd": (_odd, "odd.mp4", "ok", None),
}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> Path:
    """A run whose annotations list every case, through ingest, download and decode."""
    root = tmp_path_factory.mktemp("bad-videos") / "run"
    src = root / "src"
    src.mkdir(parents=True)
    db = {}
    for vid, (make, name, _, _) in CASES.items():
        make(src / name)
        db[vid] = {"subset": "training", "duration": 2.4, "url": f"src/{name}",
                   "annotations": [{"segment": [0.4, 1.6], "label": "move"}]}
    (root / "ann.json").write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    write_params(root, synth={"enabled": False}, dataset={"annotations": "ann.json"},
                 decode={"min_background_clips": 0})
    for stage in ("ingest", "download", "decode"):
        proc = tspipe(root, "stage", stage, env=WIDE)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return root


def _report(root: Path) -> dict[str, dict]:
    doc = json.loads(RunPaths.at(root).decode_report.read_text())
    return {r["video_id"]: r for r in doc["videos"]}


@pytest.mark.parametrize("vid", [v for v in CASES if v not in GOOD])
def test_each_bad_video_fails_by_name_and_the_others_go_on(decoded, vid, ledger):
    report = _report(decoded)
    _, name, status, needle = CASES[vid]
    entry = report[vid]
    assert entry["status"] == status, entry
    if needle is not None:
        assert needle in entry["reason"] and name in entry["reason"], entry["reason"]
    assert all(report[g]["status"] == "ok" for g in GOOD)  # the run went on
    paths = RunPaths.at(decoded)
    kept = {v.video_id for v in decoded_videos(paths)}  # what GVF and extraction read
    training = set(pq.read_table(paths.groundtruth_table).column("video_id").to_pylist())
    windows = set(pq.read_table(paths.windows_table).column("video_id").to_pylist())
    assert (vid in kept, vid in training, vid in windows) == (status == "ok",) * 3
    if vid == "odd":  # decoded, standardized to an even size
        std = entry["standardized"]
        assert (std["width"], std["height"], std["frames_decoded"]) == (62, 46, 48)
    ledger.record("bad_input", f"video-{vid}")


def test_wrong_timescale_probes_as_refused_with_the_numbers(tmp_path, ledger):
    path = wrong_timescale(tmp_path / "ts.mp4")
    with pytest.raises(VideoError) as caught:
        probe(path, video_id="ts")
    message = str(caught.value)
    assert message.startswith(f"video 'ts' ({path}): only 1 of 164 frames decode")
    assert f"under the {MIN_DECODED_FRACTION:.0%} a usable file keeps" in message
    # Off by 10 only: 17 of 164 frames (10.4 %) are still under the threshold.
    ten = tmp_path / "ts10.mp4"
    write_video(ten, frames(164, seed=3), fps=25)
    scale_timescale(ten, b"mdhd", 1 / 10)
    with pytest.raises(VideoError, match=r"only 17 of 164 frames decode \(10\.4%"):
        probe(ten)
    ledger.record("bad_input", "video-wrong-timescale-x10")


def test_a_report_from_before_the_check_is_probed_again(decoded, tmp_path, ledger):
    """A run decoded before the decoded-fraction check: its wrong-timescale video was
    reported ok (and standardized to 43 s of one picture). A rerun probes the originals
    of such reports again, fails that video, and keeps the good videos' copies."""
    root = tmp_path / "run"
    shutil.copytree(decoded, root, ignore=shutil.ignore_patterns(".tspipe"))
    folder = RunPaths.at(root).decode_report.parent / "decode"
    good = json.loads((folder / "good.json").read_text())
    std_good = root / good["standardized"]["path"]
    mtime = std_good.stat().st_mtime_ns
    old = json.loads((folder / "timescale.json").read_text())
    std_old = root / "data" / "standardized" / "timescale.mp4"
    shutil.copy(std_good, std_old)  # what the old code left there, standing in
    stale = {**old, "status": "ok", "reason": None, "original": good["original"],
             "standardized": {**good["standardized"], "path": "data/standardized/timescale.mp4"}}
    for report in (good, stale):
        report.pop("checks", None)  # written before the check
    (folder / "good.json").write_text(json.dumps(good))
    (folder / "timescale.json").write_text(json.dumps(stale))

    proc = tspipe(root, "stage", "decode", env=WIDE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = _report(root)
    assert report["timescale"]["status"] == "failed"
    assert "only 1 of 164 frames decode" in report["timescale"]["reason"]
    assert report["good"]["status"] == "ok" and std_good.stat().st_mtime_ns == mtime
    assert "timescale" not in {v.video_id for v in decoded_videos(RunPaths.at(root))}
    ledger.record("bad_input", "video-wrong-timescale-decoded-before")
