"""``tspipe extract VIDEO_OR_DIR... --encoder NAME --checkpoint FILE --out FEATURES.h5``.

A door: parses the options, calls :func:`tspipe.extract.files.run_extract`, prints the
result as JSON. Exit status 0 done, 1 some videos failed, 2 bad input.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from tspipe.config import ENCODER_BATCH_SIZE
from tspipe.errors import TspipeError

log = logging.getLogger(__name__)


def extract_command(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output HDF5 file: one dataset "
                                      "(num_clips, D) per video, keyed by file stem.")],
    encoder: Annotated[str, typer.Option(help="Encoder name (see `tspipe encoder list`), "
                                         "e.g. r2plus1d_34, r2plus1d_18, i3d.")]
    = "r2plus1d_34",
    checkpoint: Annotated[Path | None, typer.Option(help="Encoder weights (torchvision, TSP, "
                                                    "tspipe or safetensors file).")] = None,
    mode: Annotated[str, typer.Option(help="Preprocessing: reference (TSP's exact "
                                      "transform) or fast (resize while decoding).")]
    = "reference",
    clip_len: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    frame_rate: Annotated[float, typer.Option(help="Clip frame rate (frames/s).")] = 15.0,
    stride: Annotated[int, typer.Option(help="Clip-rate frames between clip starts.")] = 16,
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass.")]
    = ENCODER_BATCH_SIZE,
    workers: Annotated[int, typer.Option(help="Decoding processes (0: in this one).")] = 2,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    amp: Annotated[str, typer.Option(help="Mixed precision on CUDA: auto, bf16, fp16, "
                                     "off.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Stored features: float32 or float16.")]
    = "float32",
    allow_random_init: Annotated[bool, typer.Option(help="Without --checkpoint, use seeded "
                                                    "random weights (testing only).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --allow-random-init weights.")] = 0,
    preprocess_on: Annotated[str, typer.Option(
        help="Where frames become encoder input: host (the decoding processes send float "
        "clips), device (they send uint8 frames, converted, resized, cropped and "
        "normalized on --device: less CPU work, more bytes copied) or auto (device on "
        "CUDA, host on the CPU). Same arithmetic (on the CPU bit-identical at equal "
        "thread counts; last bits may differ on CUDA): not part of the feature version.")]
    = "auto",
) -> None:
    """Extract clip features of videos into one HDF5 file (resumes if interrupted)."""
    from tspipe.extract.files import run_extract  # torch: only when this command runs

    try:
        result = run_extract(videos, out=out, encoder=encoder, checkpoint=checkpoint,
                             mode=mode, clip_len=clip_len, frame_rate=frame_rate,
                             stride=stride, batch_size=batch_size, workers=workers,
                             device=device, amp=amp, dtype=dtype,
                             allow_random_init=allow_random_init, seed=seed,
                             preprocess_on=preprocess_on)
    except TspipeError as exc:
        log.error("%s", exc)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"out": str(out), **result.to_dict()}, indent=2))
    if result.failed:
        raise typer.Exit(1)
