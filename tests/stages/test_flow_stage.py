"""The flow stage on tiny SynthActions: one file per video at the clip rate, resume, a
video that fails, settings that change recompute, and the disabled default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from stage_helpers import write_params

from tspipe.config import load_params
from tspipe.data.clip_sampler import ClipSampler
from tspipe.data.flow import dequantize, read_flow
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter
from tspipe.runner import run_stage

pytestmark = pytest.mark.slow

TINY = {"videos": 3, "classes": 2, "seed": 1, "min_duration": 20.0, "max_duration": 22.0,
        "fps": 10, "width": 64, "height": 48, "min_instances": 1, "max_instances": 2,
        "min_action": 3.0, "max_action": 5.0}


def _run(root, stage):
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    return run_stage(stage, params, paths, NullReporter(), track=False).result


@pytest.fixture(scope="module")
def decoded_once(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("flow") / "run"
    root.mkdir()
    write_params(root, repo_root, synth=TINY)
    for stage in ("synth", "ingest", "download", "decode"):
        _run(root, stage)
    return root


@pytest.fixture
def decoded(decoded_once, tmp_path):
    """A private copy of the decoded run (every path in it is relative to its root)."""
    return Path(shutil.copytree(decoded_once, tmp_path / "run"))


def _videos(root):
    report = json.loads((root / "data/reports/decode_report.json").read_text())
    return {r["video_id"]: r for r in report["videos"] if r["status"] == "ok"}


def test_flow_stage_writes_each_video_then_resumes_and_reports_failures(decoded, repo_root):
    root = decoded
    # disabled (the default): nothing computed, an empty report so DVC finds its outputs
    off = _run(root, "flow")
    assert (off.enabled, off.videos, off.ok) == (False, 0, 0)
    assert json.loads((root / "metrics/flow.json").read_text())["videos"] == 0.0
    assert not (root / "data/flow/videos").exists()

    write_params(root, repo_root, synth=TINY,
                 flow={"enabled": True, "method": "farneback", "workers": 2, "batch_size": 2})
    result = _run(root, "flow")
    videos = _videos(root)
    assert (result.videos, result.ok, result.failed) == (3, 3, 0)
    sampler = ClipSampler.from_config(load_params(root / "params.yaml").clip)
    total = 0
    for vid, rep in videos.items():
        flow = read_flow(root / "data/flow/videos" / f"{vid}.h5")
        n = sampler.frames_in(rep["standardized"]["duration"])
        assert flow.flow.shape == (n, 48, 64, 2), vid  # one per clip-rate frame, decoded size
        assert flow.method == "farneback" and flow.fps == 15.0
        # SynthActions moves its actor and jitters its camera: pixels that move by more
        # than a pixel (zero flow reads back as 0.078 px: the uint8 step), within the bound
        speed = np.hypot(*dequantize(flow.flow).transpose(3, 0, 1, 2))
        assert 0.02 < (speed > 1.0).mean() < 0.5 and speed.mean() < 5.0, vid  # 11-24% here
        total += n
    assert result.frames == total
    metrics = json.loads((root / "metrics/flow.json").read_text())
    assert metrics["ok"] == 3.0 and metrics["frames"] == float(total)
    assert metrics["frames_per_s"] > 0 and metrics["bytes"] > 0

    # rerun: nothing recomputed (files untouched)
    files = sorted((root / "data/flow/videos").glob("*.h5"))
    stamps = [f.stat().st_mtime_ns for f in files]
    _run(root, "flow")
    assert [f.stat().st_mtime_ns for f in files] == stamps

    # a video whose decoded copy is broken fails, named, and the others are kept
    broken = sorted(videos)[1]
    (root / videos[broken]["standardized"]["path"]).write_bytes(b"\x00" * 4096)
    (root / "data/flow/reports" / f"{broken}.json").unlink()
    result = _run(root, "flow")
    assert (result.ok, result.failed) == (2, 1)
    report = json.loads((root / "data/flow/report.json").read_text())
    [failed] = [r for r in report["videos"] if r["status"] == "failed"]
    assert failed["video_id"] == broken and broken in failed["reason"]
    assert not (root / "data/flow/videos" / f"{broken}.h5").exists()  # no stale flow
    assert [f.stat().st_mtime_ns for f in files if f.stem != broken] == \
        [s for f, s in zip(files, stamps, strict=True) if f.stem != broken]

    # other settings: every good video is computed again
    write_params(root, repo_root, synth=TINY,
                 flow={"enabled": True, "method": "farneback", "bound": 10.0})
    result = _run(root, "flow")
    assert result.ok == 2
    kept = [f for f in files if f.stem != broken]
    assert all(read_flow(f).bound == 10.0 for f in kept)


def test_flow_encoder_extracts_from_the_flow_files(decoded, repo_root):
    """i3d_flow_tiny through the extract stage: one 128-d feature per window of each
    video's flow; the flow settings are part of the version; a video without flow fails
    by name and the others are written."""
    from tspipe.extract import read_features

    root = decoded
    run = {"encoder": "i3d_flow_tiny", "workers": 0, "batch_size": 16}
    write_params(root, repo_root, synth=TINY, extract=run)
    with pytest.raises(Exception, match=r"flow\.enabled: true"):
        _run(root, "extract@main")

    flow = {"enabled": True, "method": "farneback"}
    write_params(root, repo_root, synth=TINY, flow=flow, extract=run)
    _run(root, "flow")
    videos = _videos(root)
    gone = sorted(videos)[0]
    (root / "data/flow/videos" / f"{gone}.h5").unlink()
    result = _run(root, "extract@main")
    assert (result.ok, result.failed) == (2, 1)
    folder = root / "features/main" / result.feature_version
    index = json.loads((folder / "index.json").read_text())
    assert index["videos"][gone]["status"] == "failed"
    assert "no flow file" in index["videos"][gone]["reason"]
    assert index["params"]["flow"]["method"] == "farneback"
    feats = {}
    for shard in sorted(folder.glob("shard-*.h5")):
        feats.update(read_features(shard))
    sampler = ClipSampler.from_config(load_params(root / "params.yaml").clip)
    assert sorted(feats) == sorted(set(videos) - {gone})
    for vid, x in feats.items():
        n = len(sampler.windows(sampler.frames_in(videos[vid]["standardized"]["duration"])))
        assert x.shape == (n, 128) and np.isfinite(x).all(), vid
        assert x.std(axis=0).mean() > 0  # windows differ: the flow moves

    # other flow settings make another feature version
    write_params(root, repo_root, synth=TINY, flow={**flow, "bound": 10.0}, extract=run)
    _run(root, "flow")
    assert _run(root, "extract@main").feature_version != result.feature_version
