"""What users see in the dashboards of a stack that ran the pipeline: MLflow's UI (runs,
metrics, plots, the registered encoder) and Prefect's UI (deployments, a flow run and its
subflow runs), checked in a headless Chromium (``infra/dashboards.py``). Called by slow
end-to-end tests that bring a stack up: ``assert_dashboards(mlflow_url, prefect_url)``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
STAGE_RUNS = {"extract@tsp", "evaluate@tsp"}  # at least: named by stage and variant


def load_dashboards() -> ModuleType:
    """``infra/dashboards.py``, imported by path (infra/ is no package)."""
    if "tspipe_dashboards" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tspipe_dashboards",
                                                      REPO / "infra" / "dashboards.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["tspipe_dashboards"] = module
        spec.loader.exec_module(module)
    return sys.modules["tspipe_dashboards"]


def assert_dashboards(mlflow_url: str, prefect_url: str, experiment: str = "tspipe",
                      screenshots_dir: str | Path | None = None,
                      stage_runs: set[str] = STAGE_RUNS) -> dict:
    """Open the pages a user opens; assert what they show (``stage_runs``: stage runs
    that must be among the pipeline's). Returns what was found."""
    dash = load_dashboards()
    with dash.Browser() as browser:
        ml = dash.check_mlflow(browser, mlflow_url, experiment, shots=screenshots_dir)
        pf = dash.check_prefect(browser, prefect_url, shots=screenshots_dir)

    # The experiment's runs table: the pipeline run expanded to its stage runs.
    table = set(ml["runs_table"])
    assert "pipeline" in table, ml
    assert set(ml["stage_runs_api"]) >= stage_runs, ml["stage_runs_api"]
    assert set(ml["stage_runs_api"]) <= table, (ml["stage_runs_api"], ml["runs_table"])
    # An evaluate run's page: its metrics, and its plots under Artifacts.
    assert ml["metrics_run"].startswith("evaluate@"), ml["metrics_run"]
    for key in ("bmn.auc", "bmn.average_map"):
        assert key in ml["metrics_shown"], ml["metrics_shown"]
    assert any(a.endswith(".png") for a in ml["artifacts_shown"]), ml["artifacts_shown"]
    # The registry: the fine-tuned encoders.
    assert ml["model_versions_shown"], ml

    # Prefect: the deployments, one with a schedule shown; a completed pipeline flow run
    # with its stages as subflow runs.
    assert pf["deployments_shown"], pf
    assert pf["scheduled_api"] and pf["schedules_shown"], pf
    assert pf["flow_run"] is not None, "no completed flow run with subflow runs"
    assert pf["subflow_runs_shown"], pf
    assert set(pf["subflow_runs_shown"]) <= set(pf["subflow_runs_api"]), pf
    assert pf.get("compare_artifact_mailto_links") == 0, pf
    return {"mlflow": ml, "prefect": pf}
