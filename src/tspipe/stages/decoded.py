"""What the decode stage made ready, as the stages after it read it: the decoded videos.

The decode report lists every video with its status; the ``ok`` ones are read from their
standardized copy (or the download, when decoding did not re-encode). ``gvf``, ``flow``,
``pretrain`` and ``extract`` all start from :func:`decoded_videos`; a feature version's
manifest hash (:func:`manifest_sha256`) names them with the settings that made them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.io import file_stamp, sha256_json
from tspipe.paths import RunPaths
from tspipe.stages.decode import decode_settings


@dataclass(frozen=True)
class DecodedVideo:
    """A video the decode stage made ready: the file to read, the download's sha256."""

    video_id: str
    path: Path
    sha256: str | None


# The list as last read, per run directory, with the decode report's stamp then: a
# 20,000-video gvf or extract run plans, checks and runs each of its shards from it (read
# per shard, it made those stages quadratic: 0.6 s a read at 19,994 videos).
_READ: dict[Path, tuple[tuple, list[DecodedVideo]]] = {}
_READING = threading.Lock()


def decoded_videos(paths: RunPaths) -> list[DecodedVideo]:
    """The videos the decode report lists ``ok``, by id: the standardized copy when there
    is one, else the downloaded file."""
    with _READING:
        stamp = file_stamp(paths.decode_report)
        cached = _READ.get(paths.decode_report)
        if cached is None or cached[0] != stamp or not stamp:
            cached = (stamp, _read(paths))
            _READ[paths.decode_report] = cached
        return list(cached[1])


def _read(paths: RunPaths) -> list[DecodedVideo]:
    if not paths.decode_report.exists():
        raise StageError(f"{paths.decode_report}: no decode report; run the decode stage")
    report = json.loads(paths.decode_report.read_text(encoding="utf-8"))
    out = []
    for r in report["videos"]:
        if r["status"] != "ok":
            continue
        rel = (r.get("standardized") or {}).get("path") or r["source"]
        out.append(DecodedVideo(r["video_id"], paths.resolve(rel), r.get("source_sha256")))
    return sorted(out, key=lambda v: v.video_id)


def manifest_sha256(videos: list[DecodedVideo], params: Params) -> str:
    """Ids + the downloaded files' sha256 + the decode settings that made the copies."""
    return sha256_json({"videos": [[v.video_id, v.sha256] for v in videos],
                        "decode": decode_settings(params)})
