"""Decode benchmark: tspipe's decoder against a per-clip reader and FFmpeg's own limit.

    python benchmarks/decode.py [--videos A.mp4 B.avi ...] [--repeat N] [--fps 15] [--size 112]

Every method turns each video into 112x112 RGB frames at 15 fps:

- ``ours[<backend>]``: ``tspipe.data.video.decode`` with each available backend.
- ``per-clip``: a reader in the style of the TSP reference (``torchvision.io.read_video``
  per clip): for every 16-frame clip (stride 16) it re-opens the container, seeks,
  decodes the clip's video *and audio*, converts full-size frames to RGB, picks the clip's
  frames and resizes them with ``torch.nn.functional.interpolate``.
- ``limit``: FFmpeg alone through PyAV, no Python per-frame work beyond pulling frames: a
  filter graph ``fps=15,scale=112:112,format=rgb24`` fed by the threaded decoder, frames
  not kept (``ffmpeg -vf fps=15,scale=112:112 -f null -``).

Default videos: SynthActions files made here (``tspipe.data.synth``, 30 fps 320x240) plus
the six real samples from ``shared/data/videos`` when present. frames/s = output frames
(at 15 fps) per second of wall time, best of ``--repeat`` runs, all videos together.
Goals: ours / limit >= 0.8, ours / per-clip >= 5.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from tspipe.data.video import available_backends, decode, open_reader
from tspipe.data.video.decode import timed_frames

CLIP_FRAMES = 16
SHARED_VIDEOS = [Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos",
                 Path("/work/shared/data/videos")]
# Decoded frame counts from shared/data/videos/README.md: "correct" means these.
README_FRAMES = {"bikes.mp4": 250, "box.mp4": 455, "vtest.avi": 795, "tree.avi": 68,
                 "cityCC0.mpg": 190, "cup_vp9.webm": 217}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", type=Path, help="videos to decode "
                        "(default: SynthActions made here + the real samples)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; best kept")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--size", type=int, default=112, help="output side, pixels")
    parser.add_argument("--synth-videos", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, help="where SynthActions files are made "
                        "(reused when present; default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tspipe-bench-") as tmp:
        videos = args.videos or default_videos(args.work_dir or Path(tmp), args.synth_videos)
        run(videos, fps=args.fps, size=(args.size, args.size), repeat=args.repeat)
    return 0


def default_videos(work_dir: Path, n_synth: int) -> list[Path]:
    from tspipe.config import SynthConfig
    from tspipe.data.synth import generate

    cfg = SynthConfig(videos=n_synth, classes=2, seed=0, min_duration=20, max_duration=30,
                      fps=30, width=320, height=240, corpus_videos=0)
    generate(cfg, work_dir / "synth")
    synth = sorted((work_dir / "synth" / "videos").glob("*.mp4"))
    shared = next((d for d in SHARED_VIDEOS if d.is_dir()), None)
    real = sorted(p for p in shared.iterdir() if p.name in README_FRAMES) if shared else []
    return synth + real


def run(videos: list[Path], *, fps: float, size: tuple[int, int], repeat: int) -> None:
    backends = [name for name, why in available_backends().items() if why is None]
    methods: dict[str, Callable[[Path], int]] = {
        **{f"ours[{b}]": _ours(b, fps, size) for b in backends},
        "per-clip": lambda p: per_clip(p, fps, size),
        "limit": lambda p: ffmpeg_limit(p, fps, size),
    }
    timings: dict[tuple[str, Path], tuple[float, int]] = {}  # (method, video) -> (s, frames)
    failed: dict[str, list[str]] = {m: [] for m in methods}
    print(f"{len(videos)} videos -> {size[0]}x{size[1]} RGB at {fps:g} fps, best of {repeat}")
    print(f"{'video':<28}" + "".join(f"{m:>18}" for m in methods) + "   (frames/s)")
    for path in videos:
        row = f"{path.name[:27]:<28}"
        for name, method in methods.items():
            try:
                timings[name, path] = _best(method, path, repeat)
            except Exception as exc:  # a backend that fails on a file is a finding
                reason = str(exc).replace(f"{path}: ", "").splitlines()[0][:100]
                failed[name].append(f"{path.name}: {reason}")
                row += f"{'fail':>18}"
                continue
            row += f"{_rate(timings, name, [path]):>18.0f}"
        print(row, flush=True)
    rate = {m: _rate(timings, m, videos) for m in methods}
    print(f"{'all videos':<28}" + "".join(f"{rate[m]:>18.0f}" for m in methods))
    for name, problems in failed.items():
        for problem in problems:
            print(f"  {name} failed on {problem}")
    ours = rate["ours[pyav]"]
    print(f"\nours[pyav] / limit    = {ours / rate['limit']:.2f}   (goal >= 0.8)")
    print(f"ours[pyav] / per-clip = {ours / rate['per-clip']:.2f}   (goal >= 5)")
    print_backend_check(videos, backends, timings, failed)


def _rate(timings: dict[tuple[str, Path], tuple[float, int]], method: str,
          videos: list[Path]) -> float:
    """Output frames per second over ``videos`` (those the method decoded)."""
    done = [timings[method, v] for v in videos if (method, v) in timings]
    seconds = sum(s for s, _ in done)
    return sum(n for _, n in done) / seconds if seconds else 0.0


def print_backend_check(videos: list[Path], backends: list[str],
                        timings: dict[tuple[str, Path], tuple[float, int]],
                        failed: dict[str, list[str]]) -> None:
    """Each backend's speed on the real samples and whether it decodes them correctly: the
    README's frame count, strictly increasing times, and no failure."""
    real = [p for p in videos if p.name in README_FRAMES]
    if not real:
        return
    print(f"\nbackend      frames/s  correct on the {len(real)} real samples?  (frames/s over "
          "the samples it decodes)")
    for name in backends:
        problems = [f for f in failed[f"ours[{name}]"] if f.split(":")[0] in README_FRAMES]
        for path in real:
            if any(f.startswith(path.name) for f in problems):
                continue
            with open_reader(path, name) as reader:
                timed, timeline = timed_frames(reader, (32, 32))
                times = [t for t, _ in timed]
            if timeline.count != README_FRAMES[path.name]:
                problems.append(f"{path.name}: {timeline.count} frames, not "
                                f"{README_FRAMES[path.name]}")
            if any(b <= a for a, b in itertools.pairwise(times)):
                problems.append(f"{path.name}: times not increasing")
        verdict = "yes" if not problems else "no: " + "; ".join(problems)
        print(f"{name:<12} {_rate(timings, f'ours[{name}]', real):>8.0f}  {verdict}")


def _ours(backend: str, fps: float, size: tuple[int, int]) -> Callable[[Path], int]:
    def method(path: Path) -> int:
        n = 0
        for _ in decode(path, fps=fps, size=size, backend=backend):
            n += 1
        return n
    return method


def _best(method: Callable[[Path], int], path: Path, repeat: int) -> tuple[float, int]:
    best, n = math.inf, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = method(path)
        best = min(best, time.perf_counter() - t0)
    return best, n


def ffmpeg_limit(path: Path, fps: float, size: tuple[int, int]) -> int:
    """FFmpeg decodes, drops/repeats to ``fps`` and scales; Python only pulls frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        graph = av.filter.Graph()
        src = graph.add_buffer(template=stream)
        rate = graph.add("fps", f"fps={Fraction(fps).limit_denominator(1001)}")
        scale = graph.add("scale", f"{size[1]}:{size[0]}:flags=area")
        fmt = graph.add("format", "rgb24")
        sink = graph.add("buffersink")
        src.link_to(rate)
        rate.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        n = 0
        for frame in container.decode(stream):
            graph.push(frame)
            n += _drain(graph)
        graph.push(None)
        n += _drain(graph)
    return n


def _drain(graph: av.filter.Graph) -> int:
    n = 0
    while True:
        try:
            graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return n
        n += 1


def per_clip(path: Path, fps: float, size: tuple[int, int]) -> int:
    """The TSP reference's way: one container open + seek + full decode per clip."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration \
            else container.duration / av.time_base
    n_out = math.ceil(duration * fps - 1e-6)
    n = 0
    for start in range(0, n_out, CLIP_FRAMES):
        t0, t1 = start / fps, min(n_out, start + CLIP_FRAMES) / fps
        video, times = _read_clip(path, t0, t1)
        if not video:
            continue
        # Resample to fps by time (nearest earlier frame), then resize as tensors.
        pick = [max(0, int(np.searchsorted(times, t0 + k / fps, side="right")) - 1)
                for k in range(round((t1 - t0) * fps))]
        clip = torch.from_numpy(np.stack([video[i] for i in pick])).permute(0, 3, 1, 2)
        resized = torch.nn.functional.interpolate(clip.float(), size=size, mode="bilinear",
                                                  align_corners=False)
        n += resized.to(torch.uint8).shape[0]
    return n


def _read_clip(path: Path, t0: float, t1: float) -> tuple[list[np.ndarray], list[float]]:
    """Like ``torchvision.io.read_video(start_pts=t0, end_pts=t1, pts_unit="sec")``: seek,
    then decode video and audio packets up to ``t1``, converting every video frame."""
    video: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        start = stream.start_time or 0
        container.seek(start + int(t0 / tb), stream=stream, backward=True)
        streams = [stream, *container.streams.audio[:1]]
        for packet in container.demux(*streams):
            for frame in packet.decode():
                if packet.stream.type == "audio":
                    frame.to_ndarray()
                    continue
                t = (frame.pts - start) * tb if frame.pts is not None else 0.0
                if t >= t1:
                    return video, times
                if t >= t0 - 1.0:  # keep a margin, as read_video does
                    video.append(frame.to_ndarray(format="rgb24"))
                    times.append(t)
    return video, times


if __name__ == "__main__":
    sys.exit(main())
