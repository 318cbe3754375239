"""Check the dashboards users look at (MLflow UI, Prefect UI) in a real headless browser.

Debian's ``chromium`` driven through the Chrome DevTools Protocol (``websockets`` only):
the REST APIs give the ids, the pages are opened as a user would, and the rendered text
(``document.body.innerText``) is what is checked. Standalone: stdlib + websockets + httpx.
``python infra/dashboards.py screenshots|check --mlflow URL --prefect URL [--out DIR]``."""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from websockets.sync.client import connect


class DashboardError(AssertionError):
    """A page did not show what a user expects (the message includes what it showed)."""


class Browser:
    """A headless Chromium with one page, as a context manager (stopped and its profile
    removed on exit)."""

    def __init__(self, binary: str | None = None, width: int = 1440, height: int = 900,
                 start_timeout: float = 30.0):
        self.binary = binary or shutil.which("chromium") or shutil.which("chromium-browser")
        if not self.binary:
            raise RuntimeError("chromium not found (Debian: apt-get install -y chromium)")
        self.width, self.height, self.start_timeout = width, height, start_timeout
        self._ids, self._proc, self._ws, self._dir = itertools.count(1), None, None, None

    def __enter__(self) -> Browser:
        self._dir = tempfile.mkdtemp(prefix="tspipe-chromium-")
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # chromium stopped, its profile folder removed

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-port=0", f"--user-data-dir={self._dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self._dir) / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium wrote no {port_file} in {self.start_timeout} s")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        page = httpx.put(f"http://127.0.0.1:{port}/json/new?about:blank", timeout=10).json()
        self._ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def send(self, method: str, timeout: float = 60.0, **params: Any) -> dict:
        """One CDP command on the page; its result (events in between are dropped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def open(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise DashboardError(f"{url}: {result['errorText']}")
        self.url = url

    def eval(self, js: str) -> Any:
        result = self.send("Runtime.evaluate", expression=js, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{js[:80]}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def _fail(self, what: str) -> DashboardError:
        seen = self.text()
        return DashboardError(f"{getattr(self, 'url', '?')}: {what}; the page shows:\n"
                              + (seen if len(seen) < 3000 else seen[:3000] + " …"))

    def wait_for_text(self, *texts: str, timeout: float = 30.0) -> str:
        """Poll the page's text until it holds every one of ``texts``; returns the text."""
        deadline = time.monotonic() + timeout
        while (seen := self.text()) is not None and (missing := [t for t in texts
                                                                  if t not in seen]):
            if time.monotonic() > deadline:
                raise self._fail(f"{missing} not shown after {timeout} s")
            time.sleep(0.5)
        return seen

    def click_text(self, text: str) -> None:
        """Click the innermost visible element whose own text is exactly ``text``."""
        js = ("(() => { const want = " + json.dumps(text) + "; const els = [...document"
              ".querySelectorAll('*')].filter(e => e.offsetParent && e.innerText && "
              "e.innerText.trim() === want && ![...e.children].some(c => c.innerText && "
              "c.innerText.trim() === want)); if (!els.length) return false;"
              " els[els.length - 1].click(); return true; })()")
        if not self.eval(js):
            raise self._fail(f"nothing to click named {text!r}")

    def screenshot(self, path: str | Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def wait_for_selector(self, selector: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.eval(f"!!document.querySelector({json.dumps(selector)})"):
            if time.monotonic() > deadline:
                raise self._fail(f"no {selector!r} after {timeout} s")
            time.sleep(0.5)

    def click(self, selector: str) -> None:
        """Click the first element matching a CSS ``selector``."""
        if not self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                         " if (!e) return false; e.click(); return true; })()"):
            raise self._fail(f"no element {selector!r}")

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element matching ``selector`` and type ``text`` as a user would."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)


# --- MLflow -------------------------------------------------------------------------------
def _mlflow_api(base: str, path: str, body: dict | None = None, **params: Any) -> dict:
    url = f"{base.rstrip('/')}/api/2.0/mlflow/{path}"
    r = (httpx.post(url, json=body, timeout=30) if body is not None
         else httpx.get(url, params=params, timeout=30))
    if r.status_code == 404 or (r.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in r.text):
        return {}
    r.raise_for_status()
    return r.json()


def _search_runs(base: str, experiment_id: str, filter_string: str) -> list[dict]:
    return _mlflow_api(base, "runs/search", {
        "experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000,
        "order_by": ["attributes.start_time DESC"]}).get("runs", [])


def _shot(browser: Browser, shots: str | Path | None, name: str) -> None:
    """A screenshot, without MLflow 3.17's "MLflow Assistant" panel (a third of the page):
    its close button is the top-right one."""
    if not shots:
        return
    browser.eval("[...document.querySelectorAll('button[aria-label=\"Close\"]')].filter(b => "
                 "{ const r = b.getBoundingClientRect(); return r.top < 80 && r.left > "
                 "window.innerWidth * 0.6 && r.width > 0; }).forEach(b => b.click())")
    time.sleep(1)
    browser.screenshot(Path(shots) / name)


def check_mlflow(browser: Browser, mlflow_url: str, experiment_name: str = "tspipe",
                 model_name: str = "tspipe-encoder", shots: str | Path | None = None) -> dict:
    """The experiment's runs table (the latest finished ``pipeline`` run expanded to its
    stage runs), a stage run's page (its metrics, then its artifacts), the registered
    model's page (its versions). Returns what each page showed; ``shots``: a folder for
    mlflow-experiment.png, mlflow-run.png, mlflow-model.png."""
    base = mlflow_url.rstrip("/")
    exp = _mlflow_api(base, "experiments/get-by-name", experiment_name=experiment_name)
    if not exp:
        raise DashboardError(f"{base}: no experiment {experiment_name!r}")
    exp_id = exp["experiment"]["experiment_id"]
    tags = {t["key"]: t["value"] for t in exp["experiment"].get("tags", [])}
    found: dict[str, Any] = {"experiment_id": exp_id,
                             "experiment_kind": tags.get("mlflow.experimentKind")}
    parents = _search_runs(base, exp_id, "attributes.run_name = 'pipeline' "
                                         "and attributes.status = 'FINISHED'")
    if not parents:
        raise DashboardError(f"{base}: {experiment_name!r} has no finished 'pipeline' run")
    parent = parents[0]["info"]["run_id"]
    children = _search_runs(base, exp_id, f"tags.mlflow.parentRunId = '{parent}'")
    names = sorted(r["info"]["run_name"] for r in children)
    found.update(pipeline_run_id=parent, stage_runs_api=names)

    # What a user gets from a link to the experiment: MLflow 3 opens the page of the
    # global "GenAI / Model training" switch (GenAI by default), whatever the tag says.
    browser.open(f"{base}/#/experiments/{exp_id}")
    browser.wait_for_text(experiment_name, timeout=60) and time.sleep(2)
    found["experiment_link_opens"] = browser.eval("location.hash")
    browser.open(f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning")
    browser.wait_for_text("pipeline", "matching runs", timeout=60)
    row = f'.ag-row[row-id="{parent}"]'
    browser.wait_for_selector(row, timeout=60)
    if children:  # nested runs start collapsed under their parent: expand it
        browser.click(f'{row} button[data-component-id$="runnamecellrenderer.tsx_46"]')
        browser.wait_for_text(*names, timeout=30)
    found["runs_table"] = browser.eval(
        "[...document.querySelectorAll('.ag-row a[href*=\"/runs/\"]')]"
        ".map(a => a.innerText.trim())")
    _shot(browser, shots, "mlflow-experiment.png")

    # A run with metrics: an evaluate run when there is one.
    with_metrics = [r for r in children if r["data"].get("metrics")]
    with_metrics.sort(key=lambda r: not r["info"]["run_name"].startswith("evaluate"))
    run = (with_metrics or parents)[0]
    run_id, run_name = run["info"]["run_id"], run["info"]["run_name"]
    keys = sorted(m["key"] for m in run["data"].get("metrics", []))
    browser.open(f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning")
    text = browser.wait_for_text(run_name, "Metrics", *keys[:1], timeout=60)
    browser.eval("[...document.querySelectorAll('h1,h2,h3,h4,span,div')].find(e => "
                 "e.children.length < 3 && /^Metrics \\(\\d+\\)/.test(e.innerText || ''))"
                 "?.scrollIntoView()")
    found.update(metrics_run=run_name, metrics_api=keys,
                 metrics_shown=[k for k in keys if f"\n{k}\n" in text])
    _shot(browser, shots, "mlflow-run.png")
    files = [f["path"] for f in _mlflow_api(base, "artifacts/list", run_id=run_id)
             .get("files", [])]
    browser.open(f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts")
    text = browser.wait_for_text(*files[:1], timeout=60)
    found["artifacts_shown"] = [f for f in files if f in text]

    found["model_versions_shown"] = None
    model = _mlflow_api(base, "registered-models/get", name=model_name)
    if model:
        versions = _mlflow_api(base, "model-versions/search",
                               filter=f"name = '{model_name}'").get("model_versions", [])
        labels = [f"Version {n}" for n in sorted(int(v["version"]) for v in versions)]
        browser.open(f"{base}/#/models/{quote(model_name)}?workflowType=machine_learning")
        text = browser.wait_for_text(model_name, *labels, timeout=60)
        found["model_versions_shown"] = [v for v in labels if v in text]
        _shot(browser, shots, "mlflow-model.png")
    return found


def _prefect_api(base: str, path: str, body: dict) -> list[dict]:
    r = httpx.post(f"{base.rstrip('/')}/api/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def check_prefect(browser: Browser, prefect_url: str, shots: str | Path | None = None) -> dict:
    """The deployments page (searched for the scheduled ones), the latest completed flow
    run that has subflow runs (its page and its "Subflow Runs" tab). ``shots``: a folder
    for prefect-deployments.png and prefect-flow-run.png."""
    base = prefect_url.rstrip("/").removesuffix("/api")
    deployments = _prefect_api(base, "deployments/filter", {})
    scheduled = [d for d in deployments if d.get("schedules")]
    found: dict[str, Any] = {"deployments_api": sorted(d["name"] for d in deployments),
                             "scheduled_api": sorted(d["name"] for d in scheduled)}
    browser.open(f"{base}/deployments")
    text = browser.wait_for_text("Deployments", f"{len(deployments)} Deployment", timeout=60)
    time.sleep(1.5)
    text = browser.text()
    found["deployments_shown"] = sorted(d["name"] for d in deployments  # 10 a page
                                        if f"\n{d['name']}\n" in f"\n{text}\n")
    if scheduled:  # one page holds 10: search for the first scheduled one
        name = scheduled[0]["name"]
        search = 'input[placeholder*="earch"], input[type="search"]'
        browser.wait_for_selector(search, timeout=30)
        browser.type_into(search, name.split("-")[0])  # "pipeline": both pipeline ones
        browser.wait_for_text(name, timeout=30) and time.sleep(1.5)
        text = browser.text()
    found["schedules_shown"] = [line for line in text.splitlines()
                                if line.startswith(("Every", "At ", "Cron"))]
    _shot(browser, shots, "prefect-deployments.png")

    # The comparison's Markdown artifact: "mAP@0.5" must stay text, not a mailto: link.
    if latest := _prefect_api(base, "artifacts/filter", {"artifacts": {"key": {"any_": [
            "tspipe-compare"]}}, "sort": "CREATED_DESC", "limit": 1}):
        browser.open(f"{base}/artifacts/artifact/{latest[0]['id']}")
        browser.wait_for_text("mAP@0.5", timeout=60)
        found["compare_artifact_mailto_links"] = browser.eval(
            "document.querySelectorAll('a[href^=\"mailto:\"]').length")
        _shot(browser, shots, "prefect-artifact.png")

    runs = _prefect_api(base, "flow_runs/filter", {
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}},
                      "parent_task_run_id": {"is_null_": True}},
        "sort": "START_TIME_DESC", "limit": 20})
    for run in runs:  # the latest with subflow runs
        if subflows := _prefect_api(base, "flow_runs/filter", {
                "flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}},
                "sort": "START_TIME_DESC", "limit": 200}):
            break
    else:
        return {**found, "flow_run": None}
    names = sorted(r["name"] for r in subflows)
    found.update(flow_run=run["name"], flow_run_id=run["id"], subflow_runs_api=names)
    browser.open(f"{base}/runs/flow-run/{run['id']}")
    text = browser.wait_for_text(run["name"], "Completed", "Subflow Runs", timeout=60)
    time.sleep(3)  # the graph is drawn on a canvas: no text to wait for
    found["graph_canvas"] = browser.eval("document.querySelectorAll('canvas').length")
    _shot(browser, shots, "prefect-flow-run.png")
    browser.click_text("Subflow Runs")
    text = browser.wait_for_text(  # 10 a page, the newest first
        *[r["name"] for r in subflows[:5]], timeout=60)
    found["subflow_runs_shown"] = [n for n in names if n in text]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["screenshots", "check"])
    parser.add_argument("--mlflow", required=True, help="MLflow server, e.g. http://host:5000")
    parser.add_argument("--prefect", required=True, help="Prefect server, e.g. http://host:4200")
    parser.add_argument("--experiment", default="tspipe")
    parser.add_argument("--out", default="docs/screenshots", help="screenshots' folder")
    args = parser.parse_args(argv)
    shots = args.out if args.command == "screenshots" else None
    with Browser() as browser:
        found = {"mlflow": check_mlflow(browser, args.mlflow, args.experiment, shots=shots),
                 "prefect": check_prefect(browser, args.prefect, shots=shots)}
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
