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

MARKER = "TSPIPE-SECRET-7f3a91c2"
# What a leak of a file's first bytes shows: FFmpeg's error quoted 16 of them.
LEAKS = (MARKER[:13], "root:x:0:0")

# video id -> (url as the annotations give it; None: from the mirror only; status; words)
CASES = {
    "text_file": ("file://{src}/notes.mp4", "failed", "not a video: notes.mp4 (", "text"),
    "html_page": ("{http}/page.mp4", "failed", "not a video: page.mp4 (", "HTML"),
    "json_body": ("{http}/api.mp4", "failed", "not a video: api.mp4 (", "JSON"),
    "empty_file": ("file://{src}/empty.mp4", "failed", "not a video: empty.mp4 (0 bytes",
                   "empty file"),
    "http_404": ("{http}/missing.mp4", "missing", "HTTP 404", None),
    "etc_passwd": ("file:///etc/passwd", "failed", "outside the allowed roots", "/etc/passwd"),
    "traversal": ("../../outside/secret.mp4", "failed", "outside the allowed roots",
                  "(that is "),
    "mirror_link": (None, "failed", "outside the allowed roots", "a link to"),
}


def _serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
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
    if "outside" in words:
        assert "allowed roots (" in entry["reason"] and str(downloaded["root"]) in entry["reason"]
    assert f"video {vid!r}" in downloaded["output"] or vid in downloaded["output"]
    assert not any(leak in downloaded["output"] for leak in LEAKS)
    written = [p for p in downloaded["root"].rglob("*") if p.is_file()
               and not any(p.is_relative_to(s) for s in downloaded["sources"])]
    assert any(p.name.startswith("catalog.db") for p in written), written
    for path in written:
        data = path.read_bytes()
        assert not any(leak.encode() in data for leak in LEAKS), path
    ledger.record("bad_input", f"source-{vid.replace('_', '-')}")
