"""Localization training speed: one epoch of BMN (and G-TAD) on ActivityNet-sized inputs.

    python benchmarks/localize_train.py [--videos 4926] [--feat-dim 512] [--batch-size 16]
                                        [--device cuda] [--models bmn,gtad] [--steps N]

Random features shaped like ActivityNet v1.3's validation set as BMN reads it (4,926
videos x 100 positions x C; C = 512 for R(2+1)D TSP features, 2,048 for others) and
targets from 1-3 random segments per video, so the loss has the real label statistics'
shape. Per model, measured in one run: seconds per epoch in float32 and under autocast
(bf16 on CUDA), and the ratio; BMN also with the reference's unfused BM layer (the
(N, C, S, T, T) intermediate) against the fused one. The data sit on the device: this
times the model, its loss and the optimizer, not a loader. On the CPU, use ``--videos 64``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from tspipe.localize.bmn import BMN
from tspipe.localize.losses import bmn_loss
from tspipe.localize.targets import BMNTargets, bmn_targets, stack_targets
from tspipe.localize.train import make_model, model_targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4926)
    parser.add_argument("--feat-dim", type=int, default=512)
    parser.add_argument("--scale", type=int, default=100, help="temporal scale T")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="bmn,gtad")
    parser.add_argument("--steps", type=int, default=0, help="stop each epoch after N steps "
                        "(0: the whole epoch); seconds per epoch are then extrapolated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    feats = torch.randn(args.videos, args.feat_dim, args.scale, generator=torch.Generator()
                        .manual_seed(args.seed)).to(device)
    targets = stack_targets([bmn_targets(_segments(rng), args.scale)
                             for _ in range(args.videos)], device=device)
    print(f"{args.videos} videos x {args.scale} x {args.feat_dim}, batch {args.batch_size}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                if device.type == "cuda" else
                                f", {torch.get_num_threads()} threads"))
    rows: dict[str, float] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        def build(name: str = name) -> torch.nn.Module:
            return make_model(name, args.feat_dim, args.scale)

        variants = {"fp32": (build, False)}
        if device.type == "cuda":
            variants["amp"] = (build, True)
        if name == "bmn":
            variants["fp32_unfused"] = (lambda: BMN(args.feat_dim, args.scale,
                                                    fused_bm=False), False)
        for variant, (make, amp) in variants.items():
            seconds = epoch_seconds(name, make, feats, targets, batch_size=args.batch_size,
                                    device=device, amp=amp, steps=args.steps)
            rows[f"{name}_{variant}"] = seconds
            print(f"{name:<5} {variant:<13} {seconds:8.1f} s/epoch", flush=True)
        if f"{name}_amp" in rows:
            print(f"{name}: fp32 / amp = {rows[f'{name}_fp32'] / rows[f'{name}_amp']:.2f}")
        if f"{name}_fp32_unfused" in rows:
            print(f"{name}: unfused / fused BM layer = "
                  f"{rows[f'{name}_fp32_unfused'] / rows[f'{name}_fp32']:.2f}")
    return 0


def _segments(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(1, 4))
    starts = rng.uniform(0, 0.8, n)
    return np.stack([starts, np.minimum(starts + rng.uniform(0.05, 0.5, n), 1.0)], axis=1)


def epoch_seconds(method: str, make: Callable[[], torch.nn.Module], feats: torch.Tensor,
                  targets: BMNTargets, *, batch_size: int, device: torch.device, amp: bool,
                  steps: int = 0) -> float:
    """Wall seconds of one training epoch (forward, loss, backward, Adam step)."""
    torch.manual_seed(0)
    model = make().to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    n = len(feats)
    order = torch.randperm(n, device=device)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if steps:
        batches = batches[:steps + 1]
    gen = torch.Generator(device=device).manual_seed(0)
    cast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
            else contextlib.nullcontext())

    def step(idx: torch.Tensor) -> None:
        with cast:
            out = model(feats[idx])
            t, mask = model_targets(method, out, BMNTargets(targets.iou_map[idx],
                                                            targets.start[idx],
                                                            targets.end[idx]),
                                    feats.shape[-1])
            loss = bmn_loss(out, t, mask, generator=gen).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up (cuDNN autotune, allocator)
    _sync(device)
    t0 = time.perf_counter()
    for idx in batches[1:]:
        step(idx)
    _sync(device)
    seconds = time.perf_counter() - t0
    done = len(batches) - 1
    return seconds * (-(-n // batch_size)) / done if done else seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
