"""One place for atomic writes, content hashing and ids that become file names."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tspipe.errors import UnsafeIdError

_CHUNK = 1 << 20
# Letters, digits and a few separators; YouTube ids use '-' and '_', also first (434 of
# ActivityNet v1.3's annotated videos in TSP's ground truth start with one, e.g.
# '-cwPzzcNpGs'). No '/', no '..', no leading '.' (hidden files).
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}$")


def safe_id(video_id: str, *, what: str = "video id") -> str:
    """Return ``video_id`` unchanged if it is safe as a single path component, else raise.

    Refuses empty ids, path separators, '..', absolute paths, leading dots, control
    characters and anything but ASCII letters, digits, '_', '-' and '.', so that
    ``root / safe_id(x)`` never leaves ``root`` and names the same file on every system.
    """
    if not isinstance(video_id, str) or not _SAFE_ID.fullmatch(video_id) or ".." in video_id:
        raise UnsafeIdError(
            f"{what} {video_id!r} cannot be used as a file name: use letters, digits, "
            "'_', '-' and '.', not starting with '.', no '..' and no '/'"
        )
    return video_id


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success.

    The temp file lives in the same directory (same filesystem, so the rename is atomic)
    and keeps ``dest``'s suffix unless ``suffix`` is given (encoders pick the container
    from it). On an exception the temp file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.tmp-", suffix=dest.suffix if suffix is None else suffix,
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp makes the file owner-only; give it the mode a plain open() would.
            tmp.chmod(0o666 & ~_umask())
        tmp.replace(dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a write() on a file object: say which file it was
            raise OSError(exc.errno, exc.strerror, str(dest)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp, tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(dest)


def atomic_write_text(dest: str | Path, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace variance: equal objects, equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def atomic_write_json(dest: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic_write_text(dest, text)


def file_stamp(path: str | Path) -> tuple[int, int, int] | tuple[()]:
    """(inode, mtime in ns, size) of a file, () if there is none: what changes when it is
    rewritten (an atomic write is a new inode), for caches of its parse."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return ()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def sha256_stream(fh: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    with Path(path).open("rb") as fh:
        return sha256_stream(fh)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Content hash of a JSON-able object (params, manifests): order of keys does not matter."""
    return sha256_bytes(canonical_json(obj).encode("utf-8"))


def result_dict(result: Any) -> dict[str, Any]:
    """A dataclass result as JSON-able dict (paths become strings)."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        return v

    return {f.name: conv(getattr(result, f.name)) for f in dataclasses.fields(result)}
