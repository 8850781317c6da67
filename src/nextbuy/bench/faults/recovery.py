"""The kill -9 cases of ``nextbuy bench faults`` and the recovery they are judged on.

* kill -9 of a stage's whole process group at several points of its run time (fractions of
  its measured run time, ``KILL_POINTS``), then ``make run`` as a user would run it
  (``RECOVERY``: the DVC lock check, ``dvc repro``, ``nextbuy restore-outputs`` on failure,
  ``nextbuy summary``): it must succeed, every output must be there, no registry version may
  be left incomplete without being marked orphaned, no MLflow run may stay RUNNING, and the
  champion must be complete.
* ``.dvc/tmp/rwlock`` or ``dvc.lock`` left empty, as a ``dvc`` killed while it rewrites the
  file leaves it (``TRUNCATED``), then ``make run``: the same verdict, the file set aside with
  a warning saying so, and the outputs byte-identical when no stage had to run.

A case that does not recover may leave the project copy's DVC files broken; :func:`settle`
then puts that right (the row keeps its failure, and says what was put right) so the cases
after it are judged on their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from nextbuy import procs
from nextbuy.bench.faults.project import Project, capture
from nextbuy.bench.faults.verdicts import TRACEBACK, flat
from nextbuy.dvc_lock import LOCKFILE, RWLOCK, TMP_DIR, lockfile_problem, rwlock_problem

KILL_POINTS = (0.25, 0.6, 0.9)  # fractions of a stage's measured run time
GONE_TIMEOUT = 60.0  # seconds the processes of a killed group may take to exit
# make run in the project copy (no .venv of its own: this environment counts as installed).
RECOVERY = ("make", "-o", ".venv/.installed", "run")
# What a dvc killed while it rewrites them leaves: the case, the file emptied, its check.
TRUNCATED = {
    "DVC lock file truncated": (TMP_DIR / RWLOCK, rwlock_problem),
    "dvc.lock truncated": (Path(LOCKFILE), lockfile_problem),
}


def registry_state(project: Project, model_name: str) -> dict:
    """Incomplete versions not marked orphaned, RUNNING runs, and whether the champion is complete."""
    from mlflow.tracking import MlflowClient

    from nextbuy.release import registry

    client = MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions(f"name='{model_name}'")
    unmarked = [
        v.version
        for v in versions
        if not registry.is_complete(v.tags) and v.tags.get(registry.ORPHANED) != "true"
    ]
    running = [
        r.info.run_id
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], "attributes.status = 'RUNNING'")
    ]
    champion = registry.alias_version(client, model_name, registry.CHAMPION)
    complete = champion is not None and registry.is_complete(
        client.get_model_version(model_name, champion).tags
    )
    return {"unmarked_versions": unmarked, "running_runs": running, "champion_complete": complete}


def recover(project: Project) -> dict:
    """``make run`` (``RECOVERY``) and the verdict on what it left: the row's fields."""
    recovery = project.run(*RECOVERY)
    text = recovery.stdout + recovery.stderr
    missing = [o for s in project.lock() for o in project.outs(s) if not (project.root / o).exists()]
    state = registry_state(project, project.params["deploy"]["model_name"])
    orphans = len(state["unmarked_versions"]) + len(state["running_runs"])
    recovered = recovery.returncode == 0
    if procs.RUN_BUSY_MESSAGE.split("(")[0] in text:  # refused (make exits 2): name who kept it out
        text += f"\nlock holders: {procs.lock_holders(project.root / procs.RUN_LOCK) or 'none left'}"
    return {
        "exit": recovery.returncode,
        "recovered": recovered,
        "lost": bool(missing) or not recovered,
        "orphans": orphans + (0 if state["champion_complete"] else 1),
        "traceback": TRACEBACK in text,
        "message": "; ".join(
            filter(
                None,
                [
                    f"missing {missing}" if missing else "",
                    f"state {state}" if orphans or not state["champion_complete"] else "",
                    text[-400:] if not recovered else "",
                ],
            )
        ),
        "output": text,
    }


def kill_name(stage: str, at: float) -> str:
    """How ``--only`` picks a kill case: "train: kill -9 at 60%"."""
    return f"{stage}: kill -9 at {at:.0%}"


def kill_case(project: Project, stage: str, at: float, seconds: float) -> dict:
    """kill -9 the stage's process group ``at`` of its run time in, then ``make run``."""
    proc = subprocess.Popen(
        ["dvc", "repro", "--single-item", "--force", stage],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(at * seconds)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # As an operator would: recover once the killed processes are gone. Until the last of them
    # has exited it still holds the checkout's pipeline lock, and make run refuses to start.
    deadline = time.monotonic() + GONE_TIMEOUT
    while procs.group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    verdict = recover(project)
    del verdict["output"]
    return {
        "group": "kill",
        "case": f"kill -9 at {at:.0%}" + ("" if killed else " (had finished)"),
        "stage": stage,
        **verdict,
    }


def truncated_case(project: Project, name: str) -> dict:
    """The file of case ``name`` (``TRUNCATED``) emptied, then ``make run``: recovered as after a
    kill, the file set aside with a warning naming it, and every output as before when dvc.lock
    did not change (no stage ran)."""
    rel, check = TRUNCATED[name]
    before = capture(project)
    path = project.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    verdict = recover(project)
    after = capture(project)
    same_lock = after.get(LOCKFILE) == before.get(LOCKFILE)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    warned = flat(str(rel)) in flat(verdict["output"]) and "set aside" in flat(verdict["output"])
    problems = [] if warned else [f"make run did not say that it set {rel} aside"]
    problems += [] if check(path) is None else [f"{rel} is still unreadable"]
    problems += [f"outputs changed with no stage run: {changed[:5]}"] if same_lock and changed else []
    message = "; ".join(filter(None, [*problems, verdict["message"]]))
    return {
        "group": "kill",
        "case": name,
        "stage": "dvc",
        **{k: v for k, v in verdict.items() if k != "output"},
        "recovered": verdict["recovered"] and not problems,
        "unclear": verdict["recovered"] and not warned,
        "lost": verdict["lost"] or bool(same_lock and changed),
        "orphans": verdict["orphans"] + int(check(path) is not None),
        "message": message or verdict["output"][-400:],
    }


def settle(project: Project, row: dict) -> dict:
    """After a case that did not recover: an unreadable ``.dvc/tmp/rwlock`` or ``dvc.lock`` it
    left (no dvc runs any more) is deleted, so the next case does not fail from it (``make
    run`` writes a new dvc.lock from the run cache); the row says so."""
    if row.get("recovered") or row.get("clear"):
        return row
    broken = {TMP_DIR / RWLOCK: rwlock_problem, Path(LOCKFILE): lockfile_problem}
    notes = []
    for rel, check in broken.items():
        problem = check(project.root / rel)
        if problem is not None:
            (project.root / rel).unlink()
            notes.append(f"(bench: the unreadable {rel} this left, {problem}, deleted before the next case)")
    return {**row, "message": "\n".join([row["message"], *notes])} if notes else row
