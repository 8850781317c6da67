"""The DAGs' Python task bodies, called with stand-in Airflow contexts (no Airflow
imported here: it would configure itself before tests/dags can point it at a
temporary home)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import pytest

from nextbuy.constants import ALERT_EXIT_CODE
from nextbuy.orchestration import task_bodies
from nextbuy.orchestration.names import ALERTS_FILE, NO_RETRAIN_TASK, RETRAIN_TASK
from nextbuy.orchestration.workspace import workspace_dir


class DagRunState(str, Enum):  # noqa: UP042 - not StrEnum: its str() would be the value
    """Shaped like Airflow's: a str Enum whose str() is 'DagRunState.RUNNING'."""

    QUEUED, RUNNING, SUCCESS, FAILED = "queued", "running", "success", "failed"


class TI:
    def __init__(self, state=None):
        self.state = state
        self.pushed: dict = {}

    def get_dagrun_state(self, dag_id, run_id):
        if self.state is None:
            raise RuntimeError("no such run")
        return self.state

    def xcom_push(self, key, value):
        self.pushed[key] = value


class DagRun:
    def __init__(self, run_type):
        self.run_type = run_type


@pytest.mark.parametrize(
    ("state", "live"),
    [
        (DagRunState.RUNNING, True),
        (DagRunState.QUEUED, True),
        ("running", True),
        (DagRunState.SUCCESS, False),
        (DagRunState.FAILED, False),
        (None, False),
    ],
)
def test_a_running_holder_is_live_whatever_form_its_state_takes(state, live):
    assert task_bodies._is_live({"ti": TI(state)})({"dag_id": "d", "run_id": "r"}) is live


def _alerting_project(tmp_path: Path, alerts: list[dict], **written) -> Path:
    """A project whose Airflow workspace holds the monitor's alerts.json (plus ``written``)."""
    ws = workspace_dir(tmp_path)
    (ws / "monitoring").mkdir(parents=True)
    (ws / ALERTS_FILE).write_text(json.dumps({"now": "2026-11-21", "alerts": alerts, **written}))
    return tmp_path


def test_branch_retrains_on_alerts_except_right_after_a_release(tmp_path):
    alert = {"window_start": "2026-11-10", "message": "bucket 1: positivity low", "bucket": 1}
    project = _alerting_project(tmp_path, [alert])
    assert task_bodies.alerts_status(project)["exit_code"] == ALERT_EXIT_CODE
    ti = TI()
    context = {
        "run_id": "scheduled__x",
        "ti": ti,
        "dag_run": DagRun("scheduled"),
        "params": {"preset": "presets/online-retail.yaml"},
    }
    assert task_bodies.branch_on_alerts_task(project, context) == RETRAIN_TASK
    assert "bucket 1: positivity low" in ti.pushed["retrain_conf"]["reason"]
    # A retrain trains the store this run watched.
    assert ti.pushed["retrain_conf"]["preset"] == "presets/online-retail.yaml"
    after_release = {"run_id": "asset_triggered__x", "ti": TI(), "dag_run": DagRun("asset_triggered")}
    assert task_bodies.branch_on_alerts_task(project, after_release) == NO_RETRAIN_TASK
    quiet = _alerting_project(tmp_path / "quiet", [])
    manual = {"run_id": "m", "ti": TI(), "dag_run": DagRun("manual")}
    assert task_bodies.branch_on_alerts_task(quiet, manual) == NO_RETRAIN_TASK


def test_a_monitor_run_without_a_champion_branches_to_no_retrain(tmp_path):
    """The gate refused the store's first candidate: the monitor watched nothing, alerted nothing."""
    reason = "no champion released for nextbuy-large-1m: metrics/deploy.json says why"
    project = _alerting_project(tmp_path, [], monitored=False, reason=reason)
    status = task_bodies.alerts_status(project)
    assert status["exit_code"] == 0
    assert status["alerts"] == []
    assert "nothing monitored" in status["output"]
    assert "nextbuy-large-1m" in status["output"]
    ti = TI()
    scheduled = {"run_id": "scheduled__x", "ti": ti, "dag_run": DagRun("scheduled")}
    assert task_bodies.branch_on_alerts_task(project, scheduled) == NO_RETRAIN_TASK
    assert ti.pushed == {}


def test_release_extra_names_the_version_and_the_run():
    class Dag:
        dag_id = "nextbuy_training"

    verdict = {"passed": True, "version": "3", "champion_version": "3", "action": "promoted"}
    extra = task_bodies.release_extra(verdict, {"dag": Dag(), "run_id": "r"})
    assert extra == {
        "version": "3",
        "champion_version": "3",
        "action": "promoted",
        "dag_id": "nextbuy_training",
        "run_id": "r",
    }
