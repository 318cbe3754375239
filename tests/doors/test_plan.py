"""`tspipe run --dry-run`'s plan: stage runs in order, counts, cache states, estimates."""

from __future__ import annotations

from tspipe.config import load_params
from tspipe.doors.plan import make_plan
from tspipe.paths import RunPaths
from tspipe.stages import instances


def test_demo_plan_before_any_run_names_every_stage_run_and_runs_them(tmp_path, repo_root):
    params = load_params(repo_root / "params.yaml")
    plan = make_plan(params, RunPaths.at(tmp_path))
    assert [r["stage"] for r in plan["stages"]] == instances(params)
    assert plan["stages"][0]["stage"] == "synth"
    assert all(r["cache"].startswith("runs") for r in plan["stages"])
    # the synth stage makes the annotations: nothing to count yet, nothing missing
    assert plan["videos"] is None and "synthactions.json" in plan["annotations_note"]
    assert plan["missing"] == []
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_plan_counts_clips_from_the_annotations_and_the_clip_section(tmp_path, repo_root,
                                                                    shared_data):
    import yaml

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    tsp = shared_data / "annotations/tsp"
    raw["dataset"].update(annotations=str(tsp / "thumos14_valid_tsp_groundtruth.csv"),
                          subsets=["validation"])
    raw["synth"]["enabled"] = False
    plans = {}
    for stride in (16, 1):
        raw["clip"]["stride"] = stride
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
        plans[stride] = make_plan(load_params(tmp_path / "p.yaml"), RunPaths.at(tmp_path))
    assert plans[16]["videos"] == {"validation": 200}
    dense, sparse = plans[1]["clips"]["validation"], plans[16]["clips"]["validation"]
    assert 15 * sparse < dense < 16 * sparse  # stride 1: ~16x the windows, less the tails
    flow = next(r for r in plans[16]["stages"] if r["stage"] == "flow")
    assert flow["estimate_s"] is None and "flow.enabled: false" in flow["counts"]
    # no measured figure for the demo's tiny encoder: said, not invented
    extract = next(r for r in plans[16]["stages"] if r["stage"] == "extract@tsp")
    assert extract["estimate_s"] is None
    assert "no measured figure" in extract["estimate_source"]
