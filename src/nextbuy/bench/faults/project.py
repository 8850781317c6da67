"""The project copy ``nextbuy bench faults`` runs its cases in: a fresh git copy of the project
(presets/tiny.yaml over params.yaml) with every stage run once (:func:`build`), and its tracked
state (params.yaml, dvc.lock, every output, the artifact store) captured as bytes and put back
after each case (:func:`capture`, :func:`put_back`)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from rich.console import Console

from nextbuy import paths, yaml_io
from nextbuy.bench.dag import tiny_params
from nextbuy.bench.faults.base import GRAPH, INPUTS, LOG, SNAPSHOT
from nextbuy.bench.faults.events import STORE
from nextbuy.bench.project_copy import copy_project, project_env
from nextbuy.config import IngestConfig
from nextbuy.data.store_logs import simulated_logs, write_logs
from nextbuy.stage_list import dag_stages


@dataclass
class Project:
    root: Path
    params: dict
    env: dict[str, str]

    def run(
        self, *cmd: str, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """``cmd`` in the project with its environment (``env``: variables set on top)."""
        return subprocess.run(
            list(cmd),
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
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


# ---- its state, captured and put back ------------------------------------------------------


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


# ---- the copy, built -----------------------------------------------------------------------


def write_real_inputs(project: Project) -> None:
    """The tiny store as a 'real' source: its edges and impressions by product key."""
    root = project.root
    (root / INPUTS).mkdir(exist_ok=True)
    keys = pd.read_parquet(root / paths.PRODUCTS).set_index("product_id")["product_key"]
    edges = pd.read_parquet(root / paths.EDGES)
    pd.DataFrame({"src": keys[edges["src"]].to_numpy(), "dst": keys[edges["dst"]].to_numpy()}).to_csv(
        root / GRAPH, index=False
    )
    log = pd.read_parquet(root / paths.IMPRESSIONS).drop(columns="split")
    # An edge list knows only the products on its edges: a log of others is refused.
    linked = set(edges["src"]) | set(edges["dst"])
    log = log[log["source_id"].isin(linked) & log["shown_id"].isin(linked)].reset_index(drop=True)
    log["source_id"] = keys[log["source_id"]].to_numpy()
    log["shown_id"] = keys[log["shown_id"]].to_numpy()
    log.to_parquet(root / LOG)
    write_store_logs(project)


def write_store_logs(project: Project) -> None:
    """The tiny store as a store's raw logs (``events.STORE``), six days past its snapshot."""
    cfg = IngestConfig.model_validate(project.params["ingest"])
    until = pd.Timestamp(SNAPSHOT) + pd.Timedelta(days=6)
    write_logs(simulated_logs(cfg.simulator, cfg.seed, until), project.root / STORE)


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
