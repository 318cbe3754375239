from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import av
import pytest
from typer.testing import CliRunner

from tspipe.doors.cli import app

runner = CliRunner()


def _sha(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_command_has_help():
    for cmd in (["--help"], ["run", "--help"], ["stage", "--help"], ["synth", "--help"],
                ["annotations", "--help"], ["params", "--help"], ["stages", "--help"],
                ["catalog", "--help"], ["catalog", "best", "--help"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, (cmd, res.output)
        assert "Usage" in res.output


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "tspipe", "stages"], capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[0] == "synth" and "ingest" in out and "[dataset]" in out


def test_the_command_line_loads_without_torch():
    # `tspipe --help`, `--version`, `init`, `catalog ...` answer in about a second: torch
    # (seconds to import on 2 cores) loads only with a command that runs a model.
    code = "import sys, tspipe.doors.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_the_program_exits_with_its_status_and_all_its_output(tmp_path):
    """The program skips the interpreter's teardown (os._exit): what it printed still
    reaches a pipe whole, and the exit status is the command's."""
    from tspipe import __version__

    def program(*args):
        return subprocess.run([sys.executable, "-m", "tspipe", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    version = program("--version")
    assert (version.returncode, version.stdout) == (0, f"{__version__}\n")
    helped = program("catalog", "--help")
    assert helped.returncode == 0 and helped.stdout.rstrip().endswith("╯")
    unknown = program("stage", "nope")
    assert unknown.returncode == 2 and "unknown stage 'nope'" in unknown.stderr
    usage = program("stage")  # a usage error: click's status and message
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


def test_synth_cli_is_deterministic_and_decodable(tmp_path):
    args = ["--videos", "2", "--classes", "2", "--seed", "3", "--min-duration", "20",
            "--max-duration", "21", "--width", "64", "--height", "48", "--fps", "10"]
    for out in ("a", "b"):
        res = runner.invoke(app, ["synth", str(tmp_path / out), *args])
        assert res.exit_code == 0, res.output
        assert "2 videos (0 reused)" in res.output
    assert _sha(tmp_path / "a") == _sha(tmp_path / "b")
    ann = json.loads((tmp_path / "a" / "synthactions.json").read_text())
    for vid, entry in ann["database"].items():
        with av.open(str(tmp_path / "a" / entry["url"])) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == round(entry["duration"] * 10), vid


def test_synth_cli_hard_takes_the_presets_benchmark_and_the_options_given(tmp_path):
    args = ["--difficulty", "hard", "--videos", "3", "--min-duration", "12",
            "--max-duration", "14", "--width", "64", "--height", "48", "--fps", "10"]
    res = runner.invoke(app, ["synth", str(tmp_path / "h"), *args])
    assert res.exit_code == 0, res.output
    assert "3 videos (0 reused)" in res.output and "6 classes" in res.output
    ann = json.loads((tmp_path / "h" / "synthactions.json").read_text())["database"]
    assert all(12 <= e["duration"] <= 14 for e in ann.values())
    # The preset's validation share and its short instances (0.5 s and up).
    assert sum(e["subset"] == "validation" for e in ann.values()) == 2
    normal = runner.invoke(app, ["synth", str(tmp_path / "n"), *args[2:]])
    assert normal.exit_code == 0 and "4 classes" in normal.output
    assert _sha(tmp_path / "h") != _sha(tmp_path / "n")
    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--difficulty", "harder"])
    assert bad.exit_code != 0 and "difficulty" in str(bad.exception)


def test_synth_cli_refuses_bad_values_with_the_field(tmp_path):
    res = runner.invoke(app, ["synth", str(tmp_path), "--classes", "40"])
    assert res.exit_code != 0
    assert "classes" in str(res.exception)


def test_annotations_cli_reports_real_counts(shared_data):
    gt = shared_data / "annotations/tsp/thumos14_valid_tsp_groundtruth.csv"
    res = runner.invoke(app, ["annotations", str(gt), "--json",
                              "--label-map", str(gt.parent / "thumos14_action_label_mapping.json")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["videos"] == 200 and report["classes"] == 20
    # the real file has rows past their video's end: each is listed by video and field
    assert report["issues"] and all("video" in line for line in report["issues"])


def test_params_cli_hides_the_password(tmp_path, repo_root, monkeypatch):
    monkeypatch.setenv("TSPIPE_CATALOG_URL", "postgresql+psycopg://u:hunter2@db:5432/x")
    res = runner.invoke(app, ["params", "--params", str(repo_root / "params.yaml")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["catalog"]["url"] == "postgresql+psycopg://u:***@db:5432/x"
    assert "hunter2" not in res.output
    assert data["clip"]["frames"] == 16


def test_stage_cli_unknown_stage_is_named(tmp_path):
    res = runner.invoke(app, ["stage", "extrakt", "--root", str(tmp_path)])
    assert res.exit_code != 0
    assert "extrakt" in str(res.exception) and "ingest" in str(res.exception)


@pytest.mark.slow
def test_stage_cli_runs_ingest_on_real_tsp_csv(tmp_path, shared_data, repo_root):
    """`tspipe stage ingest` on a real annotation file: outputs, metrics, catalog rows."""
    import yaml

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    tsp = shared_data / "annotations/tsp"
    raw["dataset"].update(name="thumos14",
                          annotations=str(tsp / "thumos14_test_tsp_groundtruth.csv"),
                          label_map=str(tsp / "thumos14_action_label_mapping.json"),
                          subsets=["testing"])
    raw["synth"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["stage", "ingest", "--root", str(tmp_path), "--no-track"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "metrics/ingest.json").read_text())
    assert metrics["videos"] == 212 and metrics["classes"] == 20
    report = json.loads((tmp_path / "data/annotations/report.json").read_text())
    dropped = [i for i in report["issues"] if i["action"] == "dropped_segment"]
    assert any(i["video_id"] == "video_test_0000270" for i in dropped)
    from tspipe.catalog import Catalog

    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as cat:
        (ds,) = cat.datasets()
        assert (ds.name, ds.num_videos, ds.format) == ("thumos14", 212, "tsp_csv")
        assert len(cat.videos("thumos14", status="pending")) == 212
