"""Configs from the repo's params.yaml, and a temporary git + DVC copy of the
project to run the pipeline in (the end-to-end and DAG tests): a fresh one, or a copy of
the tiny project after its one full ``dvc repro`` (built once per test session)."""

from __future__ import annotations

import fcntl
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

from nextbuy.bench.project_copy import copy_project, project_env
from nextbuy.config import model_of, read_params, section_config
from tests.conftest import ROOT

__all__ = [
    "config",
    "copy_finished_project",
    "finished_project",
    "project_copy",
    "project_env",
    "without_default_experiment",
]

# Not searched for the original's path: git's objects (compressed) and DVC's cache (copies of
# the outputs, which are searched where they lie).
UNSEARCHED = (".git", ".dvc/cache")


def config(dotted: str, **changes):
    """The validated config of a params.yaml section (``train``, ``ingest.simulator``)
    with ``changes`` on top: tests take every other knob from the repo's params.yaml."""
    return section_config(read_params(ROOT / "params.yaml"), model_of(dotted), **changes)


def project_copy(tmp: Path, params: dict) -> Path:
    """A fresh git checkout of the project with ``params`` as params.yaml."""
    return copy_project(ROOT, tmp / "project", params)


def finished_project(base: Path, params: dict) -> Path:
    """The project with ``params`` after one full ``dvc repro``, built in ``base`` by the first
    process that asks; the others (xdist workers sharing ``base``) wait on a file lock and
    reuse it. Read-only for its users: they work in ``copy_finished_project`` copies."""
    home = base / "finished-project"
    result = home / "repro.json"
    with open(base / "finished-project.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            shutil.rmtree(home, ignore_errors=True)  # a build stopped half-way
            home.mkdir()
            dest = project_copy(home, params)
            try:
                repro = subprocess.run(
                    ["dvc", "repro"],
                    cwd=dest,
                    env=project_env(dest),
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                built = {
                    "returncode": repro.returncode,
                    "output": repro.stdout[-3000:] + repro.stderr[-3000:],
                }
            except subprocess.TimeoutExpired as err:
                built = {"returncode": None, "output": str(err)}
            result.write_text(json.dumps(built))
    built = json.loads(result.read_text())
    assert built["returncode"] == 0, f"dvc repro of the tiny project failed:\n{built['output']}"
    return home / "project"


def copy_finished_project(finished: Path, tmp: Path) -> Path:
    """A copy of ``finished`` (a project that has run: outputs, dvc.lock, DVC cache, git history,
    MLflow store) at ``tmp``/project, its own in every way: the MLflow store's paths (artifact
    locations, model sources) point at the copy's ``mlartifacts``, so a new run or version
    written there never touches ``finished``. The logged models' MLmodel files keep the
    location they were logged at (a record, not read to find the files; deploy pinned their
    checksums)."""
    dest = tmp / "project"
    shutil.copytree(finished, dest, symlinks=True)
    _move_mlflow_store(dest / "mlflow.db", [(finished.as_uri(), dest.as_uri()), (str(finished), str(dest))])
    named = [p.relative_to(dest) for p in _files(dest) if str(finished).encode() in p.read_bytes()]
    assert all(p.name == "MLmodel" for p in named), f"the copy still names the original's path: {named}"
    return dest


def _move_mlflow_store(db_file: Path, moves: list[tuple[str, str]]) -> None:
    """Every text value of every table in the SQLite store with each (old, new) replaced."""
    db = sqlite3.connect(db_file)
    with db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]:
                for old, new in moves:
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (old, new, old),
                    )
    db.execute("VACUUM")  # no old value left behind in a free page
    db.close()


def _files(root: Path) -> list[Path]:
    skipped = [root / part for part in UNSEARCHED]
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and not any(p.is_relative_to(s) for s in skipped)
    ]


def without_default_experiment(db_file: Path) -> None:
    """Delete the Default experiment (id 0) MLflow created in a new SQLite store: its artifact
    location is where that store was first opened. MLflow creates it again, located for the
    process that opens the store next."""
    db = sqlite3.connect(db_file)
    with db:
        db.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
        db.execute("DELETE FROM experiments WHERE experiment_id = 0")
    db.close()
