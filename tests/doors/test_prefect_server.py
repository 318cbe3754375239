"""A real Prefect server's scheduler creates the runs of flows/prefect.yaml's schedules.

With SQLAlchemy 2.1 the pinned Prefect's scheduler failed every loop ("Can't evaluate bulk
DML statement") and never created a scheduled run: deploy succeeded, nothing ever ran.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

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
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    spec = yaml.safe_load((repo_root / "flows/prefect.yaml").read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "pipeline-nightly")
    cron = nightly["schedules"][0]

    async def scheduled() -> dict[str, int]:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="cpu", type="process"))
            flow_id = await client.create_flow_from_name("tspipe-pipeline")
            ids = {
                "nightly": await client.create_deployment(
                    flow_id=flow_id, name="pipeline-nightly", work_pool_name="cpu",
                    entrypoint=nightly["entrypoint"], schedules=[DeploymentScheduleCreate(
                        schedule=CronSchedule(cron=cron["cron"], timezone=cron["timezone"]),
                        active=True)]),
                "interval": await client.create_deployment(
                    flow_id=flow_id, name="every-2-minutes", work_pool_name="cpu",
                    entrypoint=nightly["entrypoint"], schedules=[DeploymentScheduleCreate(
                        schedule=IntervalSchedule(interval=timedelta(minutes=2)),
                        active=True)]),
            }
            counts: dict[str, int] = {}
            for _ in range(60):
                runs = await client.read_flow_runs()
                counts = {name: sum(r.deployment_id == i for r in runs)
                          for name, i in ids.items()}
                if all(counts.values()):
                    break
                await asyncio.sleep(1)
            return counts

    counts = asyncio.run(scheduled())
    log = prefect_server.read_text()
    assert "bulk DML" not in log, log[-3000:]
    assert counts["nightly"] >= 1 and counts["interval"] >= 1, (counts, log[-3000:])
