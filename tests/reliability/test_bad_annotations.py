"""Bad annotation entries never vanish: each video ingest leaves out is an issue in
data/annotations/report.json naming it, the counts add up, the rest goes on; with
``dataset.strict: true`` an error stops the run with exit code 2."""

from __future__ import annotations

import json

from reliability_helpers import assert_clean_failure, tspipe, write_params

from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

# video id -> (subset, the issue's field and words; None: kept)
CASES = {
    "v_good": ("training", None),
    "-cwPzzcNpGs": ("validation", None),  # a raw ActivityNet id: kept
    "subset_case": ("Validation", ("subset", "did you mean 'validation'")),
    "subset_typo": ("trainng", ("subset", "did you mean 'training'")),
    "subset_other": ("testing", ("subset", "is not one of dataset.subsets")),
    "vidéo_unicode": ("training", ("video id", "cannot be used as a file name")),
    "id with space": ("training", ("video id", "cannot be used as a file name")),
    "a/b": ("training", ("video id", "cannot be used as a file name")),
    "..": ("training", ("video id", "cannot be used as a file name")),
    ".hidden": ("training", ("video id", "cannot be used as a file name")),
}


def _annotations(path) -> None:
    db = {vid: {"subset": subset, "duration": 30.0, "url": f"videos/{vid}.mp4",
                "annotations": [{"segment": [2.0, 9.0], "label": "rise"}]}
          for vid, (subset, _) in CASES.items()}
    path.write_text(json.dumps({"version": "1.3", "database": db}))


def test_every_left_out_video_is_an_issue_and_the_counts_add_up(tmp_path, ledger) -> None:
    root = tmp_path / "run"
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": "ann.json", "subsets": ["training", "validation"]})
    _annotations(root / "ann.json")
    result = run_stage("ingest", load_params(root / "params.yaml"), RunPaths.at(root),
                       NullReporter(), track=False).result
    report = json.loads((root / "data/annotations/report.json").read_text())
    issues = {i["video_id"]: i for i in report["issues"]}
    kept = sorted(v for v, (_, why) in CASES.items() if why is None)
    assert sorted(json.loads((root / "data/annotations/annotations.json").read_text())
                  ["database"]) == kept
    assert result.videos == report["summary"]["kept"]["videos"] == len(kept)
    assert report["summary"]["dropped"]["videos"] == len(CASES) - len(kept)
    for vid, (_, why) in CASES.items():
        if why is None:
            assert vid not in issues
            continue
        field, words = why
        issue = issues[vid]
        assert (issue["field"], issue["action"]) == (field, "dropped_video"), issue
        assert words in issue["message"], issue
        ledger.record("bad_input", f"annotation-{field.replace(' ', '-')}:{vid}")
    assert result.errors == 5 and result.warnings == 3


def test_strict_stops_on_an_unsafe_id(tmp_path, ledger) -> None:
    root = tmp_path / "run"
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": "ann.json", "strict": True})
    _annotations(root / "ann.json")
    proc = tspipe(root, "stage", "ingest")
    assert_clean_failure(proc, "ann.json", "dataset.strict", "cannot be used as a file name")
    assert not (root / "data/annotations/annotations.json").exists()
    ledger.record("bad_input", "annotation-strict")
