"""Stage ``download``: every video of the ingested annotations fetched once into
``data/videos``, with a manifest (``data/manifest/downloads.json``) saying for each video
where it came from, its size and sha256, and ``ok | missing | failed`` with the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.data.annotations import Annotations, read_activitynet
from tspipe.data.download import (
    ManifestEntry,
    compact_manifest,
    download_all,
    manifest_entries,
    summarize,
    write_manifest,
)
from tspipe.io import atomic_write_json, file_stamp, result_dict, sha256_json
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch, Batching, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadStageResult:
    manifest: Path
    videos: int
    ok: int
    missing: int
    failed: int
    bytes: int
    summary: str

    def metrics(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("videos", "ok", "missing", "failed",
                                                      "bytes")}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


# The ingested annotations as parsed last in this process, with the file's stamp then:
# the batches of a run (tasks in one process) look their videos up in one parse, where a
# parse per batch made the stage quadratic at 20,000 videos (benchmarks/scale.py).
_PARSED: dict[Path, tuple[tuple, Annotations]] = {}
_PARSING = threading.Lock()


def _annotations(paths: RunPaths) -> Annotations:
    """The annotations the download stage fetches (read them, do not change them)."""
    with _PARSING:
        stamp = file_stamp(paths.annotations)
        cached = _PARSED.get(paths.annotations)
        if cached is None or cached[0] != stamp or not stamp:
            cached = (stamp, read_activitynet(paths.annotations))
            _PARSED[paths.annotations] = cached
        return cached[1]


def batches(params: Params, paths: RunPaths) -> list[Batch]:
    """Videos in id order, ``download.batch_size`` per batch; the key covers their urls."""
    ann = _annotations(paths)
    ids = sorted(ann.videos)
    size = params.download.batch_size
    out = []
    for i in range(0, len(ids), size):
        chunk = tuple(ids[i:i + size])
        out.append(Batch(chunk, sha256_json([[v, ann.videos[v].url] for v in chunk])))
    return out


def _declared_sha256(ann: Annotations, video_id: str) -> str | None:
    """A checksum the annotation file itself gives for the video (SynthActions does)."""
    value = ann.videos[video_id].extra.get("sha256")
    return value if isinstance(value, str) else None


def local_roots(params: Params, paths: RunPaths) -> list[Path]:
    """The folders a local source (a path, a ``file://`` URL, a link in a folder mirror)
    may lie in: the run directory, the folder of the annotation file ``dataset.annotations``
    names (ingest rebases its relative urls, so they still point there), each of
    ``download.local_roots`` (relative to the run directory) and, added by the planner, a
    folder ``download.mirror``. An annotation file's ``file:///etc/passwd`` or
    ``../../secret`` then fails as that video, by name, instead of being copied."""
    source = paths.resolve(params.dataset.annotations)
    extra = params.download.local_roots
    return [paths.root, source if source.is_dir() else source.parent,
            *(paths.resolve(folder) for folder in extra)]


def run_batch(params: Params, paths: RunPaths, batch: Batch, reporter: Reporter) -> Any:
    ann = _annotations(paths)
    declares = any(_declared_sha256(ann, vid) for vid in batch.ids)
    # A copy whose checksum differs from the one the annotations declare is stale: removed
    # here so that it is fetched again.
    entries = manifest_entries(paths.manifest) if declares else {}
    for vid in batch.ids:
        declared, entry = _declared_sha256(ann, vid), entries.get(vid)
        if declared and entry and entry.sha256 and entry.sha256 != declared and entry.path:
            (paths.manifest.parent / entry.path).unlink(missing_ok=True)
    result = download_all([ann.videos[v] for v in batch.ids], params.download, paths.videos,
                          paths.manifest, source_dir=paths.annotations_dir, reporter=reporter,
                          roots=local_roots(params, paths), compact=False)
    if not declares:
        return result
    entries = dict(manifest_entries(paths.manifest))  # changed below: a copy
    wrong = {vid: entries[vid] for vid in batch.ids if vid in entries
             and entries[vid].status == "ok" and _declared_sha256(ann, vid)
             and entries[vid].sha256 != _declared_sha256(ann, vid)}
    if wrong:
        for vid, entry in wrong.items():
            reason = (f"sha256 {entry.sha256[:12]}... differs from the annotation's "
                      f"{_declared_sha256(ann, vid)[:12]}...")
            reporter.message(f"download: video {vid!r} from {entry.source}: {reason}",
                             logging.WARNING)
            entries[vid] = replace(entry, status="failed", reason=reason)
        write_manifest(paths.manifest, entries)
    return result


def batch_done(params: Params, paths: RunPaths, batch: Batch) -> bool:
    """Every video of the batch has a manifest entry, and every ``ok`` one its file."""
    if not paths.manifest.exists():
        return False
    return _complete(paths, manifest_entries(paths.manifest), batch)


def status(params: Params, paths: RunPaths) -> list[tuple[Batch, bool]]:
    """Every batch and whether it is done, from one read of the manifest (read once per
    batch it cost O(batches x videos))."""
    entries = manifest_entries(paths.manifest) if paths.manifest.exists() else None
    return [(b, entries is not None and _complete(paths, entries, b))
            for b in batches(params, paths)]


def _complete(paths: RunPaths, entries: dict[str, ManifestEntry], batch: Batch) -> bool:
    for vid in batch.ids:
        entry = entries.get(vid)
        if entry is None:
            return False
        if entry.status == "ok" and not (paths.manifest.parent / entry.path).exists():
            return False
    return True


def finalize(params: Params, paths: RunPaths, reporter: Reporter) -> DownloadStageResult:
    """Counts over the manifest entries of the videos the annotations list now (the
    batches' journal folded into the manifest first, once)."""
    if paths.manifest.exists():
        compact_manifest(paths.manifest)
    ann = _annotations(paths)
    entries = manifest_entries(paths.manifest)
    mine = [entries[v] for v in sorted(ann.videos) if v in entries]
    counts = {s: sum(e.status == s for e in mine) for s in ("ok", "missing", "failed")}
    result = DownloadStageResult(
        manifest=paths.manifest, videos=len(ann.videos), ok=counts["ok"],
        missing=counts["missing"], failed=counts["failed"] + len(ann.videos) - len(mine),
        bytes=sum(e.bytes or 0 for e in mine if e.status == "ok"), summary=summarize(mine),
    )
    atomic_write_json(paths.metrics("download"), result.metrics())
    reporter.message(f"download: {result.summary}")
    return result


STAGE = Stage(
    name="download",
    help="Fetch every annotated video once (mirror, HTTP, yt-dlp, s3/gs, local); manifest.",
    sections=("download",),
    extra_params=("dataset.annotations",),  # its folder is a local root (local_roots)
    inputs=lambda params, paths: [paths.annotations],
    outputs=lambda params, paths: [paths.videos, paths.manifest, paths.metrics("download")],
    code=("tspipe.stages.download", "tspipe.data.download", "tspipe.data.manifest",
          "tspipe.data.download_sources"),
    batching=Batching(batches, run_batch, batch_done, finalize, status),
)
