"""The inference loop: CUDA-only settings stay off on the CPU, features not logits, progress,
skipping what the writer has."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import WINDOWS

from tspipe.errors import StageError
from tspipe.extract import MemoryWriter, extract_features
from tspipe.extract.runner import encode
from tspipe.models import build_encoder
from tspipe.runtime import autocast, resolve_device


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, task, total=None):
        self.calls.append(("start", task, total))

    def advance(self, task, n=1):
        self.calls.append(("advance", task, n))

    def metric(self, key, value, step=None):
        self.calls.append(("metric", key, value))

    def message(self, text, level=20):
        self.calls.append(("message", text))


def test_cuda_only_settings_are_off_on_the_cpu():
    cpu = torch.device("cpu")
    for amp in ("auto", "bf16", "fp16", "off"):
        assert isinstance(autocast(cpu, amp), contextlib.nullcontext)
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
    assert resolve_device("cpu") == cpu


def test_features_not_logits(videos, sampler):
    torch.manual_seed(0)
    classifier = build_encoder("r2plus1d_tiny", num_classes=5).eval()
    x = torch.randn(2, 3, 16, 64, 64)
    with torch.inference_mode():
        assert encode(classifier, x).shape == (2, 128)
    writer = MemoryWriter()
    extract_features(videos[:1], classifier, classifier.input_spec, sampler, writer=writer,
                     workers=0, device="cpu")
    assert writer.features[videos[0].video_id].shape == (WINDOWS[videos[0].video_id], 128)
    assert not classifier.training


def test_progress_and_resume_skip(videos, sampler, tiny):
    writer = MemoryWriter()
    writer.features[videos[0].video_id] = np.zeros((1, 128), np.float32)  # "already done"
    rec = Recorder()
    result = extract_features(videos, tiny, tiny.input_spec, sampler, writer=writer,
                              batch_size=2, workers=0, device="cpu", reporter=rec,
                              dtype="float16")
    assert result.skipped == [videos[0].video_id]
    assert result.written == [v.video_id for v in videos[1:]]
    assert result.clips == sum(WINDOWS[v.video_id] for v in videos[1:])
    assert rec.calls[0] == ("start", "extract", len(videos))
    assert sum(c[2] for c in rec.calls if c[0] == "advance") == len(videos)
    rates = [c[2] for c in rec.calls if c[:2] == ("metric", "extract/clips_per_s")]
    assert rates and all(r > 0 for r in rates)
    assert writer.features[videos[1].video_id].dtype == np.float16
    assert result.metrics()["clips_per_s"] == pytest.approx(result.clips_per_s)


def test_duplicate_ids_refused(videos, sampler, tiny):
    with pytest.raises(StageError, match="duplicate"):
        extract_features([videos[0], videos[0]], tiny, tiny.input_spec, sampler,
                         writer=MemoryWriter(), workers=0, device="cpu")


class NaNAt(torch.nn.Module):
    """Wraps an encoder; the features of its ``calls``-th forward passes (0-based) are NaN."""

    def __init__(self, inner: torch.nn.Module, calls: set[int]) -> None:
        super().__init__()
        self.inner, self.calls, self.n = inner, calls, 0
        self.input_spec = inner.input_spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.n in self.calls:
            out = torch.full_like(out, float("nan"))
        self.n += 1
        return out


def test_a_video_with_nan_features_fails_by_name_and_the_others_go_on(videos, sampler, tiny):
    # One clip per forward pass, videos in order (long: 3 clips, odd: 2, ...): pass 3 is
    # odd's first clip.
    writer = MemoryWriter()
    rec = Recorder()
    result = extract_features(videos, NaNAt(tiny, {3}), tiny.input_spec, sampler,
                              writer=writer, batch_size=1, workers=0, device="cpu",
                              reporter=rec)
    assert list(result.failed) == ["odd"]
    assert result.failed["odd"].startswith(f"128 of {2 * 128} feature values are not "
                                           "finite (NaN or inf), in 1 of 2 clips")
    assert result.written == ["long", "exact", "short"] and "odd" not in writer.features
    assert any("'odd' failed" in c[1] for c in rec.calls if c[0] == "message")
    assert sum(c[2] for c in rec.calls if c[0] == "advance") == len(videos)
    # A rerun tries only the failed video again.
    again = extract_features(videos, tiny, tiny.input_spec, sampler, writer=writer,
                             batch_size=1, workers=0, device="cpu")
    assert (again.written, sorted(again.skipped)) == (["odd"], ["exact", "long", "short"])


def test_features_past_float16s_range_are_refused_not_stored_as_inf(videos, sampler, tiny):
    class Loud(torch.nn.Module):  # features far past float16's largest value (65504)
        input_spec = tiny.input_spec

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return tiny(x) * 1e9 + 1e9

    half = MemoryWriter()
    result = extract_features(videos[:2], Loud(), tiny.input_spec, sampler, writer=half,
                              workers=0, device="cpu", dtype="float16")
    assert sorted(result.failed) == ["long", "odd"] and half.features == {}
    assert "exceed float16's range" in result.failed["long"]
    full = MemoryWriter()
    result = extract_features(videos[:2], Loud(), tiny.input_spec, sampler, writer=full,
                              workers=0, device="cpu", dtype="float32")
    assert result.failed == {} and all(np.isfinite(f).all() for f in full.features.values())
