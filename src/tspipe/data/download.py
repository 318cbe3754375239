"""Turn an annotation set into a verified local video set, and a manifest that says so.

``download_all`` runs ``download_one`` over a thread pool. Each video's bytes go to a
``.part`` path (``download_sources``) and are renamed onto ``<out_dir>/<id>.<ext>`` only
when complete and (``verify_decodable``) one video frame decodes: a visible video file is
always whole. Transient errors (5xx, 429, resets, timeouts) are retried with exponential
backoff and full jitter; permanent ones are not. Every video ends as one manifest entry,
``ok``, ``missing`` (the source says it is gone) or ``failed`` (anything else), with the
reason; a bad video never stops the run.

The manifest (``downloads.json``) is rewritten atomically every ``_SAVE_EVERY``
completions and at the end; between rewrites each completion is appended to a journal
beside it (``downloads.json.journal``), so a killed run loses nothing it finished
(:mod:`tspipe.data.manifest`).
A rerun skips a video whose file still matches its entry's size and sha256.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from tspipe.config import DownloadConfig
from tspipe.data.annotations import Video
from tspipe.data.download_sources import (
    MIRROR_EXTS,
    VIDEO_EXTS,
    Source,
    SourceGone,
    check_mirror,
    content_kind,
    decode_problem,
    fetch,
    part_owner,
    part_path,
    plan_sources,
    remove_part,
)
from tspipe.data.manifest import (
    STATUSES,
    ManifestEntry,
    ManifestWriter,
    Status,
    compact_manifest,
    manifest_entries,
    read_manifest,
    write_manifest,
)
from tspipe.errors import DownloadError, UnsafeIdError
from tspipe.io import result_dict, safe_id, sha256_file
from tspipe.reporting import NullReporter, Reporter

log = logging.getLogger(__name__)

_SAVE_EVERY = 200  # completions between manifest rewrites (the journal covers the gap)
_FINAL_EXTS = tuple(dict.fromkeys(VIDEO_EXTS + MIRROR_EXTS))


@dataclass(frozen=True)
class DownloadResult:
    manifest: Path
    ok: int  # includes ``skipped``
    missing: int
    failed: int
    skipped: int  # already present and valid: nothing fetched
    bytes: int  # total size of the ok videos
    seconds: float
    summary: str  # "19000 ok, 980 missing, 14 failed"

    def metrics(self) -> dict[str, float]:
        m = {k: float(getattr(self, k)) for k in
             ("ok", "missing", "failed", "skipped", "bytes", "seconds")}
        m["downloaded"] = float(self.ok - self.skipped)
        return m

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


class _Outcome(NamedTuple):
    entry: ManifestEntry
    skipped: bool


def summarize(entries: Iterable[ManifestEntry]) -> str:
    """``"47 ok, 1 missing, 2 failed"``."""
    counts = dict.fromkeys(STATUSES, 0)
    for e in entries:
        counts[e.status] += 1
    return ", ".join(f"{counts[s]} {s}" for s in STATUSES)




# -- one video -----------------------------------------------------------------------------
def download_one(video: Video, cfg: DownloadConfig, out_dir: Path, *,
                 source_dir: Path | None = None, previous: ManifestEntry | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 manifest_dir: Path | None = None,
                 roots: Sequence[Path] | None = None) -> ManifestEntry:
    """Fetch one video into ``out_dir``; never raises for a problem of this video.

    ``previous`` is its manifest entry from an earlier run: if its file still matches
    (size and sha256) it is returned unchanged. ``manifest_dir`` is the folder entry paths
    are relative to (default: ``out_dir``). ``roots``: the folders local sources must lie
    in (with a folder mirror); None allows any path.
    """
    return _download(video, cfg, out_dir, source_dir, previous, sleep, manifest_dir,
                     roots).entry


def _download(video: Video, cfg: DownloadConfig, out_dir: Path, source_dir: Path | None,
              previous: ManifestEntry | None, sleep: Callable[[float], None],
              manifest_dir: Path | None, roots: Sequence[Path] | None = None) -> _Outcome:
    out_dir = Path(out_dir).resolve()
    manifest_dir = Path(manifest_dir).resolve() if manifest_dir is not None else out_dir
    url = video.url or ""
    try:
        video_id = safe_id(video.video_id)
    except UnsafeIdError as exc:
        return _Outcome(_failed(video.video_id, url, "failed", str(exc), 0), False)
    if previous is not None and _still_valid(previous, manifest_dir):
        return _Outcome(previous, True)
    try:
        sources = plan_sources(video_id, video.url, cfg, source_dir, roots)
    except SourceGone as exc:  # a folder mirror without it, and no url
        return _Outcome(_failed(video_id, exc.source, "missing", _reason(exc), 0), False)
    except DownloadError as exc:
        return _Outcome(_failed(video_id, exc.source, "failed", _reason(exc), 0), False)
    out_dir.mkdir(parents=True, exist_ok=True)
    attempt, last = 0, None
    while attempt <= cfg.retries:
        attempt += 1
        try:
            return _Outcome(_try_sources(video_id, sources, cfg, out_dir, manifest_dir,
                                         attempt), False)
        except SourceGone as exc:
            return _Outcome(_failed(video_id, exc.source, "missing", _reason(exc), attempt),
                            False)
        except DownloadError as exc:
            if exc.permanent:
                return _Outcome(_failed(video_id, exc.source, "failed", _reason(exc),
                                        attempt), False)
            last = exc
        except Exception as exc:
            # A bug or an odd library error must not end a 20k-video run: it is recorded
            # as this video's failure (with the traceback in the log), not swallowed.
            log.exception("video %r: unexpected error", video_id)
            return _Outcome(_failed(video_id, sources[-1].url, "failed",
                                    f"unexpected {type(exc).__name__}: {exc}", attempt), False)
        if attempt <= cfg.retries:
            sleep(_backoff(cfg, attempt))
    assert last is not None
    return _Outcome(_failed(video_id, last.source, "failed",
                            f"gave up after {attempt} attempts: {_reason(last)}", attempt),
                    False)


def _reason(exc: DownloadError) -> str:
    """The error's own words: the entry already names the video and the source."""
    return str(exc).removeprefix(f"video {exc.video_id!r} from {exc.source}: ")


def _backoff(cfg: DownloadConfig, attempt: int) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
    cap = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1))
    return random.uniform(0.0, cap)  # noqa: S311 -- jitter, not cryptography


def _failed(video_id: str, source: str, status: Status, reason: str,
            attempts: int) -> ManifestEntry:
    return ManifestEntry(video_id=video_id, source=source, path=None, bytes=0, sha256=None,
                         status=status, reason=reason, attempts=attempts)


def _still_valid(entry: ManifestEntry, manifest_dir: Path) -> bool:
    if entry.status != "ok" or not entry.path or not entry.sha256:
        return False
    path = manifest_dir / entry.path
    return (path.is_file() and path.stat().st_size == entry.bytes
            and sha256_file(path) == entry.sha256)


def _try_sources(video_id: str, sources: list[Source], cfg: DownloadConfig, out_dir: Path,
                 manifest_dir: Path, attempt: int) -> ManifestEntry:
    """One attempt: each source in order. A mirror that fails in any way falls through to
    the next source (the mirror only saves bandwidth); the last source's error decides."""
    for i, source in enumerate(sources):
        try:
            return _fetch_verified(video_id, source, cfg, out_dir, manifest_dir, attempt)
        except DownloadError as exc:
            if not source.mirror or i == len(sources) - 1:
                raise
            log.debug("video %r: mirror %s: %s", video_id, source.url, exc)
    raise AssertionError("plan_sources returns at least one source")


def _fetch_verified(video_id: str, source: Source, cfg: DownloadConfig, out_dir: Path,
                    manifest_dir: Path, attempt: int) -> ManifestEntry:
    part = part_path(out_dir, video_id, source)
    remove_part(part)
    try:
        got = fetch(video_id, source, part, cfg)
        size = got.stat().st_size
        # Named by kind and size only: the bytes of a text file may be a secret.
        if kind := content_kind(got):
            raise DownloadError(video_id, source.url, f"not a video: {_name(source)} "
                                f"({size} bytes, {kind})", permanent=True)
        if cfg.verify_decodable and (problem := decode_problem(got)):
            raise DownloadError(video_id, source.url, f"not a video: {_name(source)} "
                                f"({size} bytes, not decodable: {problem})", permanent=True)
        digest = sha256_file(got)
        ext = Path(got.name.removesuffix(".part")).suffix.lower() or ".mp4"
        final = out_dir / f"{video_id}{ext}"
        got.replace(final)
    finally:
        remove_part(part)
    for ext in _FINAL_EXTS:  # a copy from an older source with another container
        if (other := out_dir / f"{video_id}{ext}") != final:
            other.unlink(missing_ok=True)
    rel = Path(os.path.relpath(final, manifest_dir)).as_posix()
    return ManifestEntry(video_id=video_id, source=source.url, path=rel, bytes=size,
                         sha256=digest, status="ok", reason="", attempts=attempt)


def _name(source: Source) -> str:
    """The fetched file's name: a local path's, else the URL path's last part."""
    path = source.target if source.kind == "local" else urlsplit(source.url).path
    return Path(path).name or source.url


# -- many videos ---------------------------------------------------------------------------
def download_all(videos: Iterable[Video], cfg: DownloadConfig, out_dir: Path,
                 manifest_path: Path, *, source_dir: Path | None = None,
                 reporter: Reporter | None = None,
                 roots: Sequence[Path] | None = None, compact: bool = True) -> DownloadResult:
    """Download ``videos`` with ``cfg.workers`` threads into ``out_dir``, merging their
    entries into the manifest at ``manifest_path`` (other videos' entries are kept).
    ``roots``: the folders local sources must lie in (see ``download_one``).
    ``compact=False``: the entries stay in the journal beside the manifest (which
    :func:`read_manifest` reads) until :func:`compact_manifest`: a caller running many
    small batches rewrites the whole manifest once, not per batch (per batch it was
    quadratic in the videos: about 1 s a batch at 20k videos)."""
    t0 = time.monotonic()
    reporter = reporter or NullReporter()
    out_dir, manifest_path = Path(out_dir).resolve(), Path(manifest_path).resolve()
    check_mirror(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo: dict[str, Video] = {}
    for v in videos:
        if v.video_id in todo:
            log.warning("video %r listed twice; downloading it once", v.video_id)
        todo.setdefault(v.video_id, v)
    # A killed run's temp files; only this call's videos', as another call may be running.
    for stale in out_dir.glob("*.part"):
        if part_owner(stale.name) in todo:
            remove_part(stale)
    writer = ManifestWriter(manifest_path, _SAVE_EVERY, compact)
    reporter.start("download", len(todo))
    done: list[_Outcome] = []
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="download")
    try:
        futures = [pool.submit(_download, v, cfg, out_dir, source_dir,
                               writer.previous.get(k), time.sleep, manifest_path.parent,
                               roots)
                   for k, v in todo.items()]
        for fut in as_completed(futures):
            outcome = fut.result()
            done.append(outcome)
            writer.add(outcome.entry)
            e = outcome.entry
            if e.status != "ok":
                reporter.message(f"download {e.status}: video {e.video_id!r} from "
                                 f"{e.source or '-'}: {e.reason}", logging.WARNING)
            reporter.advance("download")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
    entries = [o.entry for o in done]
    summary = summarize(entries)
    log.info("download: %s (%d already present)", summary, sum(o.skipped for o in done))
    return DownloadResult(
        manifest=manifest_path,
        ok=sum(e.status == "ok" for e in entries),
        missing=sum(e.status == "missing" for e in entries),
        failed=sum(e.status == "failed" for e in entries),
        skipped=sum(o.skipped for o in done),
        bytes=sum(e.bytes for e in entries if e.status == "ok"),
        seconds=time.monotonic() - t0, summary=summary)


# The manifest's names, re-exported: callers read downloads through this module.
__all__ = ["STATUSES", "DownloadResult", "ManifestEntry", "Status", "compact_manifest",
           "download_all", "download_one", "manifest_entries", "read_manifest", "summarize",
           "write_manifest"]
