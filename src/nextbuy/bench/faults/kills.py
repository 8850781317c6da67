"""The stop and full-disk cases of ``nextbuy bench faults``: what Airflow (timeout, mark-failed),
``docker stop`` and a full disk do to a run, and what stopping a UI's make target must do.

* SIGTERM to ``dvc repro``'s process group (as Airflow sends it) at the moment deploy has
  registered its version and not finished it, and at the moment monitor starts writing
  Evidently snapshots (both found by watching the registry / the workspace, not by timing).
  Afterwards the stage's outputs must be the last good ones, no MLflow run RUNNING, the
  registry's aliases as before with every incomplete version marked orphaned, every
  snapshot in the workspace readable and the last published run still whole; then the stage
  runs again cleanly.
* ``ulimit -f`` below the size of the MLflow store during train: a clear one-line error naming
  the file and the cause, the outputs and the store unchanged, no hot journal.
* ``make mlflow-ui`` and ``make docs`` stopped with SIGTERM / SIGINT to make's process group
  and ``make mlflow-ui`` killed outright (SIGKILL): nothing left listening, no process left.

Each row: ``clear`` (the stage said what happened, one line, no traceback) or ``recovered``,
``lost`` (an output not the last good one), ``orphans`` (RUNNING runs, unmarked incomplete
versions, moved aliases, unreadable snapshots, a hot journal, processes left running).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nextbuy import paths, procs
from nextbuy.bench.faults.base import setting
from nextbuy.bench.faults.project import Project, capture, put_back, stage_files
from nextbuy.bench.faults.verdicts import TRACEBACK, flat

STOP_TIMEOUT = 60.0  # seconds a stopped stage may take to put its outputs back
SIGTERM_TRIES = 3  # runs of a stage that finished before its moment came, at most
UI_START_TIMEOUT = 420.0


def _db(project: Project) -> Path:
    return project.root / "mlflow.db"


def _query(db: Path, sql: str, *args: str | int | float | None) -> list[tuple]:
    """Read the MLflow store without writing to it; [] while a writer holds it."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def _incomplete_version(db: Path, model: str) -> bool:
    sql = "SELECT 1 FROM model_version_tags WHERE name = ? AND key = 'complete' AND value = 'false'"
    orphaned = "SELECT 1 FROM model_version_tags WHERE name = ? AND key = 'orphaned'"
    return len(_query(db, sql, model)) > len(_query(db, orphaned, model))


def _aliases(db: Path, model: str) -> dict[str, int]:
    return dict(_query(db, "SELECT alias, version FROM registered_model_aliases WHERE name = ?", model))


def _as_a_terminal_job() -> None:
    """In the child before exec: Ctrl-C and Ctrl-\\ at their defaults, as a shell with job
    control starts a foreground job. A bench started in the background of a non-interactive
    shell (``cmd &``, nohup) ignores SIGINT, and its children inherit that: make and mkdocs
    would then ignore the Ctrl-C the case sends, which no terminal does to them."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def start(project: Project, cmd: list[str], log: Path, terminal: bool = False) -> subprocess.Popen:
    """``cmd`` in the project as the leader of a new process group; ``terminal``: with the
    signal dispositions of a foreground job started from a terminal (``_as_a_terminal_job``)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=project.root,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_as_a_terminal_job if terminal else None,
        )


def _stop_group_when(proc: subprocess.Popen, ready: Callable[[], bool], sig: int, timeout: float) -> bool:
    """Send ``sig`` to ``proc``'s process group as soon as ``ready()``; False if it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, sig)
            return True
        time.sleep(0.005)
    return False


def _wait_group(pgid: int, timeout: float) -> bool:
    """True once no process of the group is left (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while procs.group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not procs.group_alive(pgid)


def _row(
    case: str,
    stage: str,
    exit_code: int | None,
    problems: list[str],
    text: str,
    group: str = "kill",
    **extra: object,
) -> dict:
    """A case's row: its problems with the end of its log (the evidence a failure needs), or
    the end of the log alone when it went well."""
    traceback = TRACEBACK.lower() in flat(text)
    tail = "\n".join(line for line in text.splitlines() if line.strip())
    return {
        "group": group,
        "case": case,
        "stage": stage,
        "exit": exit_code,
        "traceback": traceback,
        "message": f"{'; '.join(problems)}\nlog: {tail[-1500:]}" if problems else tail[-400:],
        **extra,
    }


# ---- SIGTERM during deploy's registration and monitor's publishing -----------------------------


def _snapshot_files(project: Project) -> set[Path]:
    return set((project.root / project.params["monitor"]["workspace"]).glob("*/snapshots/*"))


def _workspace_problems(project: Project, before: set[Path]) -> list[str]:
    """Unreadable snapshots, and a last published run no longer whole."""
    problems: list[str] = []
    runs: dict[str | None, int] = {}
    for path in _snapshot_files(project):
        if not path.name.endswith(".json") or path.name.startswith("."):
            continue
        try:
            metadata = json.loads(path.read_text())["metadata"]
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"unreadable snapshot {path.name} ({type(err).__name__})")
            continue
        runs[metadata.get("run")] = runs.get(metadata.get("run"), 0) + 1
    published = [json.loads(p.read_text())["metadata"].get("run") for p in before if p.suffix == ".json"]
    for run in set(published):
        if runs.get(run, 0) < published.count(run):
            problems.append(f"run {run!r}: {runs.get(run, 0)} of its {published.count(run)} snapshots left")
    return problems


def _registry_problems(project: Project, aliases_before: dict[str, int]) -> list[str]:
    db, model = _db(project), project.params["deploy"]["model_name"]
    problems = []
    running = _query(db, "SELECT name FROM runs WHERE status = 'RUNNING'")
    if running:
        problems.append(f"MLflow runs RUNNING: {[r[0] for r in running]}")
    if _incomplete_version(db, model):
        problems.append("an incomplete version is not marked orphaned")
    if _aliases(db, model) != aliases_before:
        problems.append(f"aliases moved: {aliases_before} -> {_aliases(db, model)}")
    return problems


def _sigterm_when_ready(project: Project, stage: str, tmp: Path) -> dict:
    """One try: the stage run by ``dvc repro``, SIGTERM to its group at the moment (``sent``)."""
    model = project.params["deploy"]["model_name"]
    state = {
        "before": stage_files(project, capture(project), stage),  # the last good outputs
        "aliases": _aliases(_db(project), model),
        "snapshots": _snapshot_files(project),
    }
    ready = {
        "deploy": lambda: _incomplete_version(_db(project), model),
        "monitor": lambda: _snapshot_files(project) != state["snapshots"],
    }[stage]
    log = tmp / f"sigterm-{stage}.log"
    proc = start(project, ["dvc", "repro", "--single-item", "--force", stage], log)
    sent = _stop_group_when(proc, ready, signal.SIGTERM, 600)
    proc.wait()
    return {**state, "proc": proc, "sent": sent, "log": log}


def sigterm_case(project: Project, stage: str, tmp: Path) -> dict:
    """SIGTERM to dvc repro's group at the moment ``stage`` writes its outside effect. Like the
    kill -9 cases it goes on from the project's state (the registry is never put back). A
    stage that finished before the moment came (a loaded host can miss a short one) ran
    normally: it is tried again, up to ``SIGTERM_TRIES`` times."""
    tries, run = 1, _sigterm_when_ready(project, stage, tmp)
    while not run["sent"] and tries < SIGTERM_TRIES:
        tries, run = tries + 1, _sigterm_when_ready(project, stage, tmp)
    proc, sent, log = run["proc"], run["sent"], run["log"]
    settled = _wait_group(proc.pid, STOP_TIMEOUT)
    text = log.read_text(errors="replace")
    if tries > 1 and sent:
        text = f"{text}\n(sent on run {tries}: the runs before finished before the moment came)"
    lost = stage_files(project, capture(project), stage) != run["before"]
    problems = [] if sent else [f"the stage finished before the moment came ({tries} runs)"]
    problems += [] if settled else [f"stage processes alive {STOP_TIMEOUT:.0f} s after SIGTERM"]
    problems += _registry_problems(project, run["aliases"])
    problems += _workspace_problems(project, run["snapshots"]) if stage == "monitor" else []
    problems += [f"outputs not the last good ones: {log.name}"] if lost else []
    again = project.run("dvc", "repro", "--single-item", "--force", stage)
    recovered = again.returncode == 0 and TRACEBACK not in again.stdout + again.stderr
    problems += [] if recovered else [f"the next {stage} failed: {(again.stdout + again.stderr)[-300:]}"]
    moment = {"deploy": "registration", "monitor": "Evidently publishing"}[stage]
    orphans = len([p for p in problems if not p.startswith("outputs") and not p.startswith("the next")])
    return _row(
        f"SIGTERM during {moment}",
        stage,
        proc.returncode,
        problems,
        text,
        recovered=recovered and sent,
        lost=lost,
        orphans=orphans,
    )


# ---- a file-size limit during train ----------------------------------------------------------


def full_disk_case(project: Project) -> dict:
    """``ulimit -f`` at half the MLflow store's size (DVC's own files stay below it) during train."""
    before = stage_files(project, capture(project), "train")
    db = _db(project)
    store = db.read_bytes()
    limit_kb = max(256, len(store) // 2048)
    cmd = f"ulimit -f {limit_kb} && exec dvc repro --single-item --force train"
    result = project.run("bash", "-c", cmd)
    text = result.stdout + result.stderr
    lost = stage_files(project, capture(project), "train") != before
    journal = db.with_name(db.name + "-journal")
    named = flat(str(db)) in flat(text) and "file too large" in flat(text)
    problems = [] if len(store) > limit_kb * 1024 else [f"store smaller than the {limit_kb} KiB limit"]
    problems += [] if named else ["the error names neither the store nor the cause"]
    problems += [f"{journal.name} left"] if journal.exists() else []
    problems += [] if db.read_bytes() == store else ["the MLflow store changed"]
    problems += ["outputs not the last good ones"] if lost else []
    clear = result.returncode != 0 and named and TRACEBACK not in text
    return _row(
        f"file-size limit {limit_kb} KiB (ulimit -f)",
        "train",
        result.returncode,
        problems,
        text,
        clear=clear and not problems,
        unclear=result.returncode != 0 and not named and TRACEBACK not in text,
        silent=result.returncode == 0,
        lost=lost,
        orphans=int(journal.exists()) + int(db.read_bytes() != store),
    )


# ---- a full data/ disk and a read-only data/ ------------------------------------------------

READ_ONLY = "read-only data/"
PAGE = 4096  # tmpfs counts whole pages
SPARE = 64 * 1024  # free space on the small disk: less than ingest writes


def _mount(args: list[str]) -> str | None:
    """Run ``mount`` with ``args``; why it failed, or None."""
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


@contextlib.contextmanager
def _small_disk(folder: Path, spare: int, tmp: Path) -> Iterator[str | None]:
    """``folder`` on a tmpfs holding its files and ``spare`` bytes more (a copy of the files,
    the originals hidden under the mount and back when it goes); yields why it could not be
    mounted (not root, no tmpfs), else None."""
    used = sum(-(-p.stat().st_size // PAGE) * PAGE for p in folder.rglob("*") if p.is_file())
    keep = tmp / f"{folder.name}-under-small-disk"
    shutil.copytree(folder, keep, symlinks=True)
    why = _mount(["-t", "tmpfs", "-o", f"size={used + spare}", "tmpfs", str(folder)])
    try:
        if why is None:
            shutil.copytree(keep, folder, symlinks=True, dirs_exist_ok=True)
        yield why
    finally:
        if why is None:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        shutil.rmtree(keep)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[str | None]:
    """``folder`` bind-mounted read-only over itself; yields why it could not be, else None."""
    why = _mount(["--bind", str(folder), str(folder)])
    if why is None:
        why = _mount(["-o", "remount,bind,ro", str(folder)])
        if why is not None:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    try:
        yield why
    finally:
        if why is None:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _staging_left(folder: Path) -> list[str]:
    """Entries an interrupted write leaves (``.<name>.*``), DVC's .gitignore aside."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != ".gitignore")


def _storage_row(
    name: str, stage: str, result: subprocess.CompletedProcess, problems: list[str], **extra: object
) -> dict:
    text = result.stdout + result.stderr
    named = not problems
    return _row(
        name,
        stage,
        result.returncode,
        problems,
        text,
        group="storage",
        clear=result.returncode != 0 and named and TRACEBACK not in text,
        unclear=result.returncode != 0 and not named and TRACEBACK not in text,
        silent=result.returncode == 0,
        **extra,
    )


def _skipped(name: str, stage: str, why: str) -> dict:
    return {"group": "storage", "case": name, "stage": stage, "exit": None, "message": f"not run: {why}"}


def full_data_disk_case(project: Project, tmp: Path, by_hand: bool) -> dict:
    """ingest with data/ on a disk with 64 KiB free: run by hand (its old outputs set aside,
    so nothing is freed), or by ``dvc repro`` with a catalogue twice as large (DVC deleted the
    old outputs, the new ones do not fit). Either way: one line naming the file and the full
    disk, the last good outputs in place, no staging entry left."""
    name = "full data/ disk: " + (
        "nextbuy ingest by hand" if by_hand else "dvc repro ingest, twice the catalogue"
    )
    before = stage_files(project, capture(project), "ingest")
    data = project.root / "data"
    with _small_disk(data, SPARE, tmp) as why:
        if why is not None:
            return _skipped(name, "ingest", why)
        if by_hand:
            result = project.run("nextbuy", "ingest")
        else:
            simulator = project.params["ingest"]["simulator"]
            bigger = {k: int(simulator[k]) * 2 for k in ("n_products", "n_purchases", "n_impressions")}
            project.write_params(
                setting(**{f"ingest__simulator__{k}": v for k, v in bigger.items()})(project.params)
            )
            result = project.run("dvc", "repro", "ingest")
            project.write_params(project.params)
        lost = stage_files(project, capture(project), "ingest") != before
        left = _staging_left(data)
    text = flat(result.stdout + result.stderr)
    problems = (
        []
        if "no space left" in text and "data/" in text
        else ["the error names neither data/ nor the full disk"]
    )
    problems += ["outputs not the last good ones"] if lost else []
    problems += [f"staging entries left in data/: {left}"] if left else []
    return _storage_row(name, "ingest", result, problems, lost=lost, orphans=len(left))


def read_only_data_case(project: Project) -> list[dict]:
    """A read-only data/ with an ingest output damaged: ``nextbuy restore-outputs`` and ``nextbuy
    ingest`` each say in one line that data/ cannot be written, exit 2, and change nothing."""
    baseline = capture(project)
    meta = project.root / paths.INGEST_META
    meta.write_text("{")  # an output to put back, so restore-outputs must write into data/
    rows = []
    with _read_only(project.root / "data") as why:
        for cmd in (["nextbuy", "restore-outputs", "ingest"], ["nextbuy", "ingest"]):
            name = f"{READ_ONLY}: {' '.join(cmd)}"
            if why is not None:
                rows.append(_skipped(name, "ingest", why))
                continue
            result = project.run(*cmd)
            text = flat(result.stdout + result.stderr)
            problems = (
                []
                if "read-only file system" in text and "data" in text
                else ["the error does not say data/ is read-only"]
            )
            problems += [] if result.returncode == 2 else [f"exit {result.returncode}, not 2"]
            problems += [] if meta.read_text() == "{" else ["data/ changed"]
            rows.append(_storage_row(name, "ingest", result, problems))
    put_back(project, baseline)
    return rows


# ---- stopping the UIs' make targets ---------------------------------------------------------


def _listeners(port: int) -> list[int]:
    """Pids of the processes whose command line names ``port`` (the server started for it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if str(port).encode() in b" ".join(words) and any(
            m in w for w in words for m in (b"mlflow_ui", b"mlflow-ui", b"mkdocs")
        ):
            found.append(int(cmdline.parent.name))
    return found


def make_target_case(project: Project, target: str, sig: int, tmp: Path) -> dict:
    """``make TARGET`` started, waited for, then ``sig`` to make's process group: within 30 s
    make is gone and nothing listens on the port or runs for it."""
    port = procs.free_port()
    var = {"mlflow-ui": "MLFLOW_UI_PORT", "docs": "DOCS_PORT"}[target]
    log = tmp / f"make-{target}.log"
    proc = start(project, ["make", "-o", ".venv/.installed", target, f"{var}={port}"], log, terminal=True)
    deadline = time.monotonic() + UI_START_TIMEOUT
    while proc.poll() is None and not procs.port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    ready = procs.port_open(port)
    if ready:
        time.sleep(1.0)  # serving, as a user would see it
        os.killpg(proc.pid, sig)
    started = time.monotonic()
    deadline = started + 30
    while (procs.port_open(port) or _listeners(port) or proc.poll() is None) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _listeners(port)
    problems = [] if ready else [f"never served on {port}: {log.read_text(errors='replace')[-300:]}"]
    problems += [f"still listening on {port}"] if procs.port_open(port) else []
    problems += [f"processes left: {left}"] if left else []
    problems += ["make still running"] if proc.poll() is None else []
    for pid in left:  # never leave them to the next case
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    name = signal.Signals(sig).name
    return _row(
        f"make {target}: {name} to make's group ({time.monotonic() - started:.1f} s)",
        target,
        proc.returncode,
        problems,
        log.read_text(errors="replace"),
        recovered=not problems,
        orphans=len(left) + int(procs.port_open(port)),
    )


def run_cases(
    project: Project,
    tmp: Path,
    selected: Callable[[str], bool] = lambda _: True,
    settle: Callable[[dict], dict] = lambda row: row,
) -> list[dict]:
    """Every case of this module whose name ``selected`` takes (``--only``),
    each row through ``settle`` (``recovery.settle``: what a failed case broke is put
    right before the next)."""
    cases: list[tuple[str, Callable[[], dict]]] = [
        ("SIGTERM during registration", lambda: sigterm_case(project, "deploy", tmp)),
        ("SIGTERM during Evidently publishing", lambda: sigterm_case(project, "monitor", tmp)),
        ("file-size limit (ulimit -f)", lambda: full_disk_case(project)),
        ("full data/ disk: by hand", lambda: full_data_disk_case(project, tmp, by_hand=True)),
        ("full data/ disk: dvc repro", lambda: full_data_disk_case(project, tmp, by_hand=False)),
        ("make mlflow-ui: SIGTERM", lambda: make_target_case(project, "mlflow-ui", signal.SIGTERM, tmp)),
        ("make mlflow-ui: SIGKILL", lambda: make_target_case(project, "mlflow-ui", signal.SIGKILL, tmp)),
        ("make docs: SIGINT", lambda: make_target_case(project, "docs", signal.SIGINT, tmp)),
        ("make docs: SIGTERM", lambda: make_target_case(project, "docs", signal.SIGTERM, tmp)),
    ]
    rows = [settle(case()) for name, case in cases if selected(name)]
    return rows + (read_only_data_case(project) if selected(READ_ONLY) else [])
