"""Finished shards checked before they are trusted, and the checks a version must pass.

A shard of the gvf or extract stage is done when its report (``shard-NNNNN.json``, written
last) and its HDF5 file are there. Files can still be damaged after that: a copy cut short,
a disk that filled while syncing, a hand edit. :func:`shard_problem` says why a shard
cannot be trusted (its file does not open as HDF5, which is how a truncated one shows:
HDF5 records its end of file in the superblock; a video its report lists as done is not a
dataset of features; the report does not parse); the stages then remove it and extract
its videos again. Only metadata is read, so the check costs milliseconds per shard on
every plan, whatever the features weigh.

:func:`count_non_finite` is the one test that features are numbers: the runner fails a
video whose features hold NaN or inf before any writer sees them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger(__name__)

_SHOWN = 3


def count_non_finite(features: np.ndarray) -> int:
    """How many values of ``features`` are NaN or +-inf."""
    return int(features.size - np.count_nonzero(np.isfinite(features)))


def read_report(report: Path) -> dict[str, Any]:
    """A shard report as written (``ids``, ``failed``, ...); OSError or ValueError if it
    cannot be read."""
    doc = json.loads(report.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list) \
            or not isinstance(doc.get("failed"), dict):
        raise ValueError("fields 'ids' (a list) and 'failed' (an object) expected")
    return doc


def shard_problem(shard: Path, report: Path) -> str | None:
    """Why the shard ``shard`` (with its report ``report``) cannot be trusted, or None.

    Not started (neither file) and started (the HDF5 file alone, an interrupted merge's
    result, which resumes) are no problem. A report without its file, a file that HDF5
    cannot open, and a video the report counts as done (listed, not failed) that the file
    lacks or holds as an empty array, are.
    """
    if not shard.exists():
        return f"{shard}: missing, but its report {report.name} says it is done" \
            if report.exists() else None
    try:
        with h5py.File(shard, "r") as f:
            if not report.exists():
                return None
            doc = read_report(report)
            done = [v for v in doc["ids"] if v not in doc["failed"]]
            lacking = [v for v in done if not _holds_features(f.get(v))]
    except OSError as exc:
        return f"{shard}: not a readable HDF5 file, cut short or damaged ({exc})"
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        return f"{report}: unreadable shard report ({exc})"
    if lacking:
        return (f"{shard}: lacks {len(lacking)} of the {len(done)} videos its report "
                f"{report.name} lists as done ({', '.join(lacking[:_SHOWN])}"
                f"{', ...' if len(lacking) > _SHOWN else ''})")
    return None


def _holds_features(obj: object) -> bool:
    return isinstance(obj, h5py.Dataset) and obj.ndim in (1, 2) and obj.size > 0


def remove_shard(shard: Path, report: Path) -> None:
    """Remove a damaged shard: its report first (the marker that it is done), so a kill in
    between leaves a file the next check finds unreadable or resumes from, never a done
    shard without its features. Parts beside it (``<shard>.parts/``, whole videos written
    atomically) stay: the new extraction resumes from them."""
    report.unlink(missing_ok=True)
    shard.unlink(missing_ok=True)
    log.info("removed the damaged shard %s and its report", shard)


def retried(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The report of a shard whose failed videos were extracted again (``current``, whose
    other videos were skipped as already in the file), with what ``previous`` says of
    those: written, copied from an earlier version, clips and seconds."""
    before = set(previous["written"]) | set(previous.get("reused", {}))
    return {**current,
            "written": [*previous["written"], *current["written"]],
            "skipped": [v for v in current["skipped"] if v not in before],
            "reused": {**previous.get("reused", {}), **current.get("reused", {})},
            "clips": previous.get("clips", 0) + current.get("clips", 0),
            "seconds": previous.get("seconds", 0.0) + current.get("seconds", 0.0)}


def failures_message(failed: Mapping[str, tuple[str | None, str]]) -> str:
    """``video 'x' (shard-00000.h5): reason; ...`` for ``failed`` (video id -> (shard file
    name or None, reason)), the first few."""
    shown = [f"video {vid!r}" + (f" ({shard})" if shard else "") + f": {why}"
             for vid, (shard, why) in list(failed.items())[:_SHOWN]]
    more = len(failed) - _SHOWN
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def prepare_shard(shard: Path, report: Path, say: Callable[[str], None]
                  ) -> dict[str, Any] | None:
    """Before a shard runs: a damaged one (:func:`shard_problem`) is removed, which is
    said through ``say`` (a repair), and the report of a finished one is returned (its
    ``failed`` videos are the ones to extract again); None when it is not finished."""
    if why := shard_problem(shard, report):
        say(f"{why}: removing it and extracting its videos again (repair)")
        remove_shard(shard, report)
        return None
    return read_report(report) if report.exists() and shard.exists() else None


def shard_finished(shard: Path, report: Path, *, stage: str) -> bool:
    """The shard is done and can be trusted; a damaged one is named in the log (the run
    that follows repairs it: :func:`prepare_shard`)."""
    if why := shard_problem(shard, report):
        log.warning("%s: %s: it will be removed and its videos extracted again", stage, why)
        return False
    return report.exists() and shard.exists()


# The start of the reason a video fails with when its features hold NaN or inf
# (tspipe.extract.runner): the encoder's fault, not the video's.
NOT_FINITE = "feature values are not finite"


def blocking(failed: Mapping[str, tuple[str | None, str]], total: int
             ) -> dict[str, tuple[str | None, str]]:
    """The failures that keep a version from becoming current. A video that fails for its
    own input (it cannot be decoded, its flow file is missing) is data: named in the index,
    left out, and the version with the others is whole (at ActivityNet's size a few
    videos always fail, and must not hold 19,000 back). Features that are not finite are
    the encoder's fault, so any such video blocks; so does a version where every video
    failed."""
    if failed and len(failed) >= total:
        return dict(failed)
    return {vid: f for vid, f in failed.items() if NOT_FINITE in f[1]}


def to_retry(report: Mapping[str, Any]) -> bool:
    """Whether a finished shard's failed videos are extracted again on the next run: only
    the blocking kind (non-finite features). A video that failed for its own input fails
    the same way again, and retrying it would rewrite a finished shard on every rerun."""
    return any(NOT_FINITE in str(why) for why in report.get("failed", {}).values())


def not_whole(stage: str, version: str, failed: Mapping[str, tuple[str | None, str]],
              total: int, kept: str) -> str:
    """The message of a version whose failures block it (:func:`blocking`), which never
    becomes current: which failed and why, what stayed (``kept``), what to do."""
    return (f"{stage}: version {version[:12]} is not whole: {len(failed)} of {total} videos "
            f"failed: {failures_message(failed)}. {kept}. Fix the cause and run the stage "
            "again: it extracts the failed videos again and keeps the others")
