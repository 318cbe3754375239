"""Extraction benchmark: tspipe's extractor against the TSP reference's strategy and the model.

    python benchmarks/extract.py [--videos A.mp4 ...] [--size 112] [--batch-size 8]
                                 [--workers 1] [--threads N] [--repeat 1]
                                 [--encoder r2plus1d_tiny] [--device cpu] [--amp auto]
                                 [--tile 1] [--preprocess-on both]
                                 [--methods a,a_dev,a_fast,b,c,a_data,a_dev_data,b_data]

Same videos, same model (default ``r2plus1d_tiny``, seeded random weights; ``--size 112``
feeds it TSP's 112-pixel clips after the 128x171 resize), same batch size, on the same
device, measured in one run:

- ``a`` tspipe: ``tspipe.extract.extract_features`` in ``reference`` mode (decode each
  video once, pick frames by index, preprocess each kept frame once, pack windows of many
  videos per batch; DataLoader workers split the videos), preprocessing in the workers
  (``preprocess_on="host"``); ``a_dev``: the same with ``preprocess_on="device"`` (workers
  send uint8 frames at source size, converted, resized, cropped and normalized on
  ``--device``); ``a_fast``: ``fast`` mode, host preprocessing (for information);
- ``b`` the reference's strategy, re-created: a map-style Dataset of clips (TSP's
  ``EvalVideoDataset``: clip starts from the metadata's frame count, ``[::2]`` frame
  picking) whose ``__getitem__`` does what torchvision 0.5's ``read_video`` did: open the
  container, seek to the clip's start, decode video (and audio, if any) up to its end,
  convert every frame in range to full-size RGB, take ``[::2][:16]``, then the reference
  transform; a DataLoader with the same batch size and workers batches the clips;
- ``c`` the model alone, on clips decoded and preprocessed beforehand;
- ``a_data`` / ``b_data``: the two loaders alone (no model), the data paths compared;
  ``a_dev_data``: tspipe's uint8 loader, the copy to ``--device`` and the preprocessing
  there, no model.

clips/s = clips encoded per second of wall time, all videos together. Goals: a / b >= 5,
a / c >= 0.8. ``a_dev / a`` and ``a_dev_data / a_data`` compare where preprocessing runs;
``--preprocess-on host`` (or ``device``) leaves out the other placement's methods.

On a GPU (``--device cuda --encoder r2plus1d_34 --batch-size 64 --workers 14``) the model
runs as in extraction (eval, inference mode, ``channels_last_3d``, autocast ``--amp``);
``c`` then encodes clips already on the GPU, and the mean GPU utilisation (NVML, sampled
every 100 ms) during ``a`` and ``c`` is printed. ``--tile N`` lists every video N times
(under N ids): more clips from the same few files.

Default videos: SynthActions made here (20-30 s, ``--width`` x ``--height``, default
640x360), re-encoded the way TSP's inputs were (``--style tsp``: every video re-encoded
to 30 fps H.264 by FFmpeg with its defaults, i.e. x264's keyframe interval of 250 frames,
audio kept: here an AAC stereo track). ``--style synth`` keeps SynthActions' own files
(a keyframe every 2 s, no audio): the per-clip reader's best case.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.frame import PictureType
from torch.utils.data import DataLoader, Dataset

from tspipe.data.clip_sampler import ClipSampler
from tspipe.extract import (
    MemoryWriter,
    Preprocess,
    VideoInput,
    extract_features,
    make_loader,
    video_clips,
)
from tspipe.extract.runner import DeviceFrames, encode
from tspipe.models import KINETICS_112, TINY_64, build_encoder
from tspipe.runtime import autocast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", type=Path, help="30 fps videos (default: "
                        "SynthActions made here)")
    parser.add_argument("--synth-videos", type=int, default=3)
    parser.add_argument("--style", choices=("tsp", "synth"), default="tsp",
                        help="tsp: re-encoded as TSP's inputs (GOP 250, AAC audio); synth: "
                        "SynthActions' files (GOP 2 s, no audio)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--size", type=int, default=112, choices=(64, 112),
                        help="crop side fed to the tiny model (112: TSP's 128x171 -> 112)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (a, b)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the methods; "
                        "each method's best round is kept")
    parser.add_argument("--work-dir", type=Path, help="where SynthActions files are made")
    parser.add_argument("--encoder", default="r2plus1d_tiny",
                        help="registry encoder (seeded random weights: speed only)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                        help="autocast on CUDA, as extraction does")
    parser.add_argument("--tile", type=int, default=1, help="list each video this many times")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--preprocess-on", choices=("host", "device", "both"),
                        default="both", help="where tspipe's reference-mode preprocessing "
                        "runs: host (a, a_data), device (a_dev, a_dev_data) or both")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()
               and m.strip() not in SKIPPED_BY[args.preprocess_on]]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tspipe-bench-") as tmp:
        paths = args.videos or synth_videos(args.work_dir or Path(tmp), args.synth_videos,
                                            args.width, args.height, args.style)
        run(paths, size=args.size, batch_size=args.batch_size, workers=args.workers,
            repeat=args.repeat, encoder=args.encoder, device=torch.device(args.device),
            amp=args.amp, tile=args.tile, methods=methods)
    return 0


def synth_videos(work_dir: Path, n: int, width: int, height: int, style: str) -> list[Path]:
    from tspipe.config import SynthConfig
    from tspipe.data.synth import generate

    cfg = SynthConfig(videos=n, classes=2, seed=0, min_duration=20, max_duration=30, fps=30,
                      width=width, height=height, corpus_videos=0)
    folder = work_dir / f"synth-{width}x{height}"
    generate(cfg, folder)
    paths = sorted((folder / "videos").glob("*.mp4"))
    if style == "synth":
        return paths
    out = folder / "tsp-style"
    out.mkdir(exist_ok=True)
    return [p if p.exists() else tsp_style_copy(src, p)
            for src, p in ((src, out / src.name) for src in paths)]


def tsp_style_copy(src: Path, dest: Path) -> Path:
    """``src`` re-encoded as FFmpeg's defaults would (x264, keyframe every 250 frames,
    30 fps) with a 44.1 kHz stereo AAC track (a tone) beside it."""
    tmp = dest.with_suffix(".tmp.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        vin = inp.streams.video[0]
        video = out.add_stream("libx264", rate=30, options={"preset": "veryfast"})
        video.width, video.height = vin.codec_context.width, vin.codec_context.height
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=44100, layout="stereo")
        n = 0
        for frame in inp.decode(vin):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = n, Fraction(1, 30)
            frame.pict_type = PictureType.NONE  # the encoder picks keyframes (every 250)
            out.mux(video.encode(frame))
            n += 1
        out.mux(video.encode(None))
        samples = round(n / 30 * 44100)
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
        for i in range(0, samples, 1024):
            chunk = np.ascontiguousarray(np.stack([tone[i:i + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 44100, i, Fraction(1, 44100)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    tmp.replace(dest)
    return dest


METHODS = ("a", "a_dev", "a_fast", "b", "c", "a_data", "a_dev_data", "b_data")
SKIPPED_BY = {"host": ("a_dev", "a_dev_data"), "device": ("a", "a_data"), "both": ()}


class GpuUtilisation:
    """Mean NVML GPU utilisation while the block runs (sampled every 100 ms)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples = device, []
        self._stop = threading.Event()

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # no NVML: nothing to report
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.device.type == "cuda":
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def run(paths: list[Path], *, size: int, batch_size: int, workers: int, repeat: int,
        encoder: str = "r2plus1d_tiny", device: torch.device | None = None,
        amp: str = "auto", tile: int = 1, methods: list[str] | tuple[str, ...] = METHODS
        ) -> dict[str, float]:
    device = device or torch.device("cpu")
    spec = KINETICS_112 if size == 112 else TINY_64
    torch.manual_seed(0)
    overrides = {"input_spec": spec} if encoder == "r2plus1d_tiny" else {}
    model = build_encoder(encoder, **overrides).eval().to(device)
    spec = getattr(model, "input_spec", spec)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last_3d)
    sampler = ClipSampler(16, 15, 16)
    videos = [VideoInput(p.stem if tile == 1 else f"{p.stem}-{k}", p)
              for k in range(tile) for p in paths]
    prep = Preprocess.for_spec(spec, "reference")
    print(f"{len(videos)} videos ({len(paths)} files x {tile}), {encoder} at "
          f"{spec.size}x{spec.size} (resize {prep.resize}), batch {batch_size}, {workers} "
          f"workers, device {device}" + (f" ({torch.cuda.get_device_name(device)}, amp {amp})"
                                         if cuda else f", {torch.get_num_threads()} threads"))

    def forward(clips: torch.Tensor) -> int:
        x = clips.to(device, non_blocking=cuda)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, amp):  # type: ignore[arg-type]
            out = encode(model, x)
        return len(out.float().cpu())  # the features leave the device, as in extraction

    with torch.inference_mode():
        forward(torch.zeros(batch_size, 3, 16, spec.size, spec.size))  # warm-up

    def ours(mode: str, where: str = "host") -> Callable[[], int]:
        def method() -> int:
            writer = MemoryWriter()
            result = extract_features(videos, model, spec, sampler, writer=writer, mode=mode,
                                      batch_size=batch_size, workers=workers, device=device,
                                      amp=amp, preprocess_on=where)  # type: ignore[arg-type]
            return result.clips
        return method

    def reference() -> int:
        dataset = ReferenceClips([v.path for v in videos], prep)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                            pin_memory=cuda)
        with torch.inference_mode():
            return sum(forward(clips) for clips in loader)

    def ours_data() -> int:
        loader = make_loader(videos, sampler, prep, batch_size=batch_size, workers=workers,
                             device=device)
        return sum(len(batch.video_ids) for batch in loader)

    def ours_device_data() -> int:
        loader = make_loader(videos, sampler, prep, batch_size=batch_size, workers=workers,
                             device=device, raw_frames=True)
        assemble, n = DeviceFrames(prep, device), 0
        with torch.inference_mode():
            for batch in loader:
                clips = assemble(batch)
                n += 0 if clips is None else len(clips)
        if cuda:
            torch.cuda.synchronize(device)
        return n

    def reference_data() -> int:
        loader = DataLoader(ReferenceClips([v.path for v in videos], prep),
                            batch_size=batch_size, num_workers=workers)
        return sum(len(clips) for clips in loader)

    clips: torch.Tensor | None = None

    def model_only() -> int:
        nonlocal clips
        if clips is None:  # decoded once, outside the timing of every round but the first
            clips = torch.stack([c.clip for v in paths for c in video_clips(
                VideoInput(v.stem, v), sampler, prep)]).to(device)
            if cuda:
                torch.cuda.synchronize(device)
            return -1
        n = 0
        with torch.inference_mode():
            for _ in range(tile):
                for i in range(0, len(clips), batch_size):
                    n += forward(clips[i:i + batch_size])
        return n

    table = {"a": ("tspipe (reference mode)", ours("reference")),
             "a_dev": ("tspipe (reference, on device)", ours("reference", "device")),
             "a_fast": ("tspipe (fast mode)", ours("fast")),
             "b": ("reference strategy", reference),
             "c": ("model alone", model_only),
             "a_data": ("tspipe loader, no model", ours_data),
             "a_dev_data": ("tspipe uint8 loader + device prep", ours_device_data),
             "b_data": ("reference loader, no model", reference_data)}
    if "c" in methods:
        model_only()  # pre-decode
    # Rounds over all methods, best of each kept: a burst of load elsewhere on the machine
    # then costs every method a round, not one method its only run.
    rates = dict.fromkeys(methods, 0.0)
    util: dict[str, float | None] = {}
    for round_ in range(repeat):
        for key in methods:
            with GpuUtilisation(device) as gpu:
                t0 = time.perf_counter()
                n = table[key][1]()
                rate = n / (time.perf_counter() - t0)
            if rate > rates[key]:
                rates[key], util[key] = rate, gpu.mean
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()),
              flush=True)
    print(f"\n{'method':<46} clips/s (best of {repeat})" + ("   GPU util %" if cuda else ""))
    for key in methods:
        gpu = f"   {util[key]:.0f}" if cuda and util.get(key) is not None else ""
        print(f"{key + '  ' + table[key][0]:<46} {rates[key]:8.1f}{gpu}")

    def ratio(a: str, b: str, goal: str = "") -> None:
        if a in rates and b in rates and rates[b]:
            print(f"{a} / {b} = {rates[a] / rates[b]:.2f}" + (f"   (goal {goal})" if goal else ""))

    print()
    ratio("a", "b", ">= 5")
    ratio("a", "c", ">= 0.8")
    ratio("a_dev", "c", ">= 0.8")
    ratio("a_dev", "a")
    ratio("a_fast", "c")
    ratio("a_data", "b_data")
    ratio("a_dev_data", "a_data")
    return rates


class ReferenceClips(Dataset):
    """TSP's ``EvalVideoDataset``, re-created: one item per clip, each read on its own."""

    def __init__(self, paths: list[Path], prep: Preprocess, clip_length: int = 16,
                 frame_rate: int = 15, stride: int = 16) -> None:
        self.prep, self.clip_length, self.frame_rate = prep, clip_length, frame_rate
        self.items: list[tuple[Path, float, float]] = []
        for path in paths:
            with av.open(str(path)) as container:  # the metadata CSV's fps and frame count
                stream = container.streams.video[0]
                fps = float(stream.average_rate)
                n = stream.frames or sum(1 for _ in container.decode(stream))
            frame_idxs = np.arange(n)[::round(fps / frame_rate)]
            for start in frame_idxs[np.arange(0, len(frame_idxs) - clip_length + 1, stride)]:
                self.items.append((path, start / fps, fps))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> torch.Tensor:
        path, t_start, fps = self.items[idx]
        t_end = t_start + self.clip_length / self.frame_rate
        vframes = read_video(path, t_start, t_end)
        vframes = vframes[::round(fps / self.frame_rate)][:self.clip_length]
        if len(vframes) != self.clip_length:
            raise RuntimeError(f"{path}: clip at {t_start:.3f} s has {len(vframes)} frames")
        x = torch.from_numpy(vframes).permute(3, 0, 1, 2).to(torch.float32) / 255
        x = F.interpolate(x, size=self.prep.resize, mode="bilinear", align_corners=False)
        x = self.prep.spec.normalize(x[None])[0]
        h, w = x.shape[-2:]
        crop = self.prep.crop
        i, j = round((h - crop) / 2.0), round((w - crop) / 2.0)
        return x[..., i:i + crop, j:j + crop]


def read_video(path: Path, start: float, end: float) -> np.ndarray:
    """torchvision 0.5's ``read_video(path, start, end, pts_unit="sec")``: the container
    opened for this clip, a seek to the keyframe before ``start``, frames decoded until one
    is past ``end``, those in ``[start, end]`` converted to RGB at full size; the audio
    stream, if any, read the same way."""
    with av.open(str(path), metadata_errors="ignore") as container:
        video = _read_stream(container, container.streams.video[0], start, end)
        if container.streams.audio:
            for frame in _read_stream(container, container.streams.audio[0], start, end):
                frame.to_ndarray()
    return np.stack([frame.to_rgb().to_ndarray() for frame in video])


def _read_stream(container: av.container.InputContainer, stream: av.stream.Stream,
                 start: float, end: float) -> list:
    tb = stream.time_base
    start_pts, end_pts = math.floor(start / tb), math.ceil(end / tb)
    container.seek(max(start_pts - 1, 0), any_frame=False, backward=True, stream=stream)
    frames = {}
    for frame in container.decode(stream):
        frames[frame.pts] = frame
        if frame.pts >= end_pts:
            break
    return [frames[p] for p in sorted(frames) if start_pts <= p <= end_pts]


if __name__ == "__main__":
    sys.exit(main())
