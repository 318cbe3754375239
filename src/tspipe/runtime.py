"""Where the numbers are computed: the device and the precision, decided once.

A door (or the stage it calls) resolves a params string (``auto``, ``cpu``, ``cuda``,
``cuda:N``) with :func:`resolve_device` and passes the ``torch.device`` down; the science
(extraction, TSP training, BMN / G-TAD) takes a ``torch.device`` and never reads a setting.
Mixed precision has one rule for every loop: :func:`precision` says what a device runs in,
:func:`autocast` enters it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

Amp = Literal["auto", "bf16", "fp16", "off"]
Precision = Literal["float32", "bf16", "fp16"]
AMP_CHOICES: tuple[Amp, ...] = ("auto", "bf16", "fp16", "off")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as torch reads it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def precision(device: torch.device, amp: str) -> Precision:
    """What ``device`` runs in under ``amp``: float32 on the CPU or with ``off`` (or
    ``float32``: a precision is its own answer); on CUDA ``auto`` is bf16 where the GPU
    supports it, else fp16."""
    if device.type != "cuda" or amp in ("off", "float32"):
        return "float32"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"amp {amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    return amp  # type: ignore[return-value]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast in :func:`precision` ``(device, amp)``; a no-op context in float32."""
    dtype = precision(device, amp)
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)
