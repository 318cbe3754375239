"""Where a video's bytes come from: pick the sources for a video, fetch one into a temp path.

A video's ``url`` decides the source: YouTube and other video sites go through yt-dlp,
URLs ending in a video extension are streamed over HTTP, ``s3://``/``gs://`` (and any other
allowed fsspec protocol) through fsspec, plain paths and ``file://`` are copied. A mirror
root (``DownloadConfig.mirror``) is tried first as ``<mirror>/<video_id>.<ext>``.

Fetchers write only into the temp path ``part_path`` names (``<id><ext>.part``, or a
``<id>.dl.part`` folder for yt-dlp) and raise ``DownloadError``:
``SourceGone`` when the source says the video is gone (404/410, unavailable, private,
removed), ``permanent=True`` for what retrying cannot fix, ``permanent=False`` otherwise.
``decode_problem`` says whether a fetched file is a video at all.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import av

from tspipe.config import DownloadConfig
from tspipe.data.video.header import open_container
from tspipe.errors import DownloadError, VideoError

log = logging.getLogger(__name__)

SourceKind = Literal["ytdlp", "http", "fsspec", "local"]

# A path ending in one of these is a file to stream, not a page for yt-dlp to read.
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".m4v")
MIRROR_EXTS = (".mp4", ".mkv", ".webm")
_YOUTUBE_HOSTS = ("youtube.com", "youtu.be", "youtube-nocookie.com")
_VIDEO_SITES = ("vimeo.com", "dailymotion.com", "facebook.com", "instagram.com",
                "twitter.com", "x.com", "tiktok.com", "twitch.tv", "bilibili.com")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_CHUNK = 1 << 20
_TRANSIENT_HTTP = {408, 425, 429}
_GONE_HTTP = {404, 410}
# The shared opener once quoted a file's first bytes ("(starts b'...')"); any such quote
# is cut from a reason, so a text file's secret never reaches the manifest or the catalog.
_QUOTED_HEAD = re.compile(r"\s*\(starts b?['\"].*$", re.S)

# yt-dlp reports everything as DownloadError text; these decide what it means. Checked in
# this order: YouTube's rate limit says "Video unavailable ... try again later".
_YTDLP_TRANSIENT = ("try again later", "http error 429", "http error 5", "timed out",
                    "connection reset", "connection refused", "connection aborted",
                    "incomplete", "temporary failure", "not a bot", "remote end closed")
_YTDLP_GONE = ("video unavailable", "private video", "video is private",
               "this video has been removed", "no longer available", "does not exist",
               "account associated with this video has been terminated",
               "http error 404", "http error 410")
_YTDLP_PERMANENT = ("unsupported url", "http error 403", "confirm your age",
                    "not available in your country", "members-only", "drm protected",
                    "requested format is not available", "ffmpeg is not installed")


class SourceGone(DownloadError):
    """The source says the video is gone (404/410, unavailable, private, removed)."""

    def __init__(self, video_id: str, source: str, message: str) -> None:
        super().__init__(video_id, source, message, permanent=True)


@dataclass(frozen=True)
class Source:
    """One place to fetch a video from. ``url`` is what the manifest records (as written in
    the annotations, or the mirror's URL); ``target`` is what is fetched (a resolved path,
    a normalized YouTube URL)."""

    url: str
    target: str
    kind: SourceKind
    mirror: bool = False


def plan_sources(video_id: str, url: str | None, cfg: DownloadConfig,
                 source_dir: Path | None = None,
                 roots: Sequence[Path] | None = None) -> list[Source]:
    """The sources to try for one video, in order: the mirror's candidates, then ``url``.

    Raises a permanent ``DownloadError`` for a scheme outside ``cfg.allowed_schemes``,
    when there is nothing to try at all, and (``roots`` given) for a local file whose real
    path (links followed) lies outside ``roots`` and a folder ``cfg.mirror``.
    """
    sources = mirror_sources(video_id, cfg)
    if url:
        sources.append(_source_for(video_id, url.strip(), cfg, source_dir, mirror=False))
    if not sources:
        raise _nothing_to_try(video_id, cfg)
    if roots is not None:
        allowed = allowed_roots(roots, cfg)
        for source in sources:
            if source.kind == "local":
                _check_inside(video_id, source, allowed)
    return sources


def _nothing_to_try(video_id: str, cfg: DownloadConfig) -> DownloadError:
    """No url and no mirror file: a folder mirror without the video means the video is
    gone (``missing``, as a 404 from a URL mirror); no mirror at all, or a mirror folder
    that does not exist, is a setting to fix (``failed``)."""
    folder = _mirror_folder(cfg)
    if folder is None:
        return DownloadError(video_id, "-", "no url and no mirror configured",
                             permanent=True)
    if not folder.is_dir():
        return DownloadError(video_id, str(folder), f"no url, and the mirror folder {folder} "
                             "(download.mirror) does not exist", permanent=True)
    names = "/".join(f"{video_id}{ext}" for ext in MIRROR_EXTS)
    return SourceGone(video_id, str(folder), f"not in the mirror folder ({names}) and the "
                      "annotations give no url")


def allowed_roots(roots: Sequence[Path], cfg: DownloadConfig) -> list[Path]:
    """``roots`` and a folder mirror, as real paths: where local sources may lie."""
    folder = _mirror_folder(cfg)
    found = [*roots, *([folder] if folder is not None else [])]
    return list(dict.fromkeys(Path(r).resolve() for r in found))


def _check_inside(video_id: str, source: Source, roots: Sequence[Path]) -> None:
    real = Path(source.target).resolve()
    if any(real.is_relative_to(root) for root in roots):
        return
    # ".." folded, links not followed (Path.resolve follows them)
    plain = Path(os.path.abspath(source.target))  # noqa: PTH100
    link = (f" (a link to {real})" if real != plain
            else f" (that is {real})" if str(real) != source.target else "")
    raise DownloadError(video_id, source.url,
                        f"local path {source.target}{link} is outside the allowed local "
                        f"roots: {', '.join(map(str, roots))}; add the folder to "
                        "download.local_roots", permanent=True)


def mirror_sources(video_id: str, cfg: DownloadConfig) -> list[Source]:
    """``<mirror>/<video_id>.<ext>`` for each mirror extension; for a folder mirror only
    the files that exist (so a miss costs no copy attempt)."""
    if not cfg.mirror:
        return []
    root = cfg.mirror.rstrip("/")
    if urlsplit(root).scheme not in ("", "file") and not _is_windows_drive(root):
        return [_source_for(video_id, f"{root}/{quote(video_id)}{ext}", cfg, None,
                            mirror=True) for ext in MIRROR_EXTS]
    folder = _mirror_folder(cfg)
    assert folder is not None
    return [Source(str(p), str(p), "local", mirror=True)
            for p in (folder / f"{video_id}{ext}" for ext in MIRROR_EXTS) if p.is_file()]


def _mirror_folder(cfg: DownloadConfig) -> Path | None:
    """The folder of a local (path or ``file://``) mirror; None for none or a URL."""
    root = (cfg.mirror or "").rstrip("/")
    if not root or (urlsplit(root).scheme not in ("", "file")
                    and not _is_windows_drive(root)):
        return None
    return Path(unquote(urlsplit(root).path) if root.startswith("file:") else root
                ).expanduser()


def check_mirror(cfg: DownloadConfig) -> None:
    """Refuse a mirror whose scheme is not allowed, once, before any video is tried."""
    if cfg.mirror:
        _source_for("<mirror>", f"{cfg.mirror.rstrip('/')}/x.mp4", cfg, None, mirror=True)


def _is_windows_drive(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z]:[\\/]", text))


def _source_for(video_id: str, url: str, cfg: DownloadConfig, source_dir: Path | None, *,
                mirror: bool) -> Source:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    kind: SourceKind
    if scheme == "youtube" or (not scheme and _YOUTUBE_ID.match(url)
                               and not _local_path(url, source_dir).exists()):
        name, kind = "youtube", "ytdlp"
        target = f"https://www.youtube.com/watch?v={parts.path if scheme else url}"
    elif scheme in ("http", "https") and _host_in(host, _YOUTUBE_HOSTS):
        name, kind, target = "youtube", "ytdlp", url
    elif scheme in ("http", "https"):
        name, target = scheme, url
        direct = parts.path.lower().endswith(VIDEO_EXTS) and not _host_in(host, _VIDEO_SITES)
        kind = "http" if direct else "ytdlp"
    elif not scheme or _is_windows_drive(url):
        name, kind, target = "local", "local", str(_local_path(url, source_dir))
    elif scheme == "file":
        if host not in ("", "localhost"):
            raise DownloadError(video_id, url, f"file URL on another host {host!r}",
                                permanent=True)
        name, kind = "file", "local"
        target = str(_local_path(unquote(parts.path), source_dir))
    else:
        name, kind, target = scheme, "fsspec", url
    if name not in cfg.allowed_schemes:
        allowed = ", ".join(cfg.allowed_schemes)
        raise DownloadError(video_id, url, f"scheme {name!r} is not allowed "
                            f"(download.allowed_schemes: {allowed})", permanent=True)
    return Source(url, target, kind, mirror)


def _host_in(host: str, domains: Sequence[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def _local_path(path: str, source_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or source_dir is None else source_dir / p


def part_path(out_dir: Path, video_id: str, source: Source) -> Path:
    """The temp path a fetch writes: a file ``<id><ext>.part``, or for yt-dlp (which picks
    the extension itself) a folder ``<id>.dl.part``."""
    if source.kind == "ytdlp":
        return out_dir / f"{video_id}.dl.part"
    suffix = Path(urlsplit(source.target).path if source.kind != "local"
                  else source.target).suffix.lower()
    return out_dir / f"{video_id}{suffix if suffix in VIDEO_EXTS else '.mp4'}.part"


def part_owner(name: str) -> str:
    """The video id of a temp name: ``<id><ext>.part`` or ``<id>.dl.part``."""
    stem = name.removesuffix(".part")
    return stem.removesuffix(".dl") if stem.endswith(".dl") else stem.rsplit(".", 1)[0]


def remove_part(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def content_kind(path: Path) -> str | None:
    """``"empty file"``, ``"HTML"``, ``"JSON"``, ``"XML"`` or ``"text"`` for a file that
    cannot be a video (an error page, a listing, notes), from its first KiB; None for
    binary data (maybe a video). Only the kind is reported: never the file's bytes."""
    with path.open("rb") as fh:
        head = fh.read(1024)
    if not head:
        return "empty file"
    # Every container tspipe reads starts with binary headers (MP4 box sizes, EBML, RIFF).
    if any(b < 9 or (13 < b < 32 and b != 27) for b in head):
        return None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("<!doctype html", "<html")) or "<html" in text:
        return "HTML"
    if text.startswith("<?xml"):
        return "XML"
    return "JSON" if text.startswith(("{", "[")) else "text"


def decode_problem(path: Path) -> str | None:
    """Why ``path`` is not a decodable video, or None: the shared opener's specific reason
    (empty, truncated, no video stream, ...), or no frame decoding. The reason never
    quotes the file's bytes (a text file's first bytes may be a secret)."""
    try:
        with open_container(path) as container:
            for _frame in container.decode(video=0):
                return None
            return "no frame decodes"
    except VideoError as exc:
        return _QUOTED_HEAD.sub("", str(exc).removeprefix(f"{path}: "))
    except (av.FFmpegError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def fetch(video_id: str, source: Source, part: Path, cfg: DownloadConfig) -> Path:
    """Fetch ``source`` into ``part``; return the file holding the complete video."""
    fetcher = {"http": _fetch_http, "fsspec": _fetch_fsspec, "local": _fetch_local,
               "ytdlp": _fetch_ytdlp}[source.kind]
    return fetcher(video_id, source, part, cfg)


# -- HTTP --------------------------------------------------------------------------------
class _AllowlistRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to http(s) in the allowlist: urllib would follow one to
    ftp://, and a server must never make tspipe read a local file (file://, even where
    download.allowed_schemes allows local sources) or a scheme the user refused."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = allowed

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https") or scheme not in self.allowed:
            # Named by the Location header only; the response body is never read.
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to {newurl} refused: a download follows only "
                "http(s) redirects that download.allowed_schemes allows", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_http(video_id: str, source: Source, part: Path, cfg: DownloadConfig) -> Path:
    opener = urllib.request.build_opener(_AllowlistRedirects(cfg.allowed_schemes))
    request = urllib.request.Request(source.target, headers={"User-Agent": "tspipe"})  # noqa: S310 -- scheme checked against the allowlist in _source_for
    try:
        with opener.open(request, timeout=cfg.timeout_s) as resp, part.open("wb") as fh:
            expected = resp.headers.get("Content-Length")
            written = 0
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                fh.write(chunk)
                written += len(chunk)
    except urllib.error.HTTPError as exc:
        raise _http_status_error(video_id, source.url, exc.code, str(exc.reason)) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        # Refused, reset, timed out, closed mid-body (IncompleteRead): worth another try.
        raise DownloadError(video_id, source.url, f"{type(exc).__name__}: {exc}",
                            permanent=False) from exc
    if expected is not None and expected.isdigit() and written != int(expected):
        raise DownloadError(video_id, source.url, f"got {written} of {expected} bytes",
                            permanent=False)
    return part


def _http_status_error(video_id: str, url: str, code: int, reason: str) -> DownloadError:
    message = f"HTTP {code} {reason}"
    if code in _GONE_HTTP:
        return SourceGone(video_id, url, message)
    return DownloadError(video_id, url, message,
                         permanent=not (code >= 500 or code in _TRANSIENT_HTTP))


# -- fsspec (s3://, gs://, ...) and local files -----------------------------------------
def _fetch_fsspec(video_id: str, source: Source, part: Path, cfg: DownloadConfig) -> Path:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(source.target)
    except (ImportError, ValueError) as exc:
        raise DownloadError(video_id, source.url, f"no filesystem for this URL ({exc}); "
                            "s3:// needs the 's3' extra, gs:// needs gcsfs",
                            permanent=True) from exc
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as src, part.open("wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    except FileNotFoundError as exc:
        raise SourceGone(video_id, source.url, "no such object") from exc
    except PermissionError as exc:
        raise DownloadError(video_id, source.url, f"access denied: {exc}",
                            permanent=True) from exc
    except Exception as exc:
        # Each fsspec backend raises its own types (botocore, aiohttp, google.auth): a
        # failure we cannot classify is treated as transient and retried a bounded number
        # of times, then reported.
        raise DownloadError(video_id, source.url, f"{type(exc).__name__}: {exc}",
                            permanent=False) from exc
    if size is not None and part.stat().st_size != size:
        raise DownloadError(video_id, source.url,
                            f"got {part.stat().st_size} of {size} bytes", permanent=False)
    return part


def _fetch_local(video_id: str, source: Source, part: Path, cfg: DownloadConfig) -> Path:
    src = Path(source.target)
    if not src.is_file():
        raise SourceGone(video_id, source.url, f"no such file {src}")
    try:
        shutil.copyfile(src, part)
    except OSError as exc:
        raise DownloadError(video_id, source.url, f"cannot copy {src}: {exc}",
                            permanent=True) from exc
    return part


# -- yt-dlp ------------------------------------------------------------------------------
class _YtdlpLogger:
    """yt-dlp's messages go to our log at DEBUG: failures are reported once, by us."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = warning = error = debug


def ytdlp_options(cfg: DownloadConfig, part: Path, *, can_merge: bool) -> dict[str, Any]:
    """Options for ``yt_dlp.YoutubeDL``: capped height, one video, no retries (ours)."""
    h = cfg.max_height
    # '<=?' keeps formats of unknown height (the generic extractor rarely knows it).
    # Without ffmpeg a '+' selection aborts the download, so ask for one-file formats.
    fmt = (f"bv*[height<=?{h}]+ba/b[height<=?{h}]/bv*+ba/b" if can_merge
           else f"b[height<=?{h}]/b")
    return {
        "format": fmt, "merge_output_format": "mp4",
        "outtmpl": str(part / "video.%(ext)s"),
        "quiet": True, "no_warnings": True, "noprogress": True, "logger": _YtdlpLogger(),
        "noplaylist": True, "playlist_items": "1",
        "socket_timeout": cfg.timeout_s,
        "retries": 0, "fragment_retries": 0, "extractor_retries": 0,
        "file_access_retries": 0,
        "cachedir": False, "overwrites": True, "continuedl": False,
    }


def _fetch_ytdlp(video_id: str, source: Source, part: Path, cfg: DownloadConfig) -> Path:
    import yt_dlp
    from yt_dlp.postprocessor.ffmpeg import FFmpegMergerPP

    part.mkdir(parents=True, exist_ok=True)
    opts = ytdlp_options(cfg, part, can_merge=FFmpegMergerPP(None).available)
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:  # type: ignore[arg-type]
            ydl.extract_info(source.target, download=True)
    except yt_dlp.utils.YoutubeDLError as exc:
        raise ytdlp_error(video_id, source.url, exc) from exc
    done = [p for p in part.iterdir()
            if p.is_file() and not p.name.endswith((".part", ".ytdl", ".temp"))]
    if not done:
        raise DownloadError(video_id, source.url, "yt-dlp finished without a file",
                            permanent=True)
    return max(done, key=lambda p: p.stat().st_size)


def ytdlp_error(video_id: str, url: str, exc: Exception) -> DownloadError:
    """Map a yt-dlp error to gone / permanent / transient from its message."""
    message = re.sub(r"^ERROR:\s*", "", str(exc)).strip()
    text = message.lower()
    if any(s in text for s in _YTDLP_TRANSIENT):
        return DownloadError(video_id, url, message, permanent=False)
    if any(s in text for s in _YTDLP_GONE):
        return SourceGone(video_id, url, message)
    if any(s in text for s in _YTDLP_PERMANENT):
        return DownloadError(video_id, url, message, permanent=True)
    # An extractor's "expected" error is a statement about the video, not a hiccup.
    cause = (getattr(exc, "exc_info", None) or (None, None))[1]
    return DownloadError(video_id, url, message,
                         permanent=bool(getattr(cause, "expected", False)))
