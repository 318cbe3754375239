"""Optical flow benchmark: frames/s of each method, and the share of two-stream extraction
time that flow takes, measured in one run.

    python benchmarks/flow.py [VIDEO] [--fps 15] [--short-side 128] [--frames 60]
                              [--encoder i3d_tiny] [--flow-encoder i3d_flow_tiny]
                              [--batch-size 8] [--threads N]

VIDEO defaults to ``../shared/data/videos/bikes.mp4``. Its first ``--frames`` frames at
``--fps`` (resized to ``--short-side``) are decoded once through tspipe's decoder (the
baseline: decode frames/s), then:

- ``farneback`` / ``tvl1``: flow of every consecutive pair, one OpenCV thread (as the flow
  stage runs each video), frames/s and the ratio to decoding;
- ``rgb`` / ``flow`` extraction: the encoders' forward passes over the clip windows of
  those frames (16-frame windows, stride 16, encoder input size), clips/s, converted to
  a time per frame;
- the share: per method, flow time / (flow + RGB forward + flow forward) per frame, what
  flow adds to making two-stream features on this machine.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tspipe.data.flow import METHODS, dequantize, flow_function, quantize, to_gray
from tspipe.data.video import decode
from tspipe.extract.preprocess import Preprocess
from tspipe.models.registry import build_encoder

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared/data/videos/bikes.mp4"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--short-side", type=int, default=128)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--encoder", default="i3d_tiny")
    ap.add_argument("--flow-encoder", default="i3d_flow_tiny")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    if not args.video.exists():
        print(f"{args.video}: no such video (pass one)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    frames = []
    for item in decode(args.video, fps=args.fps, short_side=args.short_side):
        frames.append(item.frame)
        if len(frames) == args.frames:
            break
    t_decode = time.perf_counter() - t0
    n = len(frames)
    h, w = frames[0].shape[:2]
    print(f"{args.video.name}: {n} frames at {args.fps} fps, {h}x{w}; "
          f"{args.threads} torch threads, 1 OpenCV thread")
    print(f"{'decode':>10}: {n / t_decode:9.1f} frames/s  (baseline)")

    grays = [to_gray(f) for f in frames]
    flow_s: dict[str, float] = {}
    flows: dict[str, np.ndarray] = {}
    for method in METHODS:
        fn = flow_function(method)
        fn(grays[0], grays[1])  # warm-up (first-call allocations)
        t0 = time.perf_counter()
        out = [quantize(fn(a, b)) for a, b in itertools.pairwise(grays)]
        flow_s[method] = (time.perf_counter() - t0) / (n - 1)
        flows[method] = np.stack([*out, out[-1]])
        print(f"{method:>10}: {1 / flow_s[method]:9.1f} frames/s  "
              f"({flow_s[method] * n / t_decode:.1f}x the decode time)")
    a, b = (dequantize(flows[m]) for m in METHODS)
    print(f"{'':>10}  farneback vs tvl1: mean end-point difference "
          f"{np.hypot(*(a - b).transpose(3, 0, 1, 2)).mean():.3f} px")

    per_frame: dict[str, float] = {}
    for stream, name in (("rgb", args.encoder), ("flow", args.flow_encoder)):
        model = build_encoder(name).eval()
        prep = Preprocess.for_spec(model.input_spec, "reference")
        x = prep(np.stack(frames)) if stream == "rgb" else prep(dequantize(flows["farneback"]))
        clip = model.input_spec.frames
        clips = torch.stack([x[:, i:i + clip] for i in range(0, n - clip + 1, clip)])
        with torch.inference_mode():
            model(clips[:1])
            t0 = time.perf_counter()
            for i in range(0, len(clips), args.batch_size):
                model.forward_features(clips[i:i + args.batch_size])
            dt = time.perf_counter() - t0
        per_frame[stream] = dt / (len(clips) * clip)
        print(f"{stream + ' fwd':>10}: {len(clips) / dt:9.1f} clips/s of {name} "
              f"({1 / per_frame[stream]:.1f} frames/s)")
    forward = per_frame["rgb"] + per_frame["flow"]
    for method in METHODS:
        share = flow_s[method] / (flow_s[method] + forward)
        print(f"{'share':>10}: {method} flow is {100 * share:.1f}% of two-stream "
              f"extraction time (flow + both forward passes, per frame)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
