"""`nextbuy bench faults`: the fault matrix, run for real on the tiny store.

A fresh git copy of the project (presets/tiny.yaml over params.yaml) runs every stage
once; that state (params.yaml, dvc.lock, every output, the artifact store) is the
baseline each case starts from and is put back after it. Then:

* bad input (``fault_cases.CASES``: params, real graph and log files, damaged upstream
  outputs): the stage runs as ``dvc repro`` and Airflow run it; a refusal is *clear* when
  the exit code is non-zero, no traceback is printed and the message names what the case
  says (file, column or key, offending rows); the stage's outputs must be byte-identical
  to the baseline afterwards — as ``make run`` and the Airflow tasks leave them: when a
  bare ``dvc repro`` lost them (DVC deletes outputs before it checks params.yaml), they run
  ``nextbuy restore-outputs``; such cases are counted apart as ``bare_dvc_lost``. A case
  whose convention is to clean (exact duplicate rows) must exit 0 with a warning that
  counts what it dropped.
* kill -9 of the stage's whole process group at several points of every stage (fractions
  of its measured run time), then ``make run`` as a user would run it: it must succeed, every
  output must be there, no registry version may be left incomplete without being marked
  orphaned, no MLflow run may stay RUNNING, and the champion must be complete; the same after
  DVC's rwlock or dvc.lock is left truncated (``fault_recovery``).
* SIGTERM during deploy's registration and monitor's publishing, a file-size limit during
  train, and ``make mlflow-ui`` / ``make docs`` stopped (``fault_kills``).
* malformed scoring requests to the champion served as ``make serve`` serves it: each
  must get its 4xx naming the problem, and the server must stay up.

JSON counts: ``cases`` (all), ``clear_errors`` (bad input and requests refused clearly,
or cleaned with a counted warning), ``silent_accepts`` (accepted with no word),
``tracebacks`` (a Python traceback or an HTTP 5xx), ``unclear`` (refused without naming
the problem), ``outputs_lost`` (a refusal that changed the stage's outputs; a kill after
which an output is missing), ``orphans`` (incomplete unmarked versions and RUNNING runs
after the recoveries), ``recovered`` (kills after which the recovery succeeded),
``server_down``, ``bare_dvc_lost`` — and one row per case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import Progress

from nextbuy import yaml_io
from nextbuy.bench import fault_cases, fault_kills, fault_recovery, fault_release
from nextbuy.bench.dag import tiny_params
from nextbuy.bench.fault_verdicts import COUNTS, _print, judge, judge_request, tally
from nextbuy.bench.project_copy import copy_project, project_env
from nextbuy.mlops import io
from nextbuy.orchestration.names import PROJECT_DIR_ENV
from nextbuy.stage_list import dag_stages

KILL_POINTS = fault_recovery.KILL_POINTS

__all__ = [
    "COUNTS",
    "KILL_POINTS",
    "Project",
    "capture",
    "judge",
    "judge_request",
    "run",
    "run_case",
    "tally",
]


# ---- the project copy ----------------------------------------------------------------------


@dataclass
class Project:
    root: Path
    params: dict
    env: dict[str, str]

    def run(self, *cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def lock(self) -> dict:
        """dvc.lock's stages; none when it is missing or unreadable (a case that broke it says so)."""
        try:
            doc = yaml_io.load((self.root / "dvc.lock").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        stages = doc.get("stages") if isinstance(doc, dict) else None
        return stages if isinstance(stages, dict) else {}

    def outs(self, stage: str) -> list[str]:
        return [out["path"] for out in (self.lock().get(stage) or {}).get("outs", [])]


def _files(root: Path, rel: str) -> dict[str, bytes]:
    path = root / rel
    if path.is_file():
        return {rel: path.read_bytes()}
    if not path.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def capture(project: Project) -> dict[str, bytes]:
    """params.yaml, dvc.lock, every stage output and the artifact store, as bytes."""
    tops = ["params.yaml", "dvc.lock", "mlartifacts"]
    tops += [out for stage in project.lock() for out in project.outs(stage)]
    return {k: v for top in tops for k, v in _files(project.root, top).items()}


def put_back(project: Project, snapshot: dict[str, bytes]) -> None:
    """Make the tracked state exactly ``snapshot`` again (extra files in output folders go)."""
    tops = {"mlartifacts", *[out for stage in project.lock() for out in project.outs(stage)]}
    for top in tops:
        path = project.root / top
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for rel, data in snapshot.items():
        (project.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (project.root / rel).write_bytes(data)


def stage_files(project: Project, snapshot: dict[str, bytes], stage: str) -> dict[str, bytes]:
    outs = project.outs(stage)
    return {
        k: v for k, v in snapshot.items() if any(k == o or k.startswith(o.rstrip("/") + "/") for o in outs)
    }


def write_real_inputs(project: Project) -> None:
    """The tiny store as a 'real' source: its edges and impressions by product key."""
    import pandas as pd

    from nextbuy import paths

    root = project.root
    (root / fault_cases.INPUTS).mkdir(exist_ok=True)
    keys = pd.read_parquet(root / paths.PRODUCTS).set_index("product_id")["product_key"]
    edges = pd.read_parquet(root / paths.EDGES)
    pd.DataFrame({"src": keys[edges["src"]].to_numpy(), "dst": keys[edges["dst"]].to_numpy()}).to_csv(
        root / fault_cases.GRAPH, index=False
    )
    log = pd.read_parquet(root / paths.IMPRESSIONS).drop(columns="split")
    # An edge list knows only the products on its edges: a log of others is refused.
    linked = set(edges["src"]) | set(edges["dst"])
    log = log[log["source_id"].isin(linked) & log["shown_id"].isin(linked)].reset_index(drop=True)
    log["source_id"] = keys[log["source_id"]].to_numpy()
    log["shown_id"] = keys[log["shown_id"]].to_numpy()
    log.to_parquet(root / fault_cases.LOG)
    write_store_logs(project)


def write_store_logs(project: Project) -> None:
    """The tiny store as a store's raw logs (``fault_cases.STORE``), six days past its snapshot."""
    import pandas as pd

    from nextbuy.config import IngestConfig
    from nextbuy.data.store_logs import simulated_logs, write_logs

    cfg = IngestConfig.model_validate(project.params["ingest"])
    until = pd.Timestamp(fault_cases.SNAPSHOT) + pd.Timedelta(days=6)
    write_logs(simulated_logs(cfg.simulator, cfg.seed, until), project.root / fault_cases.STORE)


def build(root: Path, dest: Path, console: Console) -> tuple[Project, dict[str, float]]:
    """The copy with every stage run once, and each stage's run time (forced, one at a time)."""
    project = Project(copy_project(root, dest, tiny_params(root)), tiny_params(root), project_env(dest))
    stages = dag_stages(root, "training") + dag_stages(root, "monitoring")
    _must(project.run("dvc", "repro"), "dvc repro")
    seconds = {}
    for stage in stages:
        console.print(f"timing {stage} …", highlight=False)
        started = time.perf_counter()
        _must(project.run("dvc", "repro", "--single-item", "--force", stage), f"dvc repro {stage}")
        seconds[stage] = time.perf_counter() - started
    _must(project.run("dvc", "repro"), "dvc repro")  # downstream of anything that changed
    write_real_inputs(project)
    return project, seconds


def _must(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


# ---- the three kinds of case ---------------------------------------------------------------


def run_case(project: Project, case: fault_cases.Case, baseline: dict[str, bytes]) -> dict:
    before = stage_files(project, baseline, case.stage)
    project.write_params(case.params(project.params) if case.params else project.params)
    inputs = project.root / fault_cases.INPUTS
    present = set(inputs.iterdir()) if inputs.is_dir() else set()
    if case.files:
        case.files(project.root)
    try:
        return _judged_run(project, case, baseline, before)
    finally:  # the case's own input files go: inputs/ is a dependency of the next case's stages
        for added in set(inputs.iterdir()) - present if inputs.is_dir() else ():
            shutil.rmtree(added) if added.is_dir() and not added.is_symlink() else added.unlink()


def _judged_run(project: Project, case: fault_cases.Case, baseline: dict[str, bytes], before: dict) -> dict:
    cmd = ["dvc", "repro", *(["--single-item", "--force"] if case.single else []), case.stage]
    result = project.run(*cmd)
    output = result.stdout + result.stderr
    same = stage_files(project, capture(project), case.stage) == before
    bare_dvc_lost = case.expect == "refuse" and not same
    if bare_dvc_lost:  # what make run and the Airflow tasks do after a failed dvc repro
        project.run("nextbuy", "restore-outputs")
        same = stage_files(project, capture(project), case.stage) == before
    verdict = judge(case, result.returncode, output, same)
    put_back(project, baseline)
    tail = "\n".join(line for line in output.splitlines() if line.strip())[-600:]
    return {
        "group": case.group,
        "case": case.name,
        "stage": case.stage,
        "exit": result.returncode,
        **verdict,
        "bare_dvc_lost": bare_dvc_lost,
        "message": tail,
    }


def _post(url: str, request: fault_cases.Request) -> tuple[int | None, str]:
    req = urllib.request.Request(
        f"{url}/invocations", data=request.body, method="POST", headers={"Content-Type": request.content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as err:
        return None, str(err)


def request_cases(project: Project, tmp: Path, only: str | None = None) -> list[dict]:
    """The malformed requests, then the abuse cases (``fault_serving``), to the champion served
    as ``make serve`` serves it; the SIGTERM case gets a server of its own."""
    import pandas as pd

    from nextbuy import paths
    from nextbuy.bench import fault_serving, serving_fixtures
    from nextbuy.serving import MAX_BODY_BYTES, MAX_REQUEST_ROWS, MAX_TOP_K

    def server(log: Path) -> serving_fixtures.RestServer:
        uri = f"models:/{project.params['deploy']['model_name']}@champion"
        tracking = project.env["MLFLOW_TRACKING_URI"]
        return serving_fixtures.RestServer(uri, tracking, log, params=project.root / "params.yaml")

    def wanted(name: str) -> bool:
        return selected(name, only)

    n_products = len(pd.read_parquet(project.root / paths.PRODUCTS, columns=["product_id"]))
    rows = []
    running = server(tmp / "serve.log")
    with running:
        assert running.proc is not None  # entering the block started it
        for request in fault_cases.requests(MAX_REQUEST_ROWS, MAX_TOP_K, MAX_BODY_BYTES):
            if not wanted(request.name):
                continue
            status, message = _post(running.url, request)
            alive = running.ping() == 200 and running.proc.poll() is None
            verdict = judge_request(request, status, message, alive)
            rows.append(
                {
                    "group": "request",
                    "case": request.name,
                    "stage": "serve",
                    "exit": status,
                    **verdict,
                    "message": message[:600],
                }
            )
        if wanted(fault_serving.DROPPED):
            rows.append(fault_serving.dropped_case(running, n_products))
        if wanted(fault_serving.AT_ONCE):
            rows.append(fault_serving.at_once_case(running, n_products))
    if wanted(fault_serving.SIGTERM):
        drain_s = project.params["serving"]["drain_s"]
        rows.append(fault_serving.sigterm_case(server, n_products, drain_s, tmp))
    return rows


# ---- the run -------------------------------------------------------------------------------


def selected(name: str, only: str | None) -> bool:
    """Whether case ``name`` runs: ``only`` is None, or one of its ``|``-separated parts is in it."""
    return only is None or any(part in name for part in only.split("|"))


def run(out: Path, root: Path | None = None, only: str | None = None) -> dict:
    """``only``: substrings of case names, ``|``-separated (a quick look at some cases; the
    counts cover those; kill cases run when one of them contains "kill")."""
    console = Console()
    root = Path(root or os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        project, seconds = build(root, Path(tmp) / "project", console)
        baseline = capture(project)
        cases = [c for c in fault_cases.CASES if selected(c.name, only)]
        rows = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("bad input", total=len(cases))
            for case in cases:
                progress.update(task, description=f"{case.stage}: {case.name}")
                rows.append(run_case(project, case, baseline))
                progress.advance(task)
        console.print("malformed requests, serving under abuse …")
        rows += request_cases(project, Path(tmp), only)
        with_kills = only is None or any("kill" in part for part in only.split("|"))
        if selected(fault_release.NAME, only):
            console.print("a release, params reverted …")
            rows.append(fault_release.release_case(project, lambda: put_back(project, baseline)))
        kills = [(s, at) for s in seconds for at in KILL_POINTS] if with_kills else []
        settle = partial(fault_recovery.settle, project)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("kill -9", total=len(kills))
            for stage, at in kills:
                progress.update(task, description=f"kill -9 {stage} at {at:.0%}")
                rows.append(settle(fault_recovery.kill_case(project, stage, at, seconds[stage])))
                progress.advance(task)
        for name in filter(partial(selected, only=only), fault_recovery.TRUNCATED):
            console.print(f"{name}, make run …")
            rows.append(settle(fault_recovery.truncated_case(project, name)))
        console.print("SIGTERM, full disk, stopped make targets …")
        rows += fault_kills.run_cases(project, Path(tmp), lambda name: selected(name, only), settle)
    figures = {
        **tally(rows),
        "stage_s": {k: round(v, 2) for k, v in seconds.items()},
        "kill_points": list(KILL_POINTS),
        "wall_s": round(time.perf_counter() - started, 1),
        "config": f"{fault_cases.__name__}, presets/tiny.yaml over params.yaml",
        "rows": rows,
    }
    _print(figures, console)
    io.write_json(figures, out)
    return figures
