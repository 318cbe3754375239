"""A real Prefect server's scheduler creates the runs of flows/prefect.yaml's schedules.

With SQLAlchemy 2.1 the pinned Prefect's scheduler failed every loop ("Can't evaluate bulk
DML statement") and never created a scheduled run: deploy succeeded, nothing ever ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path, monkeypatch):
    """A Prefect server on SQLite in a temporary home, its scheduler looping every 2 s."""
    port = _free_port()
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prefect server did not start in 120 s"
            time.sleep(0.5)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield tmp_path / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_nightly_and_an_interval_schedule_get_runs(prefect_server, repo_root):
    # Plain REST calls: Prefect's client in this process may hold the settings of the
    # tests' ephemeral API, and must not talk to it instead.
    api = os.environ["PREFECT_API_URL"]
    spec = yaml.safe_load((repo_root / "flows/prefect.yaml").read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "pipeline-nightly")
    cron = nightly["schedules"][0]

    def post(path: str, body: dict) -> dict | list:
        r = httpx.post(f"{api}/{path}", json=body, timeout=30)
        assert r.is_success, (path, r.status_code, r.text)
        return r.json()

    post("work_pools/", {"name": "cpu", "type": "process"})
    flow_id = post("flows/", {"name": "tspipe-pipeline"})["id"]
    schedules = {"nightly": {"cron": cron["cron"], "timezone": cron["timezone"]},
                 "interval": {"interval": 120.0}}
    ids = {name: post("deployments/", {
        "name": name, "flow_id": flow_id, "work_pool_name": "cpu",
        "entrypoint": nightly["entrypoint"],
        "schedules": [{"schedule": schedule, "active": True}]})["id"]
        for name, schedule in schedules.items()}
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        counts = {name: len(post("flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [i]}}})) for name, i in ids.items()}
        if all(counts.values()):
            break
        time.sleep(1)
    log = prefect_server.read_text()
    assert "bulk DML" not in log, log[-3000:]
    assert counts["nightly"] >= 1 and counts["interval"] >= 1, (counts, log[-3000:])
