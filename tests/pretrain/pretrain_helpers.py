"""A small real training set for the pretrain tests: SynthActions videos (encoded H.264,
real actions), their ground-truth table, a GVF file, and a tiny encoder checkpoint whose
input spec asks for 16-pixel crops (so a CPU step takes a fraction of a second)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml

from tspipe.config import ClipConfig, PretrainConfig, SynthConfig
from tspipe.data.annotations import read_annotations
from tspipe.data.clips import build_groundtruth, write_table
from tspipe.data.synth import generate, plan_videos
from tspipe.extract.gvf import write_gvf_dataset
from tspipe.models import KINETICS_MEAN, KINETICS_STD, InputSpec, build_encoder
from tspipe.models.checkpoints import save_checkpoint
from tspipe.paths import RunPaths

SYNTH = SynthConfig(videos=6, classes=3, min_duration=10, max_duration=13, fps=15, width=64,
                    height=48, min_action=2, max_action=4, min_gap=1.0, min_instances=2,
                    max_instances=3, corpus_videos=0)
# 8 frames at 15 fps (0.53 s): every synth segment (>= 1 s) holds a clip.
CLIP = ClipConfig(frames=8, fps=15, stride=8, resize=(19, 25), crop=16)
SPEC = InputSpec(frames=8, size=16, mean=KINETICS_MEAN, std=KINETICS_STD)
FEATURE_DIM = 128  # r2plus1d_tiny


@dataclass(frozen=True)
class SynthSet:
    root: Path  # a run directory (paths.py layout)
    videos: dict[str, Path]
    groundtruth: Path
    gvf: Path
    init_checkpoint: Path
    classes: list[str]


def make_synth_set(root: Path) -> SynthSet:
    paths = RunPaths.at(root)
    result = generate(SYNTH, root / "synth")
    ann = read_annotations(result.annotations_path)
    frames = {v.video_id: v.frames for v in plan_videos(SYNTH)}
    for vid, video in ann.videos.items():  # what the decode stage records of each file
        video.fps, video.num_frames = float(SYNTH.fps), frames[vid]
    table = build_groundtruth(ann, min_background=0.5)
    write_table(table, paths.groundtruth_table)
    videos = {vid: root / "synth" / "videos" / f"{vid}.mp4" for vid in ann.videos}
    reports = [{"video_id": vid, "status": "ok", "source": str(path), "source_sha256": None}
               for vid, path in sorted(videos.items())]
    paths.decode_report.parent.mkdir(parents=True, exist_ok=True)
    paths.decode_report.write_text(json.dumps({"summary": {}, "videos": reports}))
    rng = np.random.default_rng(0)
    paths.gvf_file.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(paths.gvf_file, "w") as f:
        for vid in videos:
            write_gvf_dataset(f, vid, rng.gamma(2.0, 1.0, FEATURE_DIM).astype(np.float32))
    torch.manual_seed(123)
    init = root / "init" / "tiny16.pt"
    save_checkpoint(init, build_encoder("r2plus1d_tiny", num_classes=None),
                    arch="r2plus1d_tiny", num_classes=None,
                    clip={"frames": SPEC.frames, "size": SPEC.size},
                    normalization=SPEC.to_dict())
    return SynthSet(root, videos, paths.groundtruth_table, paths.gvf_file, init,
                    list(ann.classes))


VARIANT = "main"  # the one variant of the params files written here


def pretrain_config(data: SynthSet, **overrides) -> PretrainConfig:
    """Small and fast: tiny encoder, 2 clips per segment, batch 8, no workers."""
    base = dict(encoder="r2plus1d_tiny", init_checkpoint=str(data.init_checkpoint),
                clips_per_segment=2, epochs=2, batch_size=8, warmup_epochs=0,
                lr_milestones=[100], workers=0, device="cpu", amp="off")
    return PretrainConfig(**{**base, **overrides})


def write_params(data: SynthSet, cfg: PretrainConfig, repo_root: Path) -> Path:
    """params.yaml of the repo with this pretrain and clip section."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["pretrain"] = cfg.model_dump(mode="json")
    raw["clip"] = CLIP.model_dump(mode="json")
    # One variant without overrides, no base stage: the run is exactly ``cfg``.
    raw["compare"] = {"variants": {VARIANT: {}}}
    raw["base"]["enabled"] = False
    path = data.root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def make_run_dir(data: SynthSet, root: Path, cfg: PretrainConfig, repo_root: Path) -> Path:
    """A run directory of its own (decode outputs, GVF, params.yaml) over the same videos:
    ``python -m tspipe.doors.train params.yaml root`` writes ``root/models/pretrain/main``."""
    src, dst = RunPaths.at(data.root), RunPaths.at(root)
    for a, b in ((src.groundtruth_table, dst.groundtruth_table),
                 (src.decode_report, dst.decode_report), (src.gvf_file, dst.gvf_file)):
        b.parent.mkdir(parents=True, exist_ok=True)
        b.write_bytes(a.read_bytes())
    run = SynthSet(root, data.videos, dst.groundtruth_table, dst.gvf_file,
                   data.init_checkpoint, data.classes)
    return write_params(run, cfg, repo_root)


def subprocess_env() -> dict[str, str]:
    """One intra-op thread, as the tests' own process (same numbers, no oversubscription)."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: the numbers of the subprocesses (OMP_NUM_THREADS=1), and no
    fight with other processes for the machine's cores (two OpenMP threads that must
    wait for each other make a tiny model's step 10x slower on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
