"""The download manifest (``downloads.json``): one entry per video (``ok``, ``missing`` or
``failed``, with its file, size, sha256 and reason), rewritten atomically, and between
rewrites a journal beside it (``downloads.json.journal``) of one appended line per
completion, so that a killed run loses nothing it finished.

:func:`manifest_entries` is the reader for stages that look entries up batch after batch
of a 20,000-video run: it parses the manifest once and then only the journal's new lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tspipe.errors import StageError
from tspipe.io import atomic_write_json, file_stamp

log = logging.getLogger(__name__)

Status = Literal["ok", "missing", "failed"]
STATUSES: tuple[Status, ...] = ("ok", "missing", "failed")


@dataclass(frozen=True)
class ManifestEntry:
    """One video's outcome. ``path`` is relative to the manifest's folder (posix)."""

    video_id: str
    source: str
    path: str | None
    bytes: int
    sha256: str | None
    status: Status
    reason: str
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManifestEntry:
        if data.get("status") not in STATUSES:
            raise ValueError(f"status {data.get('status')!r} is not one of {STATUSES}")
        return cls(video_id=str(data["video_id"]), source=str(data.get("source") or ""),
                   path=data.get("path"), bytes=int(data.get("bytes") or 0),
                   sha256=data.get("sha256"), status=data["status"],
                   reason=str(data.get("reason") or ""), attempts=int(data.get("attempts") or 0))


def _journal(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def read_manifest(path: str | Path) -> dict[str, ManifestEntry]:
    """Entries by video id; none if the file does not exist. Completions a killed run
    left in the journal beside it are included."""
    path = Path(path)
    entries = _read_rows(path) if path.exists() else {}
    entries.update(_read_journal(_journal(path)))
    return entries


def _read_rows(path: Path) -> dict[str, ManifestEntry]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["videos"]
        return {row["video_id"]: ManifestEntry.from_dict(row) for row in rows}
    except (ValueError, KeyError, TypeError) as exc:
        raise StageError(f"{path}: not a download manifest ({type(exc).__name__}: "
                         f"{exc}); delete it to start over") from exc


@dataclass
class _Parsed:
    manifest: tuple  # (inode, mtime, size) of the manifest when parsed
    journal_inode: int | None = None
    offset: int = 0  # bytes of the journal parsed (whole lines)
    lines: int = 0
    entries: dict[str, ManifestEntry] = field(default_factory=dict)


_PARSED: dict[Path, _Parsed] = {}
_PARSING = threading.Lock()  # batches run in threads


def manifest_entries(path: str | Path) -> dict[str, ManifestEntry]:
    """What :func:`read_manifest` returns, parsed once per manifest file (a rewrite is
    atomic: a new inode, parsed again) and then only the lines appended to its journal
    since: the batches of a stage run in one process share the work, where reading the
    whole of a 20,000-video manifest and journal per batch made them quadratic. The dict
    is shared and grows with the journal: read it, do not change it."""
    path = Path(path)
    with _PARSING:
        return _parsed(path).entries


def _parsed(path: Path) -> _Parsed:
    stamp, journal = file_stamp(path), _journal(path)
    jstamp = file_stamp(journal)  # (inode, mtime, size)
    parsed = _PARSED.get(path)
    if parsed is None or parsed.manifest != stamp or (
            jstamp and parsed.journal_inode not in (None, jstamp[0])) or (
            not jstamp and parsed.journal_inode is not None) or (
            jstamp and jstamp[2] < parsed.offset):
        parsed = _Parsed(stamp, entries=_read_rows(path) if stamp else {})
        _PARSED[path] = parsed
    if jstamp and jstamp[2] > parsed.offset:
        parsed.journal_inode = jstamp[0]
        with journal.open("rb") as fh:
            fh.seek(parsed.offset)
            data = fh.read(jstamp[2] - parsed.offset)
        whole = data[:data.rfind(b"\n") + 1]  # a torn last line waits for its end
        parsed.entries.update(_journal_entries(journal, whole.decode("utf-8"), parsed.lines))
        parsed.offset += len(whole)
        parsed.lines += whole.count(b"\n")
    return parsed


def _read_journal(path: Path) -> dict[str, ManifestEntry]:
    if not path.exists():
        return {}
    return _journal_entries(path, path.read_text(encoding="utf-8"), 0)


def _journal_entries(path: Path, text: str, before: int) -> dict[str, ManifestEntry]:
    """The entries of journal lines ``text`` (line numbers counted after ``before``)."""
    entries: dict[str, ManifestEntry] = {}
    for n, line in enumerate(text.splitlines(), before + 1):
        try:
            entry = ManifestEntry.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            # The last line of a killed run may be torn; its video is simply fetched again.
            log.warning("%s: line %d skipped (%s)", path, n, exc)
            continue
        entries[entry.video_id] = entry
    return entries


def compact_manifest(path: str | Path) -> Path:
    """Fold the journal beside the manifest into it (nothing to do without a journal)."""
    path = Path(path)
    with _locked(path.parent):
        if _journal(path).exists():
            write_manifest(path, read_manifest(path))
    return path


def write_manifest(path: str | Path, entries: Mapping[str, ManifestEntry]) -> Path:
    """Write all ``entries`` atomically, sorted by id; they replace any journal."""
    path = Path(path)
    rows = [entries[k].to_dict() for k in sorted(entries)]
    atomic_write_json(path, {"videos": rows})
    _journal(path).unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the manifest's folder (POSIX ``flock`` on the directory, so
    no lock file is left behind): calls sharing a manifest merge instead of overwriting."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class ManifestWriter:
    """Journal each completion (one appended, fsynced line); every ``every`` completions
    and on close rewrite the manifest as what is on disk plus this call's entries, so
    parallel calls (one per batch) on one manifest lose nothing of each other's.
    ``compact=False``: only the journal is written (:func:`compact_manifest` later)."""

    def __init__(self, path: Path, every: int, compact: bool = True) -> None:
        self.path, self.every, self.compact = path, every, compact
        self.mine: dict[str, ManifestEntry] = {}
        self._pending = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent):
            self.previous = manifest_entries(path)  # read only
            # A killed run's journal is folded in; a manifest with no journal beside it is
            # not rewritten unchanged (a full rewrite per batch: quadratic at 20k videos).
            if not path.exists() or (compact and _journal(path).exists()):
                write_manifest(path, self.previous)

    def add(self, entry: ManifestEntry) -> None:
        self.mine[entry.video_id] = entry
        with _locked(self.path.parent), _journal(self.path).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry.to_dict(), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            self._pending += 1
            if self.compact and self._pending >= self.every:
                self._rewrite()

    def close(self) -> None:
        if self.compact:
            with _locked(self.path.parent):
                self._rewrite()

    def _rewrite(self) -> None:
        write_manifest(self.path, {**read_manifest(self.path), **self.mine})
        self._pending = 0


__all__ = ["STATUSES", "ManifestEntry", "ManifestWriter", "Status", "compact_manifest",
           "manifest_entries", "read_manifest", "write_manifest"]
