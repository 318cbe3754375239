"""One of two processes racing to register the same things (run by test_catalog_concurrency).

argv: URL ROLE READY_FILE GO_FILE. Opens the catalog, says it is ready, waits for the go
signal, then registers a dataset, a checkpoint, a feature version, videos overlapping the
other process's, and an evaluation, several rounds. Prints the ids it got as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tspipe.catalog import Catalog, VideoRow

ROUNDS = 3
VIDEOS = {"a": range(0, 60), "b": range(30, 90)}  # v030..v059 written by both


def main(url: str, role: str, ready: Path, go: Path) -> None:
    with Catalog(url) as catalog:
        ready.touch()
        deadline = time.monotonic() + 60
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal within 60 s")
            time.sleep(0.002)
        got = set()
        for _ in range(ROUNDS):
            ds = catalog.register_dataset(
                "race", "ab" * 32, format="activitynet", subsets=["validation"],
                num_videos=90, num_segments=0, num_classes=1, counts={"validation": 90})
            ckpt = catalog.register_checkpoint("cd" * 32, arch="r2plus1d_18", origin="pretrain",
                                               params={"lr": 0.01})
            fv = catalog.register_feature_version(
                dataset_id=ds.id, checkpoint_sha256=ckpt.sha256, encoder="r2plus1d_18",
                params={"stride": 16}, manifest_sha256="ef" * 32, code_version="1")
            catalog.upsert_videos(ds.id, [VideoRow(f"v{i:03d}", subset="validation",
                                                   source=f"from-{role}")
                                          for i in VIDEOS[role]])
            catalog.record_evaluation(fv.id, method="gtad", subset="validation",
                                      metric="average_map", value=0.5)
            got.add((ds.id, ckpt.sha256, fv.id))
    print(json.dumps(sorted(got)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
