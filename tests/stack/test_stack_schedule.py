"""The team stack for real: `tspipe stack up` (a managed PostgreSQL, the MLflow and Prefect
servers on it, pools, workers, `prefect deploy --all`), the pipeline run by a worker from
an interval schedule, a second scheduled run after a video is added, then `stack down`
with nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from stack_helpers import PASSWORD, VARIANT, make_run_dir, stack, stack_env, write_annotations

pytestmark = pytest.mark.slow

STAGES = ["ingest", "download", "decode", "flow", "base", "gvf", f"extract@{VARIANT}",
          f"evaluate@{VARIANT}", "compare"]


@pytest.fixture
def run_dir(repo_root):
    # Not under pytest's 0700 temp root: as root, the managed PostgreSQL runs as `postgres`
    # and must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="tspipe-stack-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        stack(root, "down", timeout=180)
        shutil.rmtree(root, ignore_errors=True)


def _api(stack_json: dict) -> str:
    return f"http://127.0.0.1:{stack_json['ports']['prefect']}/api"


def _flow_runs(api: str, **flt) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": flt, "sort": "START_TIME_ASC"},
                   timeout=30)
    r.raise_for_status()
    return r.json()


def _wait_scheduled_run(api: str, deployment_id: str, after: float, timeout: float, *,
                        last: bool = False) -> dict:
    """The first run of the deployment that started after ``after`` (epoch seconds) and
    reached a final state; fails on a failed or crashed one, with its state message.
    ``last``: once it runs, the schedule is paused and the runs queued behind it are
    deleted (a 10 s interval queues one every 10 s; none may start after it)."""
    deadline = time.monotonic() + timeout
    stopped = False
    while time.monotonic() < deadline:
        for run in _flow_runs(api, deployment_id={"any_": [deployment_id]}):
            start = run.get("start_time")
            if not start or _epoch(start) < after or _collided(run):
                continue
            if last and not stopped:
                _stop_schedule(api, deployment_id, keep=run["id"])
                stopped = True
            state = run["state"]["type"]
            if state in ("FAILED", "CRASHED", "CANCELLED"):
                pytest.fail(f"scheduled run {run['name']}: {state}: {run['state']['message']}")
            if state == "COMPLETED":
                return run
            break
        time.sleep(3)
    pytest.fail(f"no scheduled run of {deployment_id} completed in {timeout:.0f} s")


def _collided(run: dict) -> bool:
    """Cancelled by the deployment's CANCEL_NEW limit: it found a run going (never ran)."""
    return run["state"]["type"] == "CANCELLED" and "concurrency limit" in (
        run["state"].get("message") or "")


def _stop_schedule(api: str, deployment_id: str, keep: str) -> None:
    httpx.patch(f"{api}/deployments/{deployment_id}", json={"paused": True},
                timeout=30).raise_for_status()
    queued = _flow_runs(api, deployment_id={"any_": [deployment_id]},
                        state={"type": {"any_": ["SCHEDULED", "PENDING"]}})
    for run in queued:
        if run["id"] != keep:
            httpx.delete(f"{api}/flow_runs/{run['id']}", timeout=30).raise_for_status()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_schedule_fires_on_the_stack_and_picks_up_a_new_video(run_dir, repo_root):
    from stack_checks import check_catalog, check_mlflow_runs

    ids = make_run_dir(run_dir, repo_root, interval_s=10)
    from stack_helpers import free_port

    ports = {"postgres": free_port(), "mlflow": free_port(), "prefect": free_port()}
    t0 = time.monotonic()
    up = stack(run_dir, "up", *(f"--{k}-port={v}" for k, v in ports.items()))
    startup = time.monotonic() - t0
    assert up.returncode == 0, up.stderr[-4000:]
    assert "Traceback" not in up.stderr
    assert PASSWORD not in up.stdout + up.stderr  # printed as ${TSPIPE_STACK_PASSWORD}
    assert f'export MLFLOW_TRACKING_URI="http://127.0.0.1:{ports["mlflow"]}"' in up.stdout
    state = json.loads((run_dir / ".tspipe/stack/stack.json").read_text())
    api = _api(state)
    status = stack(run_dir, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert {r["service"]: r["state"] for r in json.loads(status.stdout)} == {
        "postgres": "healthy", "mlflow": "healthy", "prefect": "healthy",
        "worker-cpu": "online", "worker-gpu": "online"}
    again = stack(run_dir, "up")  # idempotent: the same processes, nothing started twice
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run_dir / ".tspipe/stack/stack.json").read_text())["processes"] == \
        state["processes"]

    deployment = httpx.get(f"{api}/deployments/name/tspipe-pipeline/pipeline-nightly",
                           timeout=30).json()
    assert deployment["schedules"] and deployment["schedules"][0]["active"]
    first = _wait_scheduled_run(api, deployment["id"], after=0, timeout=600)
    first_wall = _epoch(first["end_time"]) - _epoch(first["start_time"])
    subflows = _flow_runs(api, parent_flow_run_id={"any_": [first["id"]]})
    assert [r["name"] for r in subflows] == STAGES
    assert {r["state"]["type"] for r in subflows} == {"COMPLETED"}

    env = {"TSPIPE_CATALOG_URL": state_url(state), "MLFLOW_TRACKING_URI":
           f"http://127.0.0.1:{ports['mlflow']}"}
    version = check_catalog(env["TSPIPE_CATALOG_URL"], ids[:3])
    check_mlflow_runs(env["MLFLOW_TRACKING_URI"], STAGES)

    # A new video in the annotation file: the next scheduled run extracts it alone.
    added = time.time()
    write_annotations(run_dir, ids)
    second = _wait_scheduled_run(api, deployment["id"], after=added, timeout=600, last=True)
    second_wall = _epoch(second["end_time"]) - _epoch(second["start_time"])
    index = json.loads((run_dir / f"features/{VARIANT}/current.json").read_text())
    assert index["feature_version"] != version
    new = check_catalog(env["TSPIPE_CATALOG_URL"], ids, reused_from=version)
    assert new == index["feature_version"]
    later = [r for r in _flow_runs(api, deployment_id={"any_": [deployment["id"]]})
             if r["start_time"] and _epoch(r["start_time"]) > _epoch(second["start_time"])
             and not _collided(r)]
    assert later == [], [r["name"] for r in later]

    # What users look at, in a real browser (.ci/run installs Debian's chromium).
    from dashboard_checks import assert_dashboards

    assert shutil.which("chromium"), "no chromium: apt-get install chromium (see .ci/run)"
    t_dash = time.monotonic()
    seen = assert_dashboards(env["MLFLOW_TRACKING_URI"], api.removesuffix("/api"),
                             stage_runs={f"extract@{VARIANT}", f"evaluate@{VARIANT}"},
                             screenshots_dir=os.environ.get("TSPIPE_SCREENSHOTS"))
    assert seen["prefect"]["flow_run"].startswith("pipeline"), seen["prefect"]["flow_run"]

    t_down = time.monotonic()
    down = stack(run_dir, "down", timeout=180)
    t_end = time.monotonic()
    assert down.returncode == 0, down.stderr[-3000:]
    for name, info in state["processes"].items():
        assert not Path(f"/proc/{info['pid']}").exists(), f"{name} still runs"
    assert not (run_dir / ".tspipe/stack/pg/postmaster.pid").exists()
    leftover = [p for p in Path("/proc").glob("[0-9]*")
                if str(run_dir).encode() in _cmdline(p)]
    assert not leftover, [_cmdline(p) for p in leftover]
    print(f"\nstack up {startup:.1f} s; first scheduled run {first_wall:.1f} s, "
          f"second (1 new video) {second_wall:.1f} s; dashboards {t_down - t_dash:.1f} s; "
          f"stack down {t_end - t_down:.1f} s")


def state_url(state: dict) -> str:
    pg = state["postgres"]
    return f"postgresql+psycopg://tspipe:{PASSWORD}@{pg['host']}:{pg['port']}/tspipe_catalog"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_stack_errors_are_named_and_leave_nothing_running(tmp_path):
    env = stack_env()
    env.pop("TSPIPE_STACK_PASSWORD")
    out = stack(tmp_path, "up", "--no-deploy", env=env)
    assert out.returncode == 2 and "TSPIPE_STACK_PASSWORD is not set" in out.stderr
    assert "Traceback" not in out.stderr
    out = stack(tmp_path, "up", env=stack_env())
    assert out.returncode == 2 and "flows/prefect.yaml: no such file" in out.stderr
    # An admin URL whose password is wrong: named, with the variable to fix.
    url = os.environ.get("TSPIPE_TEST_POSTGRES_URL")
    if url:
        from sqlalchemy.engine import make_url

        bad = make_url(url).set(password="not-the-password")
        out = stack(tmp_path, "up", "--no-deploy", env=stack_env(
            TSPIPE_STACK_POSTGRES_URL=bad.render_as_string(hide_password=False)))
        assert out.returncode == 2, out.stderr
        assert "refused the password" in out.stderr and "TSPIPE_STACK_POSTGRES_URL" in out.stderr
    # A port another program holds: named, with the option to choose another.
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = stack(tmp_path, "up", "--no-deploy", f"--postgres-port={port}")
    assert out.returncode == 2, out.stderr
    assert f"port {port} (postgres) is taken" in out.stderr and "--postgres-port" in out.stderr
    assert not (tmp_path / ".tspipe/stack/pg/postmaster.pid").exists()
