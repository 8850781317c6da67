"""What the Python tasks of the DAGs do (their @task functions call these):
take and give back the workspace, judge the deploy gate, branch on alerts."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextbuy.constants import ALERT_EXIT_CODE
from nextbuy.dvc_lock import set_aside_broken
from nextbuy.orchestration import params_lock, workspace
from nextbuy.orchestration.airflow_tasks import project_env
from nextbuy.orchestration.names import (
    ALERTS_FILE,
    DEPLOY_METRICS,
    MONITORING_DAG_ID,
    NO_RETRAIN_TASK,
    RETRAIN_TASK,
    TRAINING,
)
from nextbuy.stage_list import dag_stages

if TYPE_CHECKING:
    from airflow.sdk import PokeReturnValue

log = logging.getLogger(__name__)
LIVE_RUN_STATES = {"queued", "running"}


def _owner(context: Mapping[str, Any]) -> dict[str, str]:
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}


def _is_live(context: Mapping[str, Any]) -> Callable[[Mapping[str, str]], bool]:
    def is_live(owner: Mapping[str, str]) -> bool:
        try:
            state = context["ti"].get_dagrun_state(owner["dag_id"], owner["run_id"])
            # a DagRunState (str, Enum): its str() is "DagRunState.RUNNING", its value "running"
            return str(getattr(state, "value", state)) in LIVE_RUN_STATES
        except Exception as err:  # noqa: BLE001 - unknown run (deleted, other Airflow): nobody to wait for
            log.warning("state of %s unknown (%s): treating its lock as stale", dict(owner), err)
            return False

    return is_live


def run_snapshot(context: Mapping[str, Any]) -> str | None:
    """The logical date; for a run without one (manual trigger), when it was triggered."""
    moment = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None)
    return params_lock.snapshot_iso(moment) if moment is not None else None


def set_params_task(project: Path, context: Mapping[str, Any], kind: str) -> PokeReturnValue:
    """Body of the ``set_params`` sensor (setup task): a PokeReturnValue whose XCom is the overrides."""
    from airflow.sdk import PokeReturnValue

    form = dict(context["params"])
    ws = workspace.ensure(project)
    if form.get("reason"):
        log.info("why this run: %s", form["reason"])

    def sync() -> None:
        log.info("Airflow workspace %s at commit %s", ws, workspace.sync_code(project, ws))

    try:
        # The preset as the checkout has it, like the params.yaml it applies to.
        preset = params_lock.preset_overrides(project, form)
        if kind == TRAINING:
            overrides = params_lock.training_overrides(form, run_snapshot(context), preset)
        else:
            overrides = params_lock.monitoring_overrides(ws, form, preset)
        held = params_lock.acquire_params(ws, _owner(context), overrides, _is_live(context), project, sync)
    except params_lock.InvalidOverrides as err:  # the same form fails every try: fail at once
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{err}\n(a configuration error: not retried)") from None
    if held is None:
        return PokeReturnValue(is_done=False)
    log.info(
        "params.yaml of %s = %s/params.yaml + these run-only overrides:\n%s",
        ws,
        project,
        json.dumps(overrides, indent=2, sort_keys=True, default=str),
    )
    return PokeReturnValue(is_done=True, xcom_value={"overrides": overrides, "reason": form.get("reason")})


def _workspace_env(project: Path) -> dict[str, str]:
    return {**project_env(project), **workspace.stage_env(project)}


def checkout_outputs(project: Path) -> str:
    """``dvc checkout`` in the Airflow workspace: after a failed stage, put its outputs back
    to what dvc.lock records (DVC removes a stage's outputs before running it). Best effort;
    a DVC file a killed dvc left unreadable is set aside first (``dvc_lock``)."""

    with contextlib.suppress(OSError):  # unmovable: dvc checkout says what is wrong
        for warning in set_aside_broken(workspace.workspace_dir(project)):
            log.warning("%s", warning)
    result = subprocess.run(
        ["dvc", "checkout"],
        cwd=workspace.workspace_dir(project),
        env=_workspace_env(project),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        log.warning("dvc checkout exited %s:\n%s", result.returncode, out)
    return out


def _save_run(project: Path, ws: Path, owner: Mapping[str, str], stages: list[str]) -> None:
    """The run as a DVC experiment; a failure to save is logged, never fails the run."""
    name = workspace.experiment_name(owner["dag_id"], owner["run_id"])
    try:
        log.info(
            "%s\n(`dvc exp show` in %s lists it)",
            workspace.save_experiment(ws, name, _workspace_env(project), stages),
            project,
        )
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        log.warning(
            "could not save the run as DVC experiment %s (its MLflow runs have it all): %s", name, err
        )


def restore_params_task(project: Path, context: Mapping[str, Any], kind: str) -> str:
    """Body of ``restore_params`` (teardown): a run whose stages all succeeded is saved as a
    DVC experiment (its params, dvc.lock, metrics, plots); then the workspace's params.yaml
    goes back (the lock is released); after a failed stage also its outputs (dvc checkout)."""
    ws = workspace.workspace_dir(project)
    owner = _owner(context)
    stages = list(dag_stages(project, kind))
    failed = context["ti"].get_ti_count(
        dag_id=owner["dag_id"],
        task_ids=stages,
        run_ids=[owner["run_id"]],
        states=["failed", "upstream_failed"],
    )
    held = params_lock.read_backup(ws)
    if not failed and held is not None and held["owner"] == owner:
        _save_run(project, ws, owner, stages)
    message = params_lock.restore_params(ws, owner)
    log.info(message)
    if failed and message == "params.yaml restored":
        log.info("a stage failed: dvc checkout\n%s", checkout_outputs(project))
    return message


def gate_task(project: Path) -> dict[str, Any]:
    """After deploy: the verdict in metrics/deploy.json. A refusal raises AirflowSkipException."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    path = workspace.workspace_dir(project) / DEPLOY_METRICS
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AirflowFailException(f"{path}: no deploy verdict ({err})") from None
    summary = {k: verdict.get(k) for k in ("passed", "reasons", "version", "champion_version", "action")}
    if not verdict.get("passed"):
        reasons = "; ".join(verdict.get("reasons") or []) or "no reason recorded"
        log.warning(
            "deploy gate REFUSED candidate v%s (champion stays v%s): %s",
            verdict.get("version"),
            verdict.get("champion_version"),
            reasons,
        )
        raise AirflowSkipException(
            f"deploy gate refused v{verdict.get('version')} "
            f"(champion stays v{verdict.get('champion_version')}): {reasons}"
        )
    log.info(
        "deploy gate passed: champion is v%s (%s)", verdict.get("champion_version"), verdict.get("action")
    )
    return summary


def release_extra(verdict: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """What the champion Asset event carries (read by the monitoring DAG and the UI)."""
    return {
        "version": verdict.get("version"),
        "champion_version": verdict.get("champion_version"),
        "action": verdict.get("action"),
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
    }


def alerts_status(project: Path) -> dict[str, Any]:
    """``nextbuy alerts`` in the Airflow workspace (ALERT_EXIT_CODE = alerts) plus the alert
    messages from its monitoring/alerts.json."""
    ws = workspace.workspace_dir(project)
    result = subprocess.run(
        ["nextbuy", "alerts", "--path", ALERTS_FILE],
        cwd=ws,
        env=_workspace_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode not in (0, ALERT_EXIT_CODE):
        raise RuntimeError(f"nextbuy alerts exited {result.returncode}:\n{output}")
    messages = []
    if result.returncode == ALERT_EXIT_CODE:
        fired = json.loads((ws / ALERTS_FILE).read_text()).get("alerts", [])
        messages = [f"{a.get('window_start')} {a.get('message')}" for a in fired]
    return {"exit_code": result.returncode, "alerts": messages, "output": output}


def _run_type(context: Mapping[str, Any]) -> str:
    run_type = getattr(context.get("dag_run"), "run_type", "")
    return str(getattr(run_type, "value", run_type))


def branch_on_alerts_task(project: Path, context: Mapping[str, Any]) -> str:
    """Body of the ``check_alerts`` branch: RETRAIN_TASK when the monitor raised alerts
    (the trigger's conf is pushed as XCom ``retrain_conf``), else NO_RETRAIN_TASK.

    A run started by a champion release (asset-triggered) never retrains: alerts right
    after a release go to on-call, and the next scheduled check decides, so a
    persistent alert cannot loop retrain -> release -> monitor -> retrain."""
    status = alerts_status(project)
    log.info("nextbuy alerts exit %s:\n%s", status["exit_code"], status["output"])
    if not status["alerts"]:
        log.info("no alerts: nothing to do")
        return NO_RETRAIN_TASK
    if _run_type(context) == "asset_triggered":
        log.warning(
            "%d alert(s) right after a champion release: not retraining automatically (the next "
            "scheduled check decides); alerts: %s",
            len(status["alerts"]),
            status["alerts"],
        )
        return NO_RETRAIN_TASK
    reason = f"{MONITORING_DAG_ID} run {context['run_id']}: {len(status['alerts'])} alert(s): " + "; ".join(
        status["alerts"]
    )
    log.warning("retraining: %s", reason)
    preset = dict(context.get("params") or {}).get("preset")  # retrain the store this run watched
    context["ti"].xcom_push(key="retrain_conf", value={"reason": reason[:4000], "preset": preset})
    return RETRAIN_TASK
