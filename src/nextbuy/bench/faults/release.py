"""A release, then params.yaml reverted, for ``nextbuy bench faults``: DVC's run-cache must
not stand in for a stage whose effect lives outside its outputs.

From the baseline (params P0, its champion released), a second release runs with changed
params (another training seed, a tolerance that lets it pass) and becomes the champion.
Then params.yaml goes back to P0 and ``dvc repro`` runs, as ``make run`` would. DVC has run
deploy and monitor with P0 before: without ``persist`` on their outputs it restores their
files from its run-cache and runs nothing, so the registry keeps the second release as
champion while ``metrics/deploy.json`` and ``metrics/monitor.json`` describe the first.
The case is clear when deploy really ran (DVC says it ran the stage, and its metrics name
the newest version in the registry), ``nextbuy summary`` names the registry's champion,
and the monitor's figures are of that champion; a run that succeeds with any of these
wrong is a silent accept. The registry database and every output are put back after.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from nextbuy import paths
from nextbuy.bench.faults.base import setting
from nextbuy.bench.faults.project import Project
from nextbuy.bench.faults.verdicts import TRACEBACK
from nextbuy.mlops import io

NAME = "release, params reverted, repro"
RAN = "Running stage 'deploy'"


def _registry(project: Project) -> tuple[int | None, int]:
    """The registry's champion of the project's model (None: none) and its newest version."""
    from mlflow.tracking import MlflowClient

    from nextbuy.release import registry

    client = MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    name = project.params["deploy"]["model_name"]
    champion = registry.alias_version(client, name, registry.CHAMPION)
    newest = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return (int(champion) if champion else None), newest


def second_release(params: dict) -> dict:
    """P0 with another training seed and a gate any candidate passes: a new champion."""
    seed = params["train"]["seed"] + 1
    return setting(train__seed=seed, deploy__tolerance=1.0, deploy__min_auc=0.0)(params)


def checks(project: Project, repro_output: str, summary_output: str) -> list[str]:
    """What is wrong after the revert's repro (empty: nothing)."""
    champion, newest = _registry(project)
    deploy = io.read_json(project.root / paths.metrics_file("deploy"))
    monitor = io.read_json(project.root / paths.metrics_file("monitor"))
    said = re.search(r"champion = v(\d+)", summary_output)
    wrong = []
    if RAN not in repro_output:
        wrong.append("deploy did not run (DVC restored or skipped it)")
    if deploy.get("version") != newest:
        wrong.append(
            f"metrics/deploy.json names v{deploy.get('version')}, the registry's newest is v{newest}"
        )
    if said is None or int(said.group(1)) != champion:
        wrong.append(
            f"summary says {said.group(0) if said else 'no champion'}, the registry's is v{champion}"
        )
    if str(monitor.get("champion_version")) != str(champion):
        wrong.append(
            f"monitor watched v{monitor.get('champion_version')}, the registry's champion is v{champion}"
        )
    return wrong


def release_case(project: Project, put_back: Callable[[], None]) -> dict:
    """The case (see the module docstring); ``put_back()`` restores the baseline's files."""
    db = Path(project.env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    saved = db.with_suffix(".before-release")
    shutil.copy2(db, saved)
    try:
        before, _ = _registry(project)
        project.write_params(second_release(project.params))
        first = project.run("dvc", "repro")
        released, _ = _registry(project)
        project.write_params(project.params)
        repro = project.run("dvc", "repro")
        summary = project.run("nextbuy", "summary")
        output = repro.stdout + repro.stderr + summary.stdout + summary.stderr
        setup = first.returncode == 0 and released != before
        ok = setup and repro.returncode == 0 and summary.returncode == 0
        wrong = checks(project, repro.stdout + repro.stderr, summary.stdout) if ok else []
        if not setup:
            output = f"the second release did not become champion (v{before} -> v{released}) | {output}"
    finally:
        shutil.copy2(saved, db)
        saved.unlink()
        put_back()
    traceback = TRACEBACK in output
    return {
        "group": "release",
        "case": NAME,
        "stage": "deploy",
        "exit": repro.returncode,
        "clear": ok and not wrong and not traceback,
        "silent": ok and bool(wrong),
        "traceback": traceback,
        "unclear": not ok and not traceback,
        "lost": False,
        "message": ("; ".join(wrong) or f"v{before} -> v{released} released; deploy ran, all agree")
        + ("" if ok else " | " + output[-400:]),
    }
