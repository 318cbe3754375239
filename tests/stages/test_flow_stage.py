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
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

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


def test_two_stream_extraction_concatenates_rgb_and_flow_and_records_the_sources(
        decoded, repo_root):
    """extract.flow_encoder: an RGB and a flow version (the ids single-stream runs get) and
    their per-clip concatenation, RGB first, as the current version; a video without flow
    fails by name in the concatenation; the catalog links the three; a rerun does nothing
    and a lost concatenation shard is remade from the streams, not re-encoded."""
    from tspipe.catalog import Catalog
    from tspipe.extract import read_features

    root = decoded
    flow = {"enabled": True, "method": "farneback"}
    two = {"encoder": "i3d_tiny", "flow_encoder": "i3d_flow_tiny", "workers": 0,
           "batch_size": 16}
    write_params(root, repo_root, synth=TINY, flow=flow, extract=two)
    _run(root, "flow")
    videos = _videos(root)
    gone = sorted(videos)[-1]
    (root / "data/flow/videos" / f"{gone}.h5").unlink()
    result = _run(root, "extract@main")
    rgb, flw = result.streams["rgb"], result.streams["flow"]
    assert (result.encoder, result.feature_dim) == ("i3d_tiny+i3d_flow_tiny", 256)
    assert (rgb["ok"], flw["ok"], result.ok, result.failed) == (3, 2, 2, 1)
    assert (rgb["feature_dim"], flw["feature_dim"]) == (128, 128)
    current = json.loads((root / "features/main/current.json").read_text())
    assert current["feature_version"] == result.feature_version
    base = root / "features/main"

    def feats(version):
        out = {}
        for shard in sorted((base / version).glob("shard-*.h5")):
            out.update(read_features(shard))
        return out

    cat, r, f = feats(result.feature_version), feats(rgb["feature_version"]), feats(
        flw["feature_version"])
    assert sorted(cat) == sorted(set(videos) - {gone}) and sorted(r) == sorted(videos)
    for vid, x in cat.items():
        assert x.shape == (len(r[vid]), 256), vid
        np.testing.assert_array_equal(x[:, :128], r[vid])
        np.testing.assert_array_equal(x[:, 128:], f[vid])
        # two different encoders (seeded random: tiny values, so relative to their size)
        assert np.abs(r[vid] - f[vid]).max() > 0.1 * np.abs(r[vid]).max() > 0, vid
    index = json.loads((base / result.feature_version / "index.json").read_text())
    assert index["sources"] == {"rgb": rgb["feature_version"], "flow": flw["feature_version"]}
    assert index["videos"][gone]["reason"].startswith("flow stream: ")
    assert "no flow file" in index["videos"][gone]["reason"]

    with Catalog(f"sqlite:///{root / 'catalog.db'}") as catalog:
        lineage = catalog.show(result.feature_version)
        assert [(s.position, s.stream, s.feature.id, s.feature.feature_dim)
                for s in lineage.sources] == [(0, "rgb", rgb["feature_version"], 128),
                                              (1, "flow", flw["feature_version"], 128)]
        assert lineage.feature.encoder == "i3d_tiny+i3d_flow_tiny"
        assert lineage.video_counts.ok == 2 and lineage.video_counts.failed == 1
        assert catalog.show(flw["feature_version"]).video_counts.failed == 1
        assert catalog.show(rgb["feature_version"]).sources == ()

    # a rerun: all three versions are complete, no file is rewritten
    def stamps():
        return {p: p.stat().st_mtime_ns for p in base.glob("*/shard-*")}

    before = stamps()
    assert len(before) == 6  # three versions: one shard and its report each
    again = _run(root, "extract@main")
    assert again.feature_version == result.feature_version and stamps() == before
    # the concatenation shard lost: remade from the stream shards (no encoder runs)
    lost = sorted((base / result.feature_version).glob("shard-*"))
    for p in lost:
        p.unlink()
    _run(root, "extract@main")
    after = stamps()
    assert {p: t for p, t in after.items() if p not in lost} == {
        p: t for p, t in before.items() if p not in lost} and all(p in after for p in lost)
    assert all(np.array_equal(feats(result.feature_version)[v], x) for v, x in cat.items())

    # the RGB stream is the version an RGB-only run of the same encoder gets
    write_params(root, repo_root, synth=TINY, flow=flow,
                 extract={**two, "flow_encoder": None})
    alone = _run(root, "extract@main")
    assert (alone.feature_version, alone.streams) == (rgb["feature_version"], {})
    assert stamps() == after

    # a flow encoder as the RGB stream, or an RGB one as the flow stream: refused
    write_params(root, repo_root, synth=TINY, flow=flow,
                 extract={**two, "flow_encoder": "i3d_tiny"})
    with pytest.raises(Exception, match="not an optical-flow encoder"):
        _run(root, "extract@main")
