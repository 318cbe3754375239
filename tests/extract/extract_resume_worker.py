"""An extraction the resume test kills with SIGKILL midway.

    python extract_resume_worker.py OUT.h5 LOG DELAY_S ID=PATH...

Seeded tiny encoder, batch size 1, no workers, ``DELAY_S`` of sleep before every forward
pass (so that the kill lands mid-run); after each video's part is written, a line
``written <id>`` goes to LOG.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tspipe.data.clip_sampler import ClipSampler, Window
from tspipe.extract import H5FeatureWriter, Preprocess, VideoInput, feature_attrs
from tspipe.models import build_encoder

SAMPLER = ClipSampler(16, 15, 16)
OPTIONS = {"batch_size": 1, "workers": 0, "device": "cpu"}


def setup() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = build_encoder("r2plus1d_tiny").eval()
    attrs = feature_attrs(encoder="r2plus1d_tiny", checkpoint_sha256="ab" * 32,
                          feature_version="cd" * 32, sampler=SAMPLER,
                          prep=Preprocess.for_spec(model.input_spec))
    return model, attrs


class LoggingWriter(H5FeatureWriter):
    def __init__(self, path: Path, attrs: dict, log: Path) -> None:
        super().__init__(path, attrs)
        self.log = log

    def write(self, video_id: str, features: np.ndarray, windows: Sequence[Window]) -> None:
        super().write(video_id, features, windows)
        with self.log.open("a") as fh:
            fh.write(f"written {video_id}\n")


def main(argv: list[str]) -> None:
    from tspipe.extract import extract_features

    out, log, delay = Path(argv[0]), Path(argv[1]), float(argv[2])
    videos = [VideoInput(arg.split("=", 1)[0], Path(arg.split("=", 1)[1])) for arg in argv[3:]]
    model, attrs = setup()
    model.register_forward_pre_hook(lambda module, args: time.sleep(delay))
    with LoggingWriter(out, attrs, log) as writer:
        extract_features(videos, model, model.input_spec, SAMPLER, writer=writer, **OPTIONS)


if __name__ == "__main__":
    main(sys.argv[1:])
