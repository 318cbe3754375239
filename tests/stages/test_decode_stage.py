"""The decode stage on real encoded files with the problems real datasets have: a clip
shorter than one clip, variable frame rate, MPEG-4 in AVI, a duration the annotations get
wrong, a file truncated after its first frames, and an audio-only file."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from stage_helpers import write_params

from tspipe.catalog import Catalog
from tspipe.config import load_params
from tspipe.data.video.encode import write_video
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytestmark = pytest.mark.slow


def frames(n, h=48, w=64):
    rng = np.random.default_rng(n)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def audio_only(path):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_decode_reports_every_problem_and_indexes_the_rest(tmp_path, repo_root):
    root = tmp_path / "run"
    src = root / "src"
    src.mkdir(parents=True)
    write_video(src / "normal.mp4", frames(100), fps=25)                     # 4.0 s
    write_video(src / "short.mp4", frames(5), fps=10)                        # 0.5 s
    write_video(src / "vfr.mp4", frames(40), fps=25, time_base=Fraction(1, 1000),
                pts=np.cumsum([0] + [40 if i % 3 else 80 for i in range(39)]).tolist())
    write_video(src / "mpeg4.avi", frames(60), fps=30, codec="mpeg4")          # 2.0 s
    write_video(src / "wrongdur.mp4", frames(50), fps=25)                    # 2.0 s
    for name in ("cut.mp4", "cut.mkv"):  # both cut in half, as an interrupted copy leaves
        write_video(src / name, frames(200), fps=25)                         # 8.0 s
        data = (src / name).read_bytes()
        (src / name).write_bytes(data[: len(data) // 2])
    audio_only(src / "noise.m4a")

    def entry(name, duration, segments):
        # relative to the annotation file's folder (the run root); ingest rebases it
        return {"subset": "training", "duration": duration, "url": f"src/{name}",
                "annotations": [{"segment": s, "label": "move"} for s in segments]}

    db = {"normal": entry("normal.mp4", 4.0, [[1.0, 2.5]]),
          "short": entry("short.mp4", 0.5, [[0.0, 0.4]]),
          "vfr": entry("vfr.mp4", 2.0, [[0.2, 1.5]]),
          "mpeg4": entry("mpeg4.avi", 2.0, [[0.5, 1.9]]),
          "wrongdur": entry("wrongdur.mp4", 10.0, [[0.5, 1.5]]),
          "cut": entry("cut.mp4", 8.0, [[1.0, 2.0]]),
          "cutmkv": entry("cut.mkv", 8.0, [[1.0, 2.0]]),
          "noise": entry("noise.m4a", 1.3, [[0.1, 0.9]])}
    (root / "ann.json").write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    write_params(root, repo_root, synth={"enabled": False}, dataset={"annotations": "ann.json"},
                 decode={"min_background_clips": 0})
    params = load_params(root / "params.yaml")
    paths = RunPaths.at(root)
    for stage in ("ingest", "download", "decode"):
        outcome = run_stage(stage, params, paths, NullReporter(), track=False)
    result = outcome.result
    report = {r["video_id"]: r for r in json.loads(paths.decode_report.read_text())["videos"]}

    assert report["noise"]["status"] == "not_downloaded"
    assert "video" in report["noise"]["reason"]  # no video stream: refused at download
    # An MP4 cut before its index cannot be opened: refused at download, saying why.
    assert report["cut"]["status"] == "not_downloaded"
    assert "truncated or incomplete MP4" in report["cut"]["reason"]
    # A Matroska file cut in half still plays: kept, with both disagreements reported.
    warnings = report["cutmkv"]["warnings"]
    assert any("container says 8.000 s" in w for w in warnings)
    assert any(w.startswith("duration: the annotations say 8.000 s") for w in warnings)
    ok = {v for v, r in report.items() if r["status"] == "ok"}
    assert ok == {"normal", "short", "vfr", "mpeg4", "wrongdur", "cutmkv"}
    assert (result.ok, result.failed + result.not_downloaded) == (6, 2)

    std = {v: report[v]["standardized"] for v in ok}
    assert all(s["fps"] == 30.0 and s["constant_fps"] for s in std.values())
    assert std["normal"]["frames_decoded"] == 120 and std["mpeg4"]["frames_decoded"] == 60
    assert report["mpeg4"]["original"]["codec"] == "mpeg4"
    assert not report["vfr"]["original"]["constant_fps"]
    assert any(w.startswith("duration") for w in report["wrongdur"]["warnings"])
    assert any(w.startswith("shorter than one clip") for w in report["short"]["warnings"])
    for v in ok:  # the originals are untouched, the copies are constant 30 fps H.264
        with av.open(str(root / std[v]["path"])) as c:
            assert c.streams.video[0].codec_context.name == "h264"

    windows = pq.read_table(paths.windows_table).to_pandas()
    short = windows[windows.video_id == "short"]
    assert len(short) == 1 and short.padded_frames.iloc[0] == 16 - 8  # 0.5 s at 15 fps
    assert len(windows[windows.video_id == "normal"]) == (60 - 16) // 16 + 1
    gt = pq.read_table(paths.groundtruth_table).to_pandas()
    assert set(gt.video_id) == ok
    normal = gt[gt.video_id == "normal"].sort_values("t_start")
    assert normal.region_label.tolist() == ["No action", "Action", "No action"]
    assert normal.t_end.iloc[-1] == pytest.approx(4.0)

    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        rows = {v.video_id: v for v in cat.videos()}
    assert rows["normal"].status == "ok" and rows["normal"].fps == 30.0
    assert rows["noise"].status == "failed" and rows["noise"].reason
    assert rows["cut"].status == "failed" and "moov" in rows["cut"].reason
