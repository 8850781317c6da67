"""The fault matrix, run: the project copy built (``project``), every bad-input case of the
catalogue (``cases``) run as ``dvc repro`` runs its stage and judged (``verdicts``), then the
malformed requests and serving under abuse (``serving``), the release with params reverted
(``release``), the kill -9 and truncated-file cases (``recovery``) and the stop and full-disk
cases (``kills``); the counts tallied, the table printed and the JSON written."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

import nextbuy.bench.faults.cases as cases
import nextbuy.bench.faults.kills as kills
import nextbuy.bench.faults.recovery as recovery
import nextbuy.bench.faults.release as release
import nextbuy.bench.faults.serving as serving
from nextbuy.bench.faults.base import INPUTS, Case
from nextbuy.bench.faults.project import Project, build, capture, put_back, stage_files
from nextbuy.bench.faults.verdicts import judge, print_table, tally
from nextbuy.mlops import io
from nextbuy.orchestration.names import PROJECT_DIR_ENV

# ---- a bad-input case ----------------------------------------------------------------------


def run_case(project: Project, case: Case, baseline: dict[str, bytes]) -> dict:
    before = stage_files(project, baseline, case.stage)
    project.write_params(case.params(project.params) if case.params else project.params)
    inputs = project.root / INPUTS
    present = set(inputs.iterdir()) if inputs.is_dir() else set()
    if case.files:
        case.files(project.root)
    try:
        return _judged_run(project, case, baseline, before)
    finally:  # the case's own input files go: inputs/ is a dependency of the next case's stages
        for added in set(inputs.iterdir()) - present if inputs.is_dir() else ():
            shutil.rmtree(added) if added.is_dir() and not added.is_symlink() else added.unlink()


def _judged_run(project: Project, case: Case, baseline: dict[str, bytes], before: dict) -> dict:
    cmd = ["dvc", "repro", *(["--single-item", "--force"] if case.single else []), case.stage]
    if case.by_hand:
        cmd = ["nextbuy", case.stage.replace("_", "-")]
    result = project.run(*cmd, env=case.env)
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


# ---- the run -------------------------------------------------------------------------------


def selected(name: str, only: str | None) -> bool:
    """Whether case ``name`` runs: ``only`` is None, or one of its ``|``-separated parts is in it."""
    return only is None or any(part in name for part in only.split("|"))


def run(out: Path, root: Path | None = None, only: str | None = None) -> dict:
    """``only``: substrings of case names, ``|``-separated (a quick look at some cases; the
    counts cover those). A kill case is named by its stage and point, "train: kill -9 at 60%":
    "kill" picks them all, "train: kill" those of one stage."""
    console = Console()
    root = Path(root or os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
    wanted = partial(selected, only=only)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        project, seconds = build(root, Path(tmp) / "project", console)
        baseline = capture(project)
        chosen = [c for c in cases.CASES if wanted(c.name)]
        rows = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("bad input", total=len(chosen))
            for case in chosen:
                progress.update(task, description=f"{case.stage}: {case.name}")
                rows.append(run_case(project, case, baseline))
                progress.advance(task)
        console.print("malformed requests, serving under abuse …")
        rows += serving.request_cases(project, Path(tmp), wanted)
        if wanted(release.NAME):
            console.print("a release, params reverted …")
            rows.append(release.release_case(project, lambda: put_back(project, baseline)))
        kill_runs = [
            (s, at) for s in seconds for at in recovery.KILL_POINTS if wanted(recovery.kill_name(s, at))
        ]
        settle = partial(recovery.settle, project)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("kill -9", total=len(kill_runs))
            for stage, at in kill_runs:
                progress.update(task, description=f"kill -9 {stage} at {at:.0%}")
                rows.append(settle(recovery.kill_case(project, stage, at, seconds[stage])))
                progress.advance(task)
        for name in filter(wanted, recovery.TRUNCATED):
            console.print(f"{name}, make run …")
            rows.append(settle(recovery.truncated_case(project, name)))
        console.print("SIGTERM, full disk, stopped make targets …")
        rows += kills.run_cases(project, Path(tmp), wanted, settle)
    figures = {
        **tally(rows),
        "stage_s": {k: round(v, 2) for k, v in seconds.items()},
        "kill_points": list(recovery.KILL_POINTS),
        "wall_s": round(time.perf_counter() - started, 1),
        "config": f"{cases.__name__}, presets/tiny.yaml over params.yaml",
        "rows": rows,
    }
    print_table(figures, console)
    io.write_json(figures, out)
    return figures
