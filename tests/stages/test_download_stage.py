"""The download stage through its door on a fresh 50-video SynthActions set served by a
real HTTP server on 127.0.0.1, with three injected failures."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
from stage_helpers import write_params

from tspipe.catalog import Catalog
from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytestmark = pytest.mark.slow

SYNTH = {"videos": 50, "classes": 2, "seed": 5, "min_duration": 20.0, "max_duration": 21.0,
         "fps": 5, "width": 64, "height": 48, "min_instances": 1, "max_instances": 1,
         "min_action": 3.0, "max_action": 4.0}


def test_fifty_videos_three_failures_then_nothing_to_do(tmp_path, repo_root, video_server):
    root = tmp_path / "run"
    root.mkdir()
    write_params(root, repo_root, synth=SYNTH)
    paths = RunPaths.at(root)
    run_stage("synth", load_params(root / "params.yaml"), paths, NullReporter(), track=False)

    # Serve a copy of the videos; annotations point at the server, three of them broken.
    synth = json.loads((root / "data/synth/synthactions.json").read_text())
    for mp4 in (root / "data/synth/videos").glob("*.mp4"):
        shutil.copy2(mp4, video_server.root / "videos" / mp4.name)
    (video_server.root / "videos/synth_011.mp4").write_text("not a video\n")
    urls = {vid: f"{video_server.url}/videos/{vid}.mp4" for vid in synth["database"]}
    urls["synth_003"] = f"{video_server.url}/gone/synth_003.mp4"  # 404
    urls["synth_007"] = f"{video_server.url}/drop/synth_007.mp4"  # never completes
    for vid, entry in synth["database"].items():
        entry["url"] = urls[vid]
    (root / "served.json").write_text(json.dumps(synth))
    write_params(root, repo_root, synth={**SYNTH, "enabled": False},
                 dataset={"annotations": "served.json"},
                 download={"backoff_s": 0.01, "backoff_max_s": 0.02, "retries": 2,
                           "batch_size": 20, "workers": 4})
    params = load_params(root / "params.yaml")

    run_stage("ingest", params, paths, NullReporter(), track=False)
    result = run_stage("download", params, paths, NullReporter(), track=False).result
    assert result.summary == "47 ok, 1 missing, 2 failed"
    assert (result.ok, result.missing, result.failed) == (47, 1, 2)
    manifest = {e["video_id"]: e for e in json.loads(paths.manifest.read_text())["videos"]}
    assert manifest["synth_003"]["status"] == "missing" and "404" in manifest["synth_003"]["reason"]
    assert manifest["synth_007"]["status"] == "failed"
    assert manifest["synth_007"]["attempts"] == 3  # retried: a dropped connection is transient
    assert manifest["synth_011"]["status"] == "failed"
    assert video_server.hits["/gone/synth_003.mp4"] == 1  # a 404 is not retried
    ok = [e for e in manifest.values() if e["status"] == "ok"]
    for e in ok:  # the bytes are the generator's: the declared sha256 agrees
        assert e["sha256"] == synth["database"][e["video_id"]]["sha256"]
    assert sorted(p.name for p in paths.videos.iterdir()) == sorted(
        f"{e['video_id']}.mp4" for e in ok)  # no .part, nothing for the failures

    # Through the catalog door: what is gone, and why.
    with Catalog(f"sqlite:///{root / 'catalog.db'}") as cat:
        missing = cat.videos("synthactions", status="missing")
        failed = cat.videos("synthactions", status="failed")
    assert [v.video_id for v in missing] == ["synth_003"] and "404" in missing[0].reason
    assert sorted(v.video_id for v in failed) == ["synth_007", "synth_011"]

    # A rerun downloads nothing that is already there.
    before = dict(video_server.hits)
    again = run_stage("download", params, paths, NullReporter(), track=False).result
    assert again.summary == result.summary
    ok_paths = {f"/videos/{e['video_id']}.mp4" for e in ok}
    assert all(video_server.hits[p] == before[p] for p in ok_paths)


def _mp4(path) -> None:
    """A real 5-frame 64x48 H.264 file."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8),
                                               format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_local_sources_next_to_the_annotations_or_in_local_roots(tmp_path, repo_root):
    """Annotations outside the run directory: a video beside them (a relative url, which
    ingest rebases) is copied; one elsewhere is refused by name, with the roots listed,
    until download.local_roots names its folder."""
    root, data = tmp_path / "run", tmp_path / "datasets" / "anet"
    (data / "videos").mkdir(parents=True)
    root.mkdir()
    _mp4(data / "videos" / "near.mp4")
    _mp4(tmp_path / "far.mp4")
    database = {vid: {"subset": "training", "duration": 1.0, "url": url,
                      "annotations": [{"segment": [0.2, 0.8], "label": "a"}]}
                for vid, url in [("near", "videos/near.mp4"), ("far", str(tmp_path / "far.mp4"))]}
    (data / "ann.json").write_text(json.dumps({"database": database}))
    write_params(root, repo_root, synth={"enabled": False},
                 dataset={"annotations": str(data / "ann.json"), "name": "outside"})
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    run_stage("ingest", params, paths, NullReporter(), track=False)
    result = run_stage("download", params, paths, NullReporter(), track=False).result
    assert (result.ok, result.failed) == (1, 1)
    manifest = {e["video_id"]: e for e in json.loads(paths.manifest.read_text())["videos"]}
    assert manifest["near"]["status"] == "ok" and (paths.videos / "near.mp4").is_file()
    far = manifest["far"]
    assert far["status"] == "failed" and far["path"] is None
    assert far["reason"] == (f"local path {tmp_path / 'far.mp4'} is outside the allowed local "
                             f"roots: {root}, {data}; add the folder to download.local_roots")

    # download.local_roots widens them: the rerun copies it.
    write_params(root, repo_root, synth={"enabled": False},
                 dataset={"annotations": str(data / "ann.json"), "name": "outside"},
                 download={"local_roots": [str(tmp_path)]})
    params = load_params(root / "params.yaml")
    again = run_stage("download", params, paths, NullReporter(), track=False).result
    assert (again.ok, again.failed) == (2, 0) and (paths.videos / "far.mp4").is_file()
