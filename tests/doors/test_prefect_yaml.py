"""flows/prefect.yaml: every deployment's entry point loads as a Prefect flow."""

from __future__ import annotations

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
