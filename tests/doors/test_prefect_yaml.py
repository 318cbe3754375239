"""flows/prefect.yaml: every deployment's entry point loads as a Prefect flow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

from tspipe.stages import STAGES


def test_deployments_point_at_real_flows(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    spec = yaml.safe_load((repo_root / "flows/prefect.yaml").read_text())
    names = {d["name"]: d for d in spec["deployments"]}
    assert {"pipeline", "pipeline-nightly", *STAGES} <= set(names)
    assert names["pipeline-nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    assert spec["definitions"]["work_pools"]["gpu"]["name"] == "gpu"
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        assert isinstance(flow, Flow), dep["name"]
        assert set(dep["parameters"]) <= set(flow.parameters.properties), dep["name"]


def test_workers_enter_the_run_directory_or_say_why(repo_root, tmp_path, monkeypatch):
    from tspipe.doors.prefect_steps import enter_run_directory
    from tspipe.errors import TspipeError

    spec = yaml.safe_load((repo_root / "flows/prefect.yaml").read_text())
    assert spec["pull"] == [{"tspipe.doors.prefect_steps.enter_run_directory": {}}]
    monkeypatch.delenv("TSPIPE_ROOT", raising=False)
    with pytest.raises(TspipeError, match="TSPIPE_ROOT is not set on this worker"):
        enter_run_directory()
    monkeypatch.setenv("TSPIPE_ROOT", str(tmp_path))
    with pytest.raises(TspipeError, match="no flows/ folder"):
        enter_run_directory()
    monkeypatch.setenv("TSPIPE_ROOT", str(repo_root))
    monkeypatch.chdir(tmp_path)
    assert enter_run_directory() == {"directory": str(repo_root.resolve())}
    assert Path.cwd() == repo_root.resolve()


def test_docker_compose_serves_the_stacks_databases_and_versions(repo_root):
    from tspipe.doors.stack_postgres import DATABASES

    compose = yaml.safe_load((repo_root / "infra/docker-compose.yml").read_text())
    services = compose["services"]
    initdb = (repo_root / "infra/initdb/01-databases.sql").read_text()
    assert services["postgres"]["environment"]["POSTGRES_DB"] == DATABASES["catalog"]
    assert f"CREATE DATABASE {DATABASES['mlflow']};" in initdb
    assert f"CREATE DATABASE {DATABASES['prefect']};" in initdb
    assert f"/{DATABASES['mlflow']}" in services["mlflow"]["command"]
    assert "--serve-artifacts" in services["mlflow"]["command"]
    assert services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"] \
        .endswith(f"/{DATABASES['prefect']}")
    pins = dict(line.split("==") for line in (repo_root / "constraints.txt").read_text()
                .splitlines() if "==" in line and not line.startswith("#"))
    assert services["mlflow"]["image"].endswith(f":v{pins['mlflow']}")
    assert services["prefect"]["image"].startswith(f"prefecthq/prefect:{pins['prefect']}-")
