"""The catalog of a real run (every stage, through `tspipe stage`) moves between SQLite and
PostgreSQL with every row and link, and `tspipe catalog verify` finds it whole, then names
what drifted."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from tspipe.catalog import Catalog
from tspipe.catalog.transfer import export_lines, migrate_to
from tspipe.doors.cli import app

runner = CliRunner()


def test_a_run_catalog_round_trips_and_verifies(reference, tmp_path, postgres_url,
                                                ledger) -> None:
    root = tmp_path / "run"
    shutil.copytree(reference.root, root, ignore=shutil.ignore_patterns(".tspipe"))
    sqlite_url = f"sqlite:///{root / 'catalog.db'}"
    with Catalog(sqlite_url) as cat:
        versions = cat.list_feature_versions()
        assert versions and cat.show(versions[-1].id).evaluations  # a catalog worth moving

    # SQLite -> PostgreSQL -> SQLite: the same export, byte for byte.
    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    there = migrate_to(sqlite_url, postgres_url)
    assert there.rows > 50 and there.extra == 0
    migrate_to(postgres_url, back_url)
    exported = [list(export_lines(url)) for url in (sqlite_url, postgres_url, back_url)]
    assert exported[0] == exported[1] == exported[2]
    tables = json.loads(exported[0][-1])["rows"]
    assert tables["feature_videos"] > 0 and tables["evaluations"] > 0
    assert tables["checkpoints"] >= 2  # the fine-tuned encoder and the base it started from

    # verify: every file with its sha256, every shard, link and MLflow run is there.
    def verify(url: str) -> tuple[int, dict]:
        done = runner.invoke(app, ["catalog", "verify", "--url", url, "--root", str(root),
                                   "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
                                   "--json"])
        return done.exit_code, json.loads(done.stdout)

    code, report = verify(postgres_url)
    assert (code, report["problems"]) == (0, [])
    assert report["checked"]["checkpoint files"] >= 2 and report["checked"]["mlflow runs"] >= 4
    # Drift: a shard gone, a checkpoint rewritten; each named, exit 1.
    with Catalog(back_url) as cat:
        version = cat.list_feature_versions()[-1]
        shard = next(v.shard for v in cat.feature_videos(version.id) if v.shard)
        ckpt = cat.show(version.id).checkpoint
    storage = root / version.storage_uri if "://" not in version.storage_uri else None
    assert storage is not None, version.storage_uri  # stored relative to the run directory
    (storage / shard).unlink()
    (root / ckpt.uri).write_bytes(b"not the weights")
    code, report = verify(back_url)
    assert code == 1
    kinds = {(p["kind"], p["table"]) for p in report["problems"]}
    assert ("missing-shard", "feature_videos") in kinds
    assert ("sha256-mismatch", "checkpoints") in kinds
    ledger.record("bad_input", "catalog drift")
