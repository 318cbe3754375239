"""Fixtures of the extraction tests: small real 30 fps videos and a seeded tiny encoder."""

from __future__ import annotations

import pytest
import torch
from extract_helpers import make_scene

from tspipe.data.clip_sampler import ClipSampler
from tspipe.extract import VideoInput
from tspipe.models import build_encoder

# Source frames at 30 fps -> clip frames at 15 fps -> windows of 16 (stride 16):
# 100 -> 50 -> 3 (tail of 2 dropped); 75 -> 38 -> 2 (tail 6); 64 -> 32 -> 2 (no tail);
# 20 -> 10 -> 1 padded window (6 copies of its last frame).
LENGTHS = {"long": 100, "odd": 75, "exact": 64, "short": 20}
WINDOWS = {"long": 3, "odd": 2, "exact": 2, "short": 1}


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[VideoInput]:
    root = tmp_path_factory.mktemp("extract-videos")
    out = []
    for seed, (name, n) in enumerate(LENGTHS.items()):
        size = (120, 160) if name == "odd" else (96, 128)
        out.append(VideoInput(name, make_scene(root / f"{name}.mp4", n, seed=seed, size=size)))
    return out


@pytest.fixture(scope="session")
def sampler() -> ClipSampler:
    return ClipSampler(16, 15, 16)


@pytest.fixture()
def tiny() -> torch.nn.Module:
    """r2plus1d_tiny with seeded random weights (64-pixel crops, 128-d features)."""
    torch.manual_seed(0)
    return build_encoder("r2plus1d_tiny").eval()
