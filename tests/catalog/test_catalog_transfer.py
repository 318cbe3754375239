"""`tspipe catalog export | import | migrate`: byte-identical round trips across SQLite and
PostgreSQL, refused edits and conflicts that write nothing, sequences reset after import."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from catalog_helpers import count_rows, fill, sha
from sqlalchemy import text
from typer.testing import CliRunner

from tspipe.catalog import Catalog, FeatureVideoRow, head_revision, make_engine, upgrade
from tspipe.catalog.transfer import export, import_, migrate_to
from tspipe.doors.cli import app
from tspipe.errors import CatalogError

runner = CliRunner()
# Floats whose shortest repr has 17 digits: a lossy path (str(), float32) changes them.
EXACT = 0.1 + 0.2


def build(url: str) -> None:
    """``fill``'s catalog plus feature videos (one reused), a two-stream version made of
    two others, and values that must survive exactly."""
    upgrade(url)
    with Catalog(url) as catalog:
        filled = fill(catalog)
        catalog.register_checkpoint(sha("0"), arch="r2plus1d_34", origin="pretrain",
                                    parent_sha256=sha("f"))  # sorts before its parent
        catalog.record_feature_videos(filled.tsp.id, [
            FeatureVideoRow("v1", status="ok", num_clips=12, feature_dim=512, shard="a.h5",
                            reused_from=filled.official.id),
            FeatureVideoRow("v2", status="ok", num_clips=5, feature_dim=512, shard="b.h5"),
            FeatureVideoRow("v3", status="failed", reason="no frames: 'v3' é")])
        both = catalog.register_feature_version(
            dataset_id=filled.dataset_id, checkpoint_sha256=sha("f"), encoder="i3d",
            params={"streams": ["rgb", "flow"], "scale": EXACT}, manifest_sha256=sha("d"),
            code_version="extract-1")
        catalog.record_feature_sources(both.id, [("rgb", filled.official.id),
                                                 ("flow", filled.tsp.id)])
        catalog.record_evaluation(both.id, method="gtad", subset="validation",
                                  metric="average_map", value=EXACT)


def dumped(url: str) -> str:
    out = io.StringIO()
    export(url, out)
    return out.getvalue()


def test_export_import_gives_identical_bytes(catalog_url: str, tmp_path: Path) -> None:
    build(catalog_url)
    text = dumped(catalog_url)
    lines = [json.loads(line) for line in text.splitlines()]
    header, rows, trailer = lines[0], lines[1:-1], lines[-1]
    assert (header["format"], header["version"], header["revision"]) == (
        "tspipe-catalog", 1, head_revision())
    assert trailer["rows"] == {"datasets": 1, "checkpoints": 3, "videos": 4,
                               "feature_versions": 3, "evaluations": 6,
                               "feature_version_sources": 2, "feature_videos": 3}
    assert [row["table"] for row in rows] == sorted(
        (row["table"] for row in rows), key=header["tables"].index)
    [source] = [r["row"] for r in rows if r["table"] == "feature_versions"
                and r["row"]["encoder"] == "i3d"]
    assert source["params"]["scale"] == EXACT
    assert source["created_at"].endswith("+00:00")

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"  # a new file: import creates the schema
    result = import_(fresh, text.splitlines())
    assert result.inserted == len(rows)
    assert dumped(fresh) == text


def test_import_twice_is_a_no_op(catalog_url: str, tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    build(source)
    text = dumped(source)
    upgrade(catalog_url)
    first = import_(catalog_url, text.splitlines())
    again = import_(catalog_url, text.splitlines())
    assert first.tables["videos"].inserted == 4 and first.tables["videos"].present == 0
    assert again.inserted == 0
    assert {name: c.present for name, c in again.tables.items()} == {
        name: c.inserted for name, c in first.tables.items()}
    assert dumped(catalog_url) == text


@pytest.mark.parametrize("catalog_url", ["postgres"], indirect=True)
def test_sqlite_postgres_sqlite_round_trip(catalog_url: str, tmp_path: Path) -> None:
    source, back = (f"sqlite:///{tmp_path / name}" for name in ("source.db", "back.db"))
    build(source)
    upgrade(catalog_url)
    there = migrate_to(source, catalog_url)
    assert there.rows == 22 and there.extra == 0
    assert migrate_to(source, catalog_url).imported.inserted == 0  # rerun: nothing new
    migrate_to(catalog_url, back)
    assert dumped(back) == dumped(source) == dumped(catalog_url)

    # The sequences moved past the imported ids: new rows get fresh ones.
    with Catalog(catalog_url) as catalog:
        added = catalog.register_dataset("thumos14", sha("b"), format="thumos",
                                         subsets=["test"], num_videos=1, num_segments=1,
                                         num_classes=1)
        assert added.id == 2
        [official, *_] = catalog.list_feature_versions()
        score = catalog.record_evaluation(official.id, method="bmn", subset="test",
                                          metric="ar@100", value=0.5)
        assert score.id == 7


def test_edited_or_truncated_exports_are_refused(tmp_path: Path) -> None:
    source, target = (f"sqlite:///{tmp_path / name}" for name in ("source.db", "target.db"))
    build(source)
    lines = dumped(source).splitlines()

    edited = list(lines)
    edited[6] = lines[6].replace('"status":"ok"', '"status":"failed"')  # video v2
    assert edited[6] != lines[6]
    with pytest.raises(CatalogError, match=r"line 7: row of .* does not match its sha256"):
        import_(target, edited)
    with pytest.raises(CatalogError, match=f"no trailer line after line {len(lines) - 3}"):
        import_(target, lines[:-3])
    with pytest.raises(CatalogError, match=f"line {len(lines) - 1}: the trailer.s counts"):
        import_(target, lines[:4] + lines[5:])  # a whole row taken out
    with pytest.raises(CatalogError, match=f"line {len(lines) + 1}: text after the trailer"):
        import_(target, [*lines, lines[3]])
    old = json.loads(lines[0])
    old["revision"] = "0001"
    with pytest.raises(CatalogError,
                       match=f"export of revision 0001; this tspipe is at {head_revision()}"):
        import_(target, [json.dumps(old), *lines[1:]])
    assert not Path(target.removeprefix("sqlite:///")).exists()  # nothing written


def test_conflicting_rows_refuse_the_whole_import(catalog_url: str, tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    build(source)
    upgrade(catalog_url)
    import_(catalog_url, dumped(source).splitlines())
    engine = make_engine(catalog_url)
    with engine.begin() as connection:  # the target's copy of one score changes
        connection.execute(text("UPDATE evaluations SET value = 0.7 WHERE id = 4"))
    engine.dispose()
    with Catalog(source) as catalog:  # and the source gets a new dataset
        catalog.register_dataset("thumos14", sha("b"), format="thumos", subsets=["test"],
                                 num_videos=1, num_segments=1, num_classes=1)
    with pytest.raises(CatalogError,
                       match=r"conflict in evaluations at id=4: .*\(value\)"):
        import_(catalog_url, dumped(source).splitlines())
    assert count_rows(catalog_url, "datasets") == 1  # the new dataset was not written

    # Two catalogs filled apart both have a dataset 1: their ids collide.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other)
    with Catalog(other) as catalog:
        catalog.register_dataset("thumos14", sha("c"), format="thumos", subsets=["test"],
                                 num_videos=1, num_segments=1, num_classes=1)
    with pytest.raises(CatalogError, match=r"conflict in datasets at id=1: .*annotation_sha256"):
        import_(other, dumped(source).splitlines())
    assert count_rows(other, "videos") == 0


def test_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative SQLite URLs are taken from the run directory
    build("sqlite:///source.db")
    exported = runner.invoke(app, ["catalog", "export", "--url", "sqlite:///source.db",
                                   "-o", "out/catalog.jsonl"])
    assert exported.exit_code == 0, exported.output
    written = (tmp_path / "out" / "catalog.jsonl").read_text()
    assert written == dumped("sqlite:///source.db")
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "catalog.jsonl"]
    to_stdout = runner.invoke(app, ["catalog", "export", "--url", "sqlite:///source.db"])
    assert to_stdout.exit_code == 0 and to_stdout.stdout == written

    imported = runner.invoke(app, ["catalog", "import", "out/catalog.jsonl", "--url",
                                   "sqlite:///copy.db", "--json"])
    assert imported.exit_code == 0, imported.output
    tables = json.loads(imported.stdout)["tables"]
    assert tables["feature_videos"] == {"inserted": 3, "present": 0}

    moved = runner.invoke(app, ["catalog", "migrate", "--url", "sqlite:///source.db",
                                "--to", "sqlite:///moved.db"])
    assert moved.exit_code == 0, moved.output
    assert "22 rows checked" in moved.stderr
    assert dumped("sqlite:///moved.db") == written

    (tmp_path / "cut.jsonl").write_text("".join(written.splitlines(keepends=True)[:-1]))
    for args, said in (
        (["import", "cut.jsonl", "--url", "sqlite:///new.db"], "truncated"),
        (["import", "nowhere.jsonl", "--url", "sqlite:///new.db"], "nowhere.jsonl"),
        (["export", "--url", "sqlite:///missing.db"], "tspipe catalog upgrade"),
        (["migrate", "--url", "sqlite:///source.db", "--to", "sqlite:///copy.db"], None),
    ):
        failed = runner.invoke(app, ["catalog", *args])
        if said is None:  # migrating into a catalog holding the same rows: a no-op
            assert failed.exit_code == 0, failed.output
            continue
        assert failed.exit_code == 2, failed.output
        assert said in failed.stderr and "Traceback" not in failed.output
        assert len(failed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new.db").exists()
