"""Where and how a DVC stage runs, and its Airflow task: ``dvc repro --single-item
<stage>`` in the Airflow workspace (a git worktree of the project), in the DVC pool,
retried with backoff, its exit code the stage's own."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nextbuy.orchestration.names import POOL, PROJECT_DIR_ENV, TASK_RETRIES, VENV_ENV
from nextbuy.orchestration.workspace import store_defaults, workspace_dir
from nextbuy.stage_list import dag_stages

if TYPE_CHECKING:
    from nextbuy.orchestration.plugin import StageOperator


def project_dir(dag_file: str | os.PathLike) -> Path:
    """``$NEXTBUY_PROJECT_DIR``, else the parent of the dags/ folder holding ``dag_file``."""
    env = os.environ.get(PROJECT_DIR_ENV)
    return Path(env).resolve() if env else Path(dag_file).resolve().parent.parent


def venv_bin(project: Path) -> Path:
    """The environment the stages run in: ``$NEXTBUY_VENV`` (e.g. the docker image's
    /opt/venv), else the project's .venv/."""
    return Path(os.environ.get(VENV_ENV) or project / ".venv") / "bin"


def project_env(project: Path) -> dict[str, str]:
    """This process's environment with the stages' bin/ (then this Python's) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(venv_bin(project)), str(Path(sys.executable).parent), env.get("PATH", "")]
    )
    return env


def stage_command(stage: str, project: Path) -> str:
    """The bash a stage task runs in the Airflow workspace (a worktree of the project,
    see ``workspace``): exactly what ``dvc repro`` runs for that one stage (after
    ``nextbuy check-dvc-lock``), with the project's .venv/bin first on PATH, the worktree's
    code first on PYTHONPATH and the checkout's MLflow store unless MLFLOW_TRACKING_URI is
    set (the docker stack's server). It exits with the stage command's own code
    (``nextbuy repro-stage``)."""
    project = Path(project).resolve()
    bin_dir = shlex.quote(str(venv_bin(project)))
    src = shlex.quote(str(workspace_dir(project) / "src"))
    # The worker's value wins at run time; else the checkout's store.
    stores = " ".join(f'{k}="${{{k}:-{shlex.quote(v)}}}"' for k, v in store_defaults(project).items())
    quoted = shlex.quote(stage)
    return (
        f'export PATH={bin_dir}:"$PATH" PYTHONPATH={src} {stores} '
        # A DVC lock file a killed dvc left unreadable would fail every repro: set it aside.
        "&& nextbuy check-dvc-lock "
        # DVC deletes the outputs before it checks params.yaml: restore them if it fails there.
        f"&& {{ nextbuy repro-stage {quoted} "
        f"|| {{ status=$?; nextbuy restore-outputs {quoted}; exit $status; }}; }}"
    )


# dvc repro exits 255 whatever its stage's command exited with; its last error line says
# "failed to reproduce 'train': failed to run: nextbuy train, exited with 2".
_STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)\s*$")


def stage_exit_code(dvc_error_line: str) -> int | None:
    """The stage command's exit code that a line of ``dvc repro``'s stderr reports (a signal
    as 128 + its number, as the shell says it), or None when the line reports none."""
    found = _STAGE_EXIT.search(dvc_error_line)
    if found is None:
        return None
    code = int(found.group(1))
    return 128 - code if code < 0 else code


def repro_stage(stage: str) -> int:
    """Run ``dvc repro --single-item stage`` (this Python's dvc) with its output passed
    through, line by line; its exit code is the stage command's own when the stage command
    failed (2: a configuration or input error, not worth a retry), else dvc's."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert process.stderr is not None  # stderr=PIPE
    stage_code = None
    for line in process.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        reported = stage_exit_code(line)
        if reported is not None:
            stage_code = reported
    dvc_code = process.wait()
    return stage_code if dvc_code != 0 and stage_code is not None else dvc_code


def stage_task(stage: str, project: Path) -> StageOperator:
    """The Airflow task of one DVC stage: its bash in the Airflow workspace, the DVC pool;
    retries come from the DAG's default_args (``TASK_DEFAULTS``), except after a
    configuration or input error (``plugin.StageOperator``: failed at once)."""
    # Airflow: DAG files parse this module, the operator only where a task is built
    from nextbuy.orchestration.plugin import StageOperator

    return StageOperator(
        task_id=stage,
        bash_command=stage_command(stage, project),
        cwd=str(workspace_dir(project)),
        pool=POOL,
        skip_on_exit_code=None,  # every non-zero exit of a stage is a failure
    )


def default_args() -> dict:
    """Every task of both DAGs, set_params included: retries with exponential backoff, so a
    cold or slow API server (its first request can take 40+ s on a small host) costs a
    retry, not the run."""
    from datetime import timedelta

    return {
        "retries": TASK_RETRIES,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    }


def stage_tasks(project: Path, dag: str) -> list:
    """One task per stage that dvc.yaml assigns to ``dag`` (meta.dag), in dvc.yaml order."""
    return [stage_task(stage, project) for stage in dag_stages(project, dag)]


def stage_chain(project: Path, dag: str) -> str:
    """``ingest -> label_delay -> ...``: the DAG's stages as dvc.yaml orders them (its description)."""
    return " -> ".join(dag_stages(project, dag))
