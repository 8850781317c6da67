"""Where and how a DVC stage runs, and its Airflow task: ``dvc repro --single-item
<stage>`` in the Airflow workspace (a git worktree of the project), in the DVC pool,
retried with backoff."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nextbuy.constants import FAILURE_FILE_ENV, INPUT_ERROR_EXIT_CODE
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
    set (the docker stack's server)."""
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
        # The stage writes a configuration or input error here (dvc repro hides its exit code).
        f'&& export {FAILURE_FILE_ENV}="$(mktemp)" '
        # DVC deletes the outputs before it checks params.yaml: restore them if it fails there.
        f"&& {{ dvc repro --single-item {quoted} "
        f"|| {{ status=$?; nextbuy restore-outputs {quoted}; "
        f'if [ -s "${FAILURE_FILE_ENV}" ]; then status={INPUT_ERROR_EXIT_CODE}; fi; '
        f'rm -f "${FAILURE_FILE_ENV}"; exit $status; }}; }} && rm -f "${FAILURE_FILE_ENV}"'
    )


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
