"""Two real processes register the same rows at the same time: one row per key, none lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from catalog_helpers import count_rows

from tspipe.catalog import Catalog, upgrade

WORKER = Path(__file__).with_name("catalog_race_worker.py")


def test_two_processes_register_the_same_rows(catalog_url: str, tmp_path: Path) -> None:
    upgrade(catalog_url)
    go = tmp_path / "go"
    workers = {
        role: subprocess.Popen(
            [sys.executable, str(WORKER), catalog_url, role, str(tmp_path / f"ready-{role}"),
             str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for role in ("a", "b")}
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{role}").exists() for role in workers):
        assert all(w.poll() is None for w in workers.values()), "a worker died early"
        assert time.monotonic() < deadline, "workers did not get ready"
        time.sleep(0.01)
    go.touch()  # both start registering now
    results = {}
    for role, worker in workers.items():
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, f"worker {role} failed:\n{err}"
        results[role] = json.loads(out)

    assert results["a"] == results["b"] and len(results["a"]) == 1  # the same ids, every round
    counts = {name: count_rows(catalog_url, name) for name in
              ("datasets", "checkpoints", "feature_versions", "videos", "evaluations")}
    assert counts == {"datasets": 1, "checkpoints": 1, "feature_versions": 1, "videos": 90,
                      "evaluations": 1}
    with Catalog(catalog_url) as catalog:
        videos = catalog.videos(dataset="race")
    assert [v.video_id for v in videos] == [f"v{i:03d}" for i in range(90)]
    sources = {v.video_id: v.source for v in videos}
    assert sources["v000"] == "from-a" and sources["v089"] == "from-b"
    assert {sources[f"v{i:03d}"] for i in range(30, 60)} <= {"from-a", "from-b"}
