"""Bad video sources (issue 22): a source that is not a video is named by kind and size,
never quoted; a local path outside the run's allowed roots is refused per video.

One run directory lists every bad kind as its own video (synth off, a hand-written
ActivityNet file); ``tspipe stage ingest`` and ``tspipe stage download`` run once, as a
user runs them, and each case checks its video's manifest entry. A marker planted in
every non-video file must appear in no file the run wrote (manifest, journal, catalog
and its WAL, metrics) and in neither command's output.
"""

from __future__ import annotations

import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from reliability_helpers import tspipe, write_params

from tspipe.config import DownloadConfig, load_params
from tspipe.data.annotations import Video
from tspipe.data.download import download_one
from tspipe.data.download_sources import content_kind, decode_problem, plan_sources
from tspipe.errors import DownloadError
from tspipe.paths import RunPaths
from tspipe.stages.download import local_roots

MARKER = "TSPIPE-SECRET-7f3a91c2"
# What a leak of a file's first bytes shows: FFmpeg's error quoted 16 of them.
LEAKS = (MARKER[:13], "root:x:0:0")

# video id -> (url as the annotations give it; None: from the mirror only; status; words
# in the reason; a detail in it or None)
CASES = {
    "text_file": ("file://{src}/notes.mp4", "failed", "not a video: notes.mp4 (", "text"),
    "binary_junk": ("{src}/junk.mp4", "failed", "not a video: junk.mp4 (", "not decodable"),
    "html_page": ("{http}/page.mp4", "failed", "not a video: page.mp4 (", "HTML"),
    "json_body": ("{http}/api.mp4", "failed", "not a video: api.mp4 (", "JSON"),
    "empty_file": ("file://{src}/empty.mp4", "failed", "not a video: empty.mp4 (0 bytes",
                   "empty file"),
    "http_404": ("{http}/missing.mp4", "missing", "HTTP 404", None),
    "http_500_page": ("{http}/error/500.mp4", "failed", "HTTP 500", None),
    "redirect_file": ("{http}/to-file/v.mp4", "failed", "HTTP 302",
                      "Redirection to url 'file:///etc/passwd' is not allowed"),
    "redirect_ftp": ("{http}/to-ftp/v.mp4", "failed", "HTTP 302",
                     "redirect to ftp://127.0.0.1/v.mp4 refused"),
    "etc_passwd": ("file:///etc/passwd", "failed", "outside the allowed local roots",
                   "/etc/passwd"),
    "traversal": ("../../outside/secret.mp4", "failed", "outside the allowed local roots",
                  "(that is "),
    "mirror_link": (None, "failed", "outside the allowed local roots", "a link to"),
}
# Where the loopback server sends a client instead of serving a file.
REDIRECTS = {"/to-file/v.mp4": "file:///etc/passwd", "/to-ftp/v.mp4": "ftp://127.0.0.1/v.mp4"}
ERROR_PAGE = f"<!DOCTYPE html><html><body><h1>{MARKER}</h1>stack trace</body></html>"


def _serve(folder: Path, redirects: dict[str, str] = REDIRECTS
           ) -> tuple[ThreadingHTTPServer, str]:
    """``folder`` over HTTP on 127.0.0.1, with ``redirects`` and an HTML 500 page."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.end_headers()
            elif self.path.startswith("/error/"):
                body = ERROR_PAGE.encode()
                self.send_response(500)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory) -> dict:
    """Ingest and download over every case once; the manifest, outputs and run folder."""
    base = tmp_path_factory.mktemp("bad-sources")
    root, outside, web = base / "run", base / "outside", base / "web"
    src, mirror = root / "src", root / "mirror"
    for folder in (src, mirror, outside, web):
        folder.mkdir(parents=True)
    (src / "notes.mp4").write_text(f"{MARKER} is the password\nplain notes\n")
    (src / "empty.mp4").write_bytes(b"")
    (src / "junk.mp4").write_bytes(b"\x00\x01" + MARKER.encode() + bytes(range(256)) * 8)
    (web / "page.mp4").write_text(f"<!DOCTYPE html><html><body>{MARKER}</body></html>")
    (web / "api.mp4").write_text(json.dumps({MARKER: "token"}))
    (outside / "secret.mp4").write_text(f"{MARKER}\n")
    (mirror / "mirror_link.mp4").symlink_to(outside / "secret.mp4")
    httpd, http = _serve(web)
    database = {}
    for vid, (url, *_rest) in CASES.items():
        database[vid] = {"subset": "training", "duration": 20.0,
                         "url": url.format(src=src, http=http) if url else "",
                         "annotations": [{"segment": [1.0, 4.0], "label": "a"}]}
    (src / "ann.json").write_text(json.dumps({"database": database}))
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": "src/ann.json", "name": "badsources"},
                 download={"mirror": str(mirror), "retries": 0, "workers": 2})
    try:
        ingest = tspipe(root, "stage", "ingest", "--params", "params.yaml", "--root", ".")
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        download = tspipe(root, "stage", "download", "--params", "params.yaml", "--root", ".")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert download.returncode == 0, download.stdout + download.stderr
    manifest = json.loads((root / "data/manifest/downloads.json").read_text())
    return {"root": root, "entries": {v["video_id"]: v for v in manifest["videos"]},
            "output": "".join(p.stdout + p.stderr for p in (ingest, download)),
            "sources": (src, mirror)}


@pytest.mark.parametrize("vid", sorted(CASES))
def test_bad_source_is_named_not_quoted(downloaded: dict, vid: str, ledger) -> None:
    _url, status, words, detail = CASES[vid]
    entry = downloaded["entries"][vid]
    assert entry["status"] == status and entry["path"] is None, entry
    assert words in entry["reason"] and "(starts" not in entry["reason"], entry
    if detail:
        assert detail in entry["reason"], entry
    if "outside" in words:  # names where local sources may lie, and how to add one
        assert str(downloaded["root"] / "src") in entry["reason"], entry
        assert entry["reason"].endswith("; add the folder to download.local_roots"), entry
    assert f"video {vid!r}" in downloaded["output"] or vid in downloaded["output"]
    assert not any(leak in downloaded["output"] for leak in LEAKS)
    written = [p for p in downloaded["root"].rglob("*") if p.is_file()
               and not any(p.is_relative_to(s) for s in downloaded["sources"])]
    assert any(p.name.startswith("catalog.db") for p in written), written
    for path in written:
        data = path.read_bytes()
        assert not any(leak.encode() in data for leak in LEAKS), path
    ledger.record("bad_input", f"source-{vid.replace('_', '-')}")


# -- the same rules, one function at a time ------------------------------------------------
def _cfg(**kw) -> DownloadConfig:
    return DownloadConfig(**{"retries": 0, "timeout_s": 5.0, **kw})


@pytest.mark.parametrize(("body", "kind"), [
    (b"", "empty file"), (b"<!DOCTYPE html><html>x</html>", "HTML"),
    (b' \n{"k": 1}', "JSON"), (b"<?xml version='1.0'?><a/>", "XML"), (b"notes\n", "text"),
    (b"#EXTM3U\nfile:///etc/passwd\n", "text"),  # a playlist FFmpeg would follow
    (b"\x00\x00\x00\x18ftypmp42", None), (b"\x1aE\xdf\xa3\x9fB\x86", None)])
def test_content_kind_names_non_video_files(tmp_path: Path, body: bytes, kind: str) -> None:
    (path := tmp_path / "f.mp4").write_bytes(body)
    assert content_kind(path) == kind


def test_decode_problem_never_quotes_the_bytes(tmp_path: Path) -> None:
    (path := tmp_path / "junk.mp4").write_bytes(b"\x00" + MARKER.encode() + bytes(range(256)))
    problem = decode_problem(path)
    assert problem and MARKER[:13] not in problem and "starts" not in problem


def test_local_sources_outside_the_roots_are_refused(tmp_path: Path) -> None:
    run, outside, mirror = tmp_path / "run", tmp_path / "outside", tmp_path / "mirror"
    for folder in (run, outside, mirror):
        folder.mkdir()
    (outside / "s.mp4").write_bytes(b"x")
    (mirror / "m.mp4").symlink_to(outside / "s.mp4")
    (mirror / "in.mp4").symlink_to(run / "ok.mp4")  # a link that stays inside: fine
    (run / "ok.mp4").write_bytes(b"x")
    assert plan_sources("ok", "ok.mp4", _cfg(), run, roots=[run])[0].target == str(run / "ok.mp4")
    assert plan_sources("in", None, _cfg(mirror=str(mirror)), run, roots=[run])[0].mirror
    for video_id, url, c in [("p", "file:///etc/passwd", _cfg()),
                             ("t", "../outside/s.mp4", _cfg()),
                             ("m", None, _cfg(mirror=str(mirror)))]:
        with pytest.raises(DownloadError, match=r"outside the allowed local roots: ") as caught:
            plan_sources(video_id, url, c, run, roots=[run])
        assert caught.value.permanent and f"video {video_id!r}" in str(caught.value)
        assert str(caught.value).endswith("add the folder to download.local_roots")
    # Without roots (library use), any local path is planned.
    assert plan_sources("p", "file:///etc/passwd", _cfg(), run)[0].target == "/etc/passwd"


def test_a_redirect_never_reaches_a_local_file(tmp_path: Path, monkeypatch) -> None:
    """Even with ``file`` allowed for the annotations' own urls, a server's redirect to a
    file:// URL (here a real file inside the roots) is not followed."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    (tmp_path / "secret.mp4").write_text(f"{MARKER}\n")
    redirects = {"/a.mp4": f"file://{tmp_path / 'secret.mp4'}",
                 "/b.mp4": "ftp://127.0.0.1/b.mp4", "/c.mp4": "/error/c.mp4"}
    httpd, http = _serve(tmp_path, redirects)
    try:
        got = {name: download_one(Video(video_id=name, url=f"{http}/{name}.mp4"), _cfg(),
                                  tmp_path / "out", roots=[tmp_path]) for name in "abc"}
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "Redirection to url 'file://" in got["a"].reason
    assert "redirect to ftp://127.0.0.1/b.mp4 refused" in got["b"].reason
    assert got["c"].reason == "gave up after 1 attempts: HTTP 500 Internal Server Error"
    assert all(e.status == "failed" and e.path is None for e in got.values()), got
    assert not any(MARKER[:13] in e.reason for e in got.values())
    assert not [p for p in (tmp_path / "out").iterdir()]  # nothing copied, no .part left


def test_stage_roots_are_the_run_the_annotations_folder_and_local_roots(tmp_path: Path) -> None:
    root, data = tmp_path / "run", tmp_path / "datasets" / "anet"
    data.mkdir(parents=True)
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": str(data / "ann.json")})
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    assert local_roots(params, paths) == [root, data]
    write_params(root, synth={"enabled": False}, dataset={"annotations": str(data)},
                 download={"local_roots": ["../videos", "/srv/v"]})  # a THUMOS-like folder
    params = load_params(root / "params.yaml")
    assert local_roots(params, paths) == [root, data, tmp_path / "run/../videos",
                                          Path("/srv/v")]
