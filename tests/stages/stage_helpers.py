"""Helpers for stage tests: params files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

# The one variant these tests run per-variant stages as (``pretrain@main``, ...).
VARIANT = "main"


def write_params(root: Path, repo_root: Path, **sections: dict) -> Path:
    """The project's params.yaml updated by ``sections``. Unless a section says otherwise:
    one variant, ``main``, without overrides; no ``base`` stage (nor its corpus); no
    pretraining (``pretrain.enabled`` false: extraction uses seeded random weights, since
    a missing pretrain checkpoint is an error), and where a test enables it, from seeded
    random weights (``pretrain.init_checkpoint`` None)."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["compare"] = {"variants": {VARIANT: {}}}
    raw["base"]["enabled"] = False
    raw["synth"]["corpus_videos"] = 0  # the base stage's corpus: not without the base
    raw["pretrain"]["init_checkpoint"] = None
    raw["pretrain"]["enabled"] = False
    for section, values in sections.items():
        raw[section].update(values)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class VideoServer:
    """Serves ``root`` over HTTP; ``/drop/...`` sends headers and half the body, then
    closes. ``hits`` counts GETs per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.hits[self.path] += 1
                if self.path.startswith("/drop/"):
                    body = (root / "videos" / Path(self.path).name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> VideoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
