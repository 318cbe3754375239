"""Download: real HTTP on 127.0.0.1, real tiny H.264 files, every kind of bad input."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest

from tspipe.config import DownloadConfig
from tspipe.data.annotations import Video
from tspipe.data.download import (
    DownloadResult,
    ManifestEntry,
    compact_manifest,
    download_all,
    download_one,
    read_manifest,
    summarize,
    write_manifest,
)
from tspipe.data.download_sources import plan_sources, ytdlp_options
from tspipe.errors import DownloadError, StageError


def make_mp4(shade: int = 0, frames: int = 10) -> bytes:
    """A real 64x48 H.264 mp4 of ``frames`` frames, in memory."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            rgb = np.full((48, 64, 3), (shade + 20 * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return make_mp4()


class VideoServer:
    """``/<route>/<name>``: v (serve), flaky (500 twice, then serve), drop (half the body,
    then close, always), droponce, gone (404), forbidden (403), text (not a video), page
    (HTML with a <video>), html (HTML without one), slow (half, pause, rest), mirror
    (serve the names in ``mirrored``, 404 for the others)."""

    def __init__(self, video: bytes) -> None:
        self.video = video
        self.hits: Counter[str] = Counter()
        self.mirrored: set[str] = set()
        self.slow_s = 0.4
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits[h.path] += 1
            n = self.hits[h.path]
        route, _, name = h.path.lstrip("/").partition("/")
        if route == "v" or (route == "flaky" and n > 2) or (route == "droponce" and n > 1):
            return self._send(h, 200, self.video)
        if route == "mirror":
            return self._send(h, 200 if name in self.mirrored else 404,
                              self.video if name in self.mirrored else b"no")
        if route == "flaky":
            return self._send(h, 500, b"busy")
        if route in ("drop", "droponce", "slow"):
            h.send_response(200)
            h.send_header("Content-Length", str(len(self.video)))
            h.end_headers()
            h.wfile.write(self.video[: len(self.video) // 2])
            h.wfile.flush()
            if route == "slow":
                time.sleep(self.slow_s)
                h.wfile.write(self.video[len(self.video) // 2:])
            return None
        if route == "text":
            return self._send(h, 200, b"this is not a video\n" * 10, "text/plain")
        if route == "html":
            return self._send(h, 200, b"<html><body><p>no video here</p></body></html>",
                              "text/html")
        if route == "page":
            stem = name.removesuffix(".html")
            body = (f"<html><head><title>{stem}</title></head><body>"
                    f'<video controls src="/v/{stem}.mp4"></video></body></html>')
            return self._send(h, 200, body.encode(), "text/html")
        return self._send(h, 403 if route == "forbidden" else 404, b"nope")

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes,
              ctype: str = "video/mp4") -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def video_hits(self) -> int:
        return sum(n for p, n in self.hits.items() if p.startswith("/v/"))


@pytest.fixture
def server(mp4: bytes, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = VideoServer(mp4)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def cfg(**kw: object) -> DownloadConfig:
    base = dict(workers=4, retries=2, backoff_s=0.001, backoff_max_s=0.005, timeout_s=5.0)
    return DownloadConfig(**{**base, **kw})


def vid(video_id: str, url: str | None) -> Video:
    return Video(video_id=video_id, url=url)


class Recorder:
    """A Reporter that remembers what it was told."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.advanced = 0
        self.messages: list[tuple[str, int]] = []

    def start(self, task: str, total: int | None = None) -> None:
        self.started.append((task, total))

    def advance(self, task: str, n: int = 1) -> None:
        self.advanced += n

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        pass

    def message(self, text: str, level: int = logging.INFO) -> None:
        self.messages.append((text, level))


def decodes(path: Path) -> bool:
    with av.open(str(path)) as c:
        return next(c.decode(video=0), None) is not None


# -- the done-when case -------------------------------------------------------------
def test_fifty_videos_three_bad_then_rerun_fetches_nothing(server: VideoServer, mp4: bytes,
                                                           tmp_path: Path) -> None:
    videos = [vid(f"v{i:02d}", server.url(f"v/v{i:02d}.mp4")) for i in range(47)]
    videos += [vid("gone", server.url("gone/gone.mp4")),
               vid("dropped", server.url("drop/dropped.mp4")),
               vid("textfile", server.url("text/textfile.mp4"))]
    out, manifest = tmp_path / "data" / "videos", tmp_path / "data" / "manifest" / "dl.json"
    rec = Recorder()
    res = download_all(videos, cfg(workers=6), out, manifest, reporter=rec)

    assert res.summary == "47 ok, 1 missing, 2 failed"
    assert (res.ok, res.missing, res.failed, res.skipped) == (47, 1, 2, 0)
    assert res.bytes == 47 * len(mp4)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"v{i:02d}.mp4" for i in range(47))
    rows = json.loads(manifest.read_text())["videos"]
    assert [r["video_id"] for r in rows] == sorted(v.video_id for v in videos)
    entries = read_manifest(manifest)
    ok = entries["v07"]
    assert ok.path == "../videos/v07.mp4" and ok.source == server.url("v/v07.mp4")
    assert (manifest.parent / ok.path).read_bytes() == mp4
    assert ok.sha256 == hashlib.sha256(mp4).hexdigest() and ok.attempts == 1
    assert entries["gone"].status == "missing" and entries["gone"].attempts == 1
    assert "404" in entries["gone"].reason
    assert entries["dropped"].status == "failed" and entries["dropped"].attempts == 3
    assert server.hits["/drop/dropped.mp4"] == 3 and "gave up after 3" in entries[
        "dropped"].reason
    assert entries["textfile"].status == "failed" and entries["textfile"].attempts == 1
    assert "not a video" in entries["textfile"].reason
    assert rec.started == [("download", 50)] and rec.advanced == 50
    warned = sorted(t for t, level in rec.messages if level == logging.WARNING)
    assert len(warned) == 3 and all(server.base in t for t in warned)
    assert any("'textfile'" in t and "not a video" in t for t in warned)
    assert res.metrics()["downloaded"] == 47.0 and res.to_dict()["manifest"] == str(manifest)

    hits = server.video_hits()
    again = download_all(videos, cfg(workers=6), out, manifest)
    assert server.video_hits() == hits
    assert again.skipped == 47 and again.summary == "47 ok, 1 missing, 2 failed"
    after = read_manifest(manifest)
    assert {k: e for k, e in after.items() if e.status == "ok"} == {
        k: e for k, e in entries.items() if e.status == "ok"}
    # What did not work is tried again: the gone video once, the broken one to the limit.
    assert server.hits["/gone/gone.mp4"] == 2 and server.hits["/drop/dropped.mp4"] == 6
    assert after["dropped"].status == "failed" and after["gone"].status == "missing"
    assert not list(out.glob("*.part")) and not Path(str(manifest) + ".journal").exists()


# -- retries -------------------------------------------------------------------------------------
def test_500_twice_then_ok_after_three_attempts(server: VideoServer, tmp_path: Path) -> None:
    sleeps: list[float] = []
    c = cfg(retries=3, backoff_s=0.5, backoff_max_s=0.7)
    e = download_one(vid("f", server.url("flaky/f.mp4")), c, tmp_path, sleep=sleeps.append)
    assert e.status == "ok" and e.attempts == 3 and server.hits["/flaky/f.mp4"] == 3
    # Full jitter: the n-th wait is uniform in [0, min(max, base * 2**(n-1))].
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 0.7
    assert decodes(tmp_path / "f.mp4") and e.path == "f.mp4"


def test_connection_drop_once_then_ok(server: VideoServer, tmp_path: Path) -> None:
    e = download_one(vid("d", server.url("droponce/d.mp4")), cfg(), tmp_path, sleep=lambda s: None)
    assert e.status == "ok" and e.attempts == 2
    assert (tmp_path / "d.mp4").read_bytes() == server.video


@pytest.mark.parametrize(("route", "status"), [("gone", "missing"), ("forbidden", "failed")])
def test_permanent_http_error_is_not_retried(server: VideoServer, tmp_path: Path, route: str,
                                             status: str) -> None:
    sleeps: list[float] = []
    e = download_one(vid("p", server.url(f"{route}/p.mp4")), cfg(retries=5), tmp_path,
                     sleep=sleeps.append)
    assert (e.status, e.attempts, sleeps) == (status, 1, [])
    assert server.hits[f"/{route}/p.mp4"] == 1 and list(tmp_path.iterdir()) == []


# -- rerun: what counts as already done ------------------------------------------------------------
def test_rerun_refetches_tampered_and_unrecorded_files_and_clears_stale_parts(
        server: VideoServer, tmp_path: Path) -> None:
    out, manifest = tmp_path / "videos", tmp_path / "downloads.json"
    videos = [vid("a", server.url("v/a.mp4")), vid("b", server.url("v/b.mp4"))]
    download_all(videos, cfg(), out, manifest)
    (out / "a.mp4").write_bytes(b"tampered")
    (out / "a.mp4.part").write_bytes(b"half")  # a killed run's temp files
    (out / "b.dl.part").mkdir()
    (out / "b.dl.part" / "video.mp4.part").write_bytes(b"half")
    (out / "z.mp4.part").write_bytes(b"another call's video: not ours to remove")
    kept = ManifestEntry("other", "x", None, 0, None, "missing", "gone", 1)
    write_manifest(manifest, {**read_manifest(manifest), "other": kept})

    res = download_all(videos, cfg(), out, manifest)
    assert (res.skipped, server.hits["/v/a.mp4"], server.hits["/v/b.mp4"]) == (1, 2, 1)
    assert (out / "a.mp4").read_bytes() == server.video
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "z.mp4.part"]
    assert read_manifest(manifest)["other"] == kept  # videos not in this call are kept

    # A file present but not in the manifest: its source is unknown, so it is fetched again.
    write_manifest(manifest, {})
    res = download_all(videos, cfg(), out, manifest)
    assert res.skipped == 0 and server.hits["/v/b.mp4"] == 2


def test_parallel_calls_on_one_manifest_keep_each_others_entries(server: VideoServer,
                                                                  tmp_path: Path) -> None:
    out, manifest = tmp_path / "videos", tmp_path / "m" / "downloads.json"
    batches = [[vid(f"{b}{i}", server.url(f"v/{b}{i}.mp4")) for i in range(8)] for b in "xy"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda b: download_all(b, cfg(workers=2), out, manifest),
                                batches))
    assert [r.summary for r in results] == ["8 ok, 0 missing, 0 failed"] * 2
    entries = read_manifest(manifest)
    assert sorted(entries) == sorted(v.video_id for b in batches for v in b)
    assert summarize(entries.values()) == "16 ok, 0 missing, 0 failed"
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["downloads.json"]


def test_uncompacted_batches_journal_entries_until_compacted(server: VideoServer,
                                                             tmp_path: Path) -> None:
    """A stage's batches (compact=False) append to the journal only: the manifest is
    rewritten once, by compact_manifest, and every entry is readable before it."""
    out, manifest = tmp_path / "videos", tmp_path / "m" / "downloads.json"
    first = [vid(f"a{i}", server.url(f"v/a{i}.mp4")) for i in range(3)]
    download_all(first, cfg(), out, manifest)
    before = manifest.read_bytes()
    second = [vid("b0", server.url("v/b0.mp4")), vid("gone", server.url("gone/g.mp4"))]
    for batch in (second[:1], second[1:]):
        download_all(batch, cfg(), out, manifest, compact=False)
    assert manifest.read_bytes() == before  # not rewritten by either batch
    journal = Path(str(manifest) + ".journal")
    assert len(journal.read_text().splitlines()) == 2
    entries = read_manifest(manifest)
    assert {k: e.status for k, e in entries.items()} == {
        "a0": "ok", "a1": "ok", "a2": "ok", "b0": "ok", "gone": "missing"}
    compact_manifest(manifest)
    assert not journal.exists() and read_manifest(manifest) == entries
    assert json.loads(manifest.read_text())["videos"][3]["video_id"] == "b0"


def test_manifest_round_trip_corrupt_file_and_torn_journal(tmp_path: Path) -> None:
    e = ManifestEntry("a", "http://x/a.mp4", "a.mp4", 3, "ab", "ok", "", 2)
    assert ManifestEntry.from_dict(e.to_dict()) == e
    path = tmp_path / "m.json"
    write_manifest(path, {"a": e})
    journal = tmp_path / "m.json.journal"
    f = ManifestEntry("b", "s", None, 0, None, "failed", "why", 1)
    journal.write_text(json.dumps(f.to_dict()) + "\n" + '{"video_id": "c", "sta')
    assert read_manifest(path) == {"a": e, "b": f}
    assert summarize([e, f]) == "1 ok, 0 missing, 1 failed"
    path.write_text("{not json")
    with pytest.raises(StageError, match=r"m\.json"):
        read_manifest(path)


# -- killed mid-way --------------------------------------------------------------------------------
_CHILD = """
import json, sys
from pathlib import Path
from tspipe.config import DownloadConfig
from tspipe.data.annotations import Video
from tspipe.data.download import download_all
spec = json.loads(Path(sys.argv[1]).read_text())
videos = [Video(video_id=k, url=u) for k, u in spec["videos"]]
download_all(videos, DownloadConfig(**spec["cfg"]), Path(spec["out"]), Path(spec["manifest"]))
"""


@pytest.mark.slow
def test_killed_run_leaves_no_partial_file_and_rerun_matches_clean_run(
        server: VideoServer, tmp_path: Path) -> None:
    videos = [(f"s{i:02d}", server.url(f"slow/s{i:02d}.mp4")) for i in range(12)]
    videos.append(("g", server.url("gone/g.mp4")))
    c = dict(workers=2, retries=1, backoff_s=0.001, backoff_max_s=0.005, timeout_s=5.0)
    run_a = tmp_path / "a"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"videos": videos, "cfg": c, "out": str(run_a / "videos"),
                                "manifest": str(run_a / "manifest" / "downloads.json")}))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(spec)])
    manifest_a = run_a / "manifest" / "downloads.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            # kill while a download is in flight (a .part exists), after 3 are recorded
            if manifest_a.exists() and sum(e.status == "ok" for e in
                                           read_manifest(manifest_a).values()) >= 3 \
                    and list((run_a / "videos").glob("*.part")):
                break
            time.sleep(0.05)
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    recorded = {k for k, e in read_manifest(manifest_a).items() if e.status == "ok"}
    assert 3 <= len(recorded) < 12
    assert list((run_a / "videos").glob("*.part")), "the kill should interrupt a download"
    visible = list((run_a / "videos").glob("*.mp4"))
    assert len(visible) >= len(recorded)
    for path in visible:  # a visible video is always whole
        assert path.read_bytes() == server.video and decodes(path)
    hits_before = dict(server.hits)

    cfg_obj = DownloadConfig(**c)
    resumed = download_all([vid(k, u) for k, u in videos], cfg_obj, run_a / "videos", manifest_a)
    assert resumed.skipped == len(recorded)
    assert all(server.hits[f"/slow/{k}.mp4"] == hits_before.get(f"/slow/{k}.mp4")
               for k in recorded)
    clean = download_all([vid(k, u) for k, u in videos], cfg_obj, tmp_path / "b" / "videos",
                         tmp_path / "b" / "manifest" / "downloads.json")
    assert resumed.summary == clean.summary == "12 ok, 1 missing, 0 failed"

    def strip(m: Path) -> dict:
        return {k: {**e.to_dict(), "attempts": None} for k, e in read_manifest(m).items()}

    assert strip(manifest_a) == strip(clean.manifest)
    assert not list((run_a / "videos").glob("*.part"))


# -- mirror ----------------------------------------------------------------------------------------
def test_folder_mirror_first_then_url(server: VideoServer, tmp_path: Path, mp4: bytes) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.mp4").write_bytes(mp4)
    (mirror / "b.mkv").write_bytes(make_mp4(shade=99))  # any container decodes
    videos = [vid(k, server.url(f"v/{k}.mp4")) for k in "abc"]
    res = download_all(videos, cfg(mirror=str(mirror)), tmp_path / "out", tmp_path / "m.json")
    assert res.summary == "3 ok, 0 missing, 0 failed"
    e = read_manifest(tmp_path / "m.json")
    assert e["a"].source == str(mirror / "a.mp4") and e["b"].source == str(mirror / "b.mkv")
    assert e["b"].path == "out/b.mkv" and e["c"].source == server.url("v/c.mp4")
    assert (server.hits["/v/a.mp4"], server.hits["/v/b.mp4"], server.hits["/v/c.mp4"]) == (0, 0, 1)

    # No url in the annotations: a video the folder lacks is gone (missing), not failed;
    # a mirror folder that does not exist is a setting to fix (failed, named).
    res = download_all([vid("a", None), vid("d", None)], cfg(mirror=str(mirror)),
                       tmp_path / "out2", tmp_path / "m2.json")
    e = read_manifest(tmp_path / "m2.json")
    assert res.summary == "1 ok, 1 missing, 0 failed"
    assert e["d"].status == "missing" and "not in the mirror folder" in e["d"].reason
    res = download_all([vid("d", None)], cfg(mirror=str(tmp_path / "nowhere")),
                       tmp_path / "out3", tmp_path / "m3.json")
    e = read_manifest(tmp_path / "m3.json")
    assert e["d"].status == "failed" and "nowhere" in e["d"].reason
    assert "does not exist" in e["d"].reason


def test_http_mirror_404_falls_through_to_url(server: VideoServer, tmp_path: Path) -> None:
    server.mirrored = {"a.mp4"}
    videos = [vid("a", server.url("v/a.mp4")), vid("b", server.url("v/b.mp4")),
              vid("c", server.url("gone/c.mp4"))]
    res = download_all(videos, cfg(mirror=server.url("mirror")), tmp_path / "out",
                       tmp_path / "m.json")
    e = read_manifest(tmp_path / "m.json")
    assert res.summary == "2 ok, 1 missing, 0 failed"
    assert e["a"].source == server.url("mirror/a.mp4") and server.hits["/v/a.mp4"] == 0
    assert e["b"].source == server.url("v/b.mp4")
    assert [server.hits[f"/mirror/b{x}"] for x in (".mp4", ".mkv", ".webm")] == [1, 1, 1]
    assert e["c"].status == "missing" and e["c"].source == server.url("gone/c.mp4")


# -- local, fsspec, refused ------------------------------------------------------------------------
def test_local_relative_file_url_and_missing(tmp_path: Path, mp4: bytes) -> None:
    ann = tmp_path / "ann"
    (ann / "clips").mkdir(parents=True)
    (ann / "clips" / "rel.mp4").write_bytes(mp4)
    absolute = tmp_path / "abs.avi"
    absolute.write_bytes(mp4)
    videos = [vid("rel", "clips/rel.mp4"), vid("furl", absolute.as_uri()),
              vid("nofile", "clips/none.mp4")]
    res = download_all(videos, cfg(), tmp_path / "out", tmp_path / "m.json", source_dir=ann)
    e = read_manifest(tmp_path / "m.json")
    assert res.summary == "2 ok, 1 missing, 0 failed"
    assert e["rel"].source == "clips/rel.mp4" and e["rel"].path == "out/rel.mp4"
    assert e["furl"].path == "out/furl.avi" and e["nofile"].status == "missing"
    assert "none.mp4" in e["nofile"].reason
    assert absolute.exists() and (ann / "clips" / "rel.mp4").exists()  # copied, not moved


def test_fsspec_memory_filesystem(tmp_path: Path, mp4: bytes) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/m1.mp4", mp4)
    # allowed_schemes is a Literal list: "memory" does not validate, so the test config is
    # a validated one with the list swapped in (model_copy does not re-validate).
    c = cfg().model_copy(update={"allowed_schemes": [*cfg().allowed_schemes, "memory"]})
    try:
        videos = [vid("m1", "memory://bucket/m1.mp4"), vid("m2", "memory://bucket/m2.mp4")]
        res = download_all(videos, c, tmp_path / "out", tmp_path / "m.json")
    finally:
        fs.rm("/bucket", recursive=True)
    e = read_manifest(tmp_path / "m.json")
    assert res.summary == "1 ok, 1 missing, 0 failed"
    assert (tmp_path / "out" / "m1.mp4").read_bytes() == mp4
    assert e["m1"].source == "memory://bucket/m1.mp4" and e["m2"].attempts == 1
    refused = download_one(vid("m1", "memory://bucket/m1.mp4"), cfg(), tmp_path / "o2")
    assert refused.status == "failed" and "'memory'" in refused.reason


def test_refused_scheme_and_unsafe_id_do_not_stop_the_others(server: VideoServer,
                                                             tmp_path: Path) -> None:
    work = tmp_path / "work"
    videos = [vid("f", "ftp://example.org/f.mp4"), vid("../evil", server.url("v/evil.mp4")),
              vid("/abs", server.url("v/abs.mp4")), vid("good", server.url("v/good.mp4"))]
    res = download_all(videos, cfg(), work / "out", work / "m.json")
    e = read_manifest(work / "m.json")
    assert res.summary == "1 ok, 0 missing, 3 failed"
    assert "'ftp'" in e["f"].reason and "https, http" in e["f"].reason
    assert e["f"].attempts == 0 and e["../evil"].status == "failed"
    assert "cannot be used as a file name" in e["../evil"].reason
    assert server.hits["/v/evil.mp4"] == 0 and server.hits["/v/abs.mp4"] == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["work/m.json", "work/out/good.mp4"]


@pytest.mark.parametrize(("url", "kind", "target"), [
    ("https://www.youtube.com/watch?v=abcdefghijk", "ytdlp", None),
    ("https://youtu.be/abcdefghijk", "ytdlp", None),
    ("abcdefghijk", "ytdlp", "https://www.youtube.com/watch?v=abcdefghijk"),
    ("youtube:abcdefghijk", "ytdlp", "https://www.youtube.com/watch?v=abcdefghijk"),
    ("https://example.org/v/a.MP4", "http", None),
    ("https://vimeo.com/1234.mp4", "ytdlp", None),
    ("https://example.org/watch/page", "ytdlp", None),
    ("s3://bucket/a.mp4", "fsspec", None),
    ("gs://bucket/a.mp4", "fsspec", None),
    ("clips/a.mp4", "local", "/ann/clips/a.mp4"),
    ("file:///data/a.mp4", "local", "/data/a.mp4"),
])
def test_routing_by_url(url: str, kind: str, target: str | None) -> None:
    (source,) = plan_sources("x", url, cfg(), Path("/ann"))
    assert (source.kind, source.url, source.target) == (kind, url, target or url)


def test_youtube_needs_its_pseudo_scheme_and_mirror_is_checked(tmp_path: Path) -> None:
    c = cfg(allowed_schemes=["https", "http"])
    with pytest.raises(DownloadError, match="'youtube' is not allowed") as info:
        plan_sources("x", "https://www.youtube.com/watch?v=abcdefghijk", c)
    assert info.value.permanent and info.value.video_id == "x"
    with pytest.raises(DownloadError, match="'ftp' is not allowed"):
        download_all([], cfg(mirror="ftp://mirror.example.org/videos"), tmp_path / "out",
                     tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


# -- yt-dlp ----------------------------------------------------------------------------------------
def test_ytdlp_generic_extractor_reads_html5_video(server: VideoServer, tmp_path: Path) -> None:
    e = download_one(vid("page", server.url("page/clip.html")), cfg(), tmp_path)
    assert e.status == "ok" and e.source == server.url("page/clip.html"), e.reason
    assert e.path == "page.mp4"
    assert (tmp_path / "page.mp4").read_bytes() == server.video
    assert server.hits["/page/clip.html"] >= 1 and server.hits["/v/clip.mp4"] >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.mp4"]


@pytest.mark.parametrize(("path", "reason"), [
    ("html/empty", "Unsupported URL"),
    # yt-dlp's generic extractor takes any non-HTML response for a direct video link and
    # "downloads" it (as video.unknown_video): only our decode check refuses it.
    ("text/notes", "not a video"),
])
def test_ytdlp_page_without_video_fails_permanently(server: VideoServer, tmp_path: Path,
                                                    path: str, reason: str) -> None:
    e = download_one(vid("nov", server.url(path)), cfg(retries=3), tmp_path,
                     sleep=lambda s: None)
    assert (e.status, e.attempts) == ("failed", 1)
    assert reason in e.reason and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("message", "status", "attempts"), [
    ("ERROR: [youtube] abcdefghijk: Video unavailable", "missing", 1),
    ("ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access",
     "missing", 1),
    ("ERROR: [youtube] abcdefghijk: This video has been removed by the uploader", "missing", 1),
    ("ERROR: Unsupported URL: https://www.youtube.com/feed", "failed", 1),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This content isn't available, "
     "try again later.", "failed", 3),
    ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", "failed", 3),
])
def test_ytdlp_errors_map_to_status_and_retry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              message: str, status: str, attempts: int) -> None:
    import yt_dlp

    calls: list[str] = []

    class FakeYDL:
        def __init__(self, opts: dict) -> None:
            self.opts = opts

        def __enter__(self) -> FakeYDL:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def extract_info(self, url: str, download: bool) -> dict:
            calls.append(url)
            raise yt_dlp.utils.DownloadError(message)

    monkeypatch.setattr(yt_dlp, "YoutubeDL", FakeYDL)
    e = download_one(vid("yt", "https://www.youtube.com/watch?v=abcdefghijk"), cfg(), tmp_path,
                     sleep=lambda s: None)
    assert (e.status, e.attempts, len(calls)) == (status, attempts, attempts)
    assert e.reason.endswith(message.removeprefix("ERROR: ")) or "gave up" in e.reason
    assert list(tmp_path.iterdir()) == []


def test_ytdlp_options_cap_height_and_leave_retries_to_us(tmp_path: Path) -> None:
    opts = ytdlp_options(cfg(max_height=240), tmp_path, can_merge=True)
    assert opts["format"] == "bv*[height<=?240]+ba/b[height<=?240]/bv*+ba/b"
    assert opts["merge_output_format"] == "mp4" and opts["noplaylist"] is True
    assert opts["retries"] == opts["fragment_retries"] == opts["extractor_retries"] == 0
    assert opts["outtmpl"].startswith(str(tmp_path)) and opts["socket_timeout"] == 5.0
    assert "+" not in ytdlp_options(cfg(), tmp_path, can_merge=False)["format"]


def test_result_is_a_stage_result(tmp_path: Path) -> None:
    res = download_all([], cfg(), tmp_path / "out", tmp_path / "m.json")
    assert isinstance(res, DownloadResult) and res.summary == "0 ok, 0 missing, 0 failed"
    assert json.loads((tmp_path / "m.json").read_text()) == {"videos": []}
    assert set(res.metrics()) >= {"ok", "missing", "failed", "skipped", "bytes", "seconds"}


def test_manifest_entries_parses_again_only_after_a_change(tmp_path: Path) -> None:
    from tspipe.data.download import manifest_entries, write_manifest

    def entry(vid: str) -> ManifestEntry:
        return ManifestEntry(vid, "s", f"{vid}.mp4", 1, "0" * 64, "ok", "", 1)

    def line(vid: str) -> str:
        return json.dumps(entry(vid).to_dict()) + "\n"

    path = tmp_path / "downloads.json"
    assert manifest_entries(path) == {}
    write_manifest(path, {"a": entry("a")})
    first = manifest_entries(path)
    assert manifest_entries(path) is first and list(first) == ["a"]  # one parse
    write_manifest(path, {"a": entry("a"), "b": entry("b")})  # replaced (a new file)
    second = manifest_entries(path)
    assert list(second) == ["a", "b"] and second is not first
    # Completions journalled beside it: only the new lines are read, a torn last line
    # waits for its end, a damaged one is skipped (as read_manifest does).
    journal = path.with_name(path.name + ".journal")
    journal.write_text(line("c"))
    assert manifest_entries(path) is second and list(second) == ["a", "b", "c"]
    with journal.open("a") as fh:
        fh.write("{not json}\n" + line("d")[:20])
    assert list(manifest_entries(path)) == ["a", "b", "c"]
    with journal.open("a") as fh:
        fh.write(line("d")[20:])
    assert list(manifest_entries(path)) == ["a", "b", "c", "d"]
    assert manifest_entries(path) == read_manifest(path)
    compact_manifest(path)  # folded into a new manifest, the journal gone
    assert manifest_entries(path) == read_manifest(path) and not journal.exists()
