"""The rehearsal's run directory (``benchmarks/scale.py``): real ActivityNet annotations, a
stand-in video per id served over loopback HTTP, tiny-encoder params, a DVC project.

- Annotations: the TSP CSVs' 19,994 ActivityNet v1.3 videos (training and validation
  from the ground-truth CSVs, with their segments; testing from the metadata CSV, no
  segments), read by tspipe's own reader, with their real ids, durations and fps. The N
  videos of a size are the first N in a fixed hash order (so a larger size is a superset
  and the videos it adds are spread over every subset and shard).
- Videos: one 1 s 64x48 15 fps H.264 file made once (:func:`tspipe.data.synth_encode.
  encode_frames`), hard-linked under every id into a mirror folder; about 4% of the ids
  (hash order, fixed) are left out, as on the web. ``python -m http.server`` serves the
  folder on 127.0.0.1 and ``download.mirror`` points at it: the download stage fetches
  through its real HTTP path, and an absent id is a 404, recorded as ``missing``.
- Durations: ingest, the catalog's ingest rows and the annotations keep the real
  durations; decode reads the 1 s file, flags every video's duration mismatch and builds
  the clip tables from the decoded 1 s (as it does for any video), so the encoders see
  one (padded) window per video: the rehearsal measures the data path and the doors, not the model.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from tspipe.data.annotations import Annotations, write_activitynet
from tspipe.data.annotations.tsp_csv import read_tsp_groundtruth, read_tsp_metadata

REPO = Path(__file__).resolve().parents[1]
TSP_DIR = REPO.parent / "shared" / "data" / "annotations" / "tsp"
ABSENT_EVERY = 25  # 1 id in 25 (4%) has no file in the mirror
STANDIN = {"seconds": 1, "fps": 15, "width": 64, "height": 48}
DATASET = "activitynet_scale"
VARIANT = "scale"

# The data path with a tiny encoder: pretrain and base off (gvf and extract start from
# seeded random weights saved as the init checkpoint, Kinetics' place in a real run),
# evaluation sized down to one short BMN epoch, decoding in the process.
PARAMS = {
    "dataset": {"name": DATASET, "format": "activitynet",
                "annotations": "data/source/activitynet_scale.json",
                "subsets": ["training", "validation", "testing"]},
    "synth": {"enabled": False},
    "base": {"enabled": False},
    "download": {"workers": 4, "retries": 0, "timeout_s": 20.0},
    "pretrain": {"enabled": False, "init_checkpoint": "models/init/checkpoint.pt"},
    "gvf": {"workers": 0, "batch_size": 32, "device": "cpu"},
    "extract": {"workers": 0, "batch_size": 32, "device": "cpu"},
    "localize": {"methods": ["bmn"], "temporal_scale": 16, "epochs": 1, "min_steps": 1,
                 "device": "cpu"},
    "compare": {"variants": {VARIANT: {}}},
}


def all_videos(tsp_dir: Path = TSP_DIR) -> Annotations:
    """The 19,994 videos of the TSP CSVs as one annotation set (ids without ``v_``)."""
    parts = []
    for split in ("train", "valid"):
        parts.append(read_tsp_groundtruth(
            tsp_dir / f"activitynet_v1-3_{split}_tsp_groundtruth.csv",
            metadata_csv=tsp_dir / f"activitynet_v1-3_{split}_metadata.csv"))
    test = read_tsp_metadata(tsp_dir / "activitynet_v1-3_test_metadata.csv")
    videos = {}
    for part in parts:
        videos.update(part.videos)
    for video in test.videos.values():
        vid = video.video_id.removeprefix("v_")
        videos.setdefault(vid, replace(video, video_id=vid, subset="testing"))
    # Videos listed only in a metadata CSV (no action row) keep their split's subset.
    for part, split in zip(parts, ("training", "validation"), strict=True):
        for video in part.videos.values():
            video.subset = video.subset or split
    classes = sorted({c for p in parts for c in p.classes})
    return Annotations(videos=videos, classes=classes, version="VERSION 1.3")


def _rank(video_id: str) -> str:
    return hashlib.sha256(f"tspipe-scale:{video_id}".encode()).hexdigest()


def is_absent(video_id: str) -> bool:
    return int(hashlib.sha256(f"absent:{video_id}".encode()).hexdigest(), 16) % ABSENT_EVERY == 0


def select(ann: Annotations, n: int) -> Annotations:
    """The first ``n`` videos in hash order (a superset of every smaller selection)."""
    ids = sorted(ann.videos, key=_rank)[:n]
    return replace(ann, videos={v: ann.videos[v] for v in sorted(ids)}, issues=[])


def standin_video(work: Path) -> Path:
    """One short low-resolution H.264 file, made once (seeded noise over a moving bar)."""
    from tspipe.data.synth_encode import encode_frames

    dest = work / "standin.mp4"
    if dest.exists():
        return dest
    s = STANDIN
    rng = np.random.default_rng(0)
    frames = []
    for t in range(s["seconds"] * s["fps"]):
        frame = rng.integers(0, 64, (s["height"], s["width"], 3), dtype=np.uint8)
        x = (4 * t) % (s["width"] - 8)
        frame[:, x:x + 8] = 220
        frames.append(frame)
    work.mkdir(parents=True, exist_ok=True)
    encode_frames(frames, dest, fps=s["fps"], width=s["width"], height=s["height"], crf=28)
    return dest


def fill_mirror(mirror: Path, standin: Path, ids: list[str]) -> int:
    """A hard link to the stand-in under ``<id>.mp4`` for every id not absent; the count."""
    mirror.mkdir(parents=True, exist_ok=True)
    n = 0
    for vid in ids:
        if is_absent(vid):
            continue
        n += 1
        dest = mirror / f"{vid}.mp4"
        if not dest.exists():
            dest.hardlink_to(standin)
    return n


class MirrorServer:
    """``python -m http.server`` on 127.0.0.1 over the mirror folder (its own process, so
    serving costs the measured process nothing but the sockets)."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _git(root: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "scale", "GIT_AUTHOR_EMAIL": "scale@localhost",
           "GIT_COMMITTER_NAME": "scale", "GIT_COMMITTER_EMAIL": "scale@localhost",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def make_run_dir(root: Path, mirror_url: str) -> Path:
    """A DVC project (this repository's dvc.yaml, .dvc/config and stage code, in a fresh
    git repository) with the rehearsal's params; annotations are written by
    :func:`write_annotations`."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / "src", root / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in PARAMS.items():
        if section == "compare":
            raw[section] = dict(values)
        else:
            raw[section].update(values)
    raw["download"]["mirror"] = mirror_url
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    init_checkpoint(root / PARAMS["pretrain"]["init_checkpoint"])
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "scale rehearsal project")
    return root / "params.yaml"


def init_checkpoint(dest: Path, arch: str = "r2plus1d_tiny", seed: int = 0) -> str:
    """Seeded random weights of ``arch`` as a tspipe checkpoint (dvc.yaml names the init
    checkpoint as a dependency: a null one fails `dvc commit`)."""
    import torch

    from tspipe.models.checkpoints import save_checkpoint
    from tspipe.models.registry import build_encoder

    torch.manual_seed(seed)
    model = build_encoder(arch, num_classes=None)
    spec = model.input_spec.to_dict()
    return save_checkpoint(dest, model, arch=arch, num_classes=None,
                           clip={"frames": spec["frames"], "size": spec["size"]},
                           normalization=spec, extra={"random_init_seed": seed})


def write_annotations(root: Path, ann: Annotations) -> Path:
    """The selection as the run's source annotations (ActivityNet v1.3 JSON)."""
    return write_activitynet(ann, root / PARAMS["dataset"]["annotations"])
