"""The Airflow plugin of this project (entry point ``airflow.plugins`` in pyproject.toml):
the timetable both DAGs are scheduled with, and the operator of the DVC stage tasks.

The schedule policy a user expects:
* unpausing a DAG starts no run by itself: no catch-up of past days and no run for the
  tick that passed while it was paused (Airflow's ``catchup=False`` would still start
  that latest tick at once, ahead of the user's own trigger);
* a manual trigger runs now; the next scheduled run is the next tick;
* past days run only when asked: ``airflow backfill create --dag-id ... --from-date ...``.

Unlike the rest of ``nextbuy.orchestration`` this module imports Airflow: Airflow loads
it, and the DAG files that use the timetable import Airflow anyway.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import timezone
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

from nextbuy.constants import INPUT_ERROR_EXIT_CODE

if TYPE_CHECKING:
    from airflow.sdk import Context

# A tick this recent still counts as due when it directly follows the DAG's last scheduled
# run (the scheduler, or a DAG file parsed just after the tick, notices it a little late).
DUE_SLACK = timedelta(minutes=5)


class NextTickTimetable(CronTriggerTimetable):
    """A cron schedule whose first run after creation or unpausing is the *next* tick.

    Why not Airflow's own: ``CronTriggerTimetable(run_immediately=False)`` waits for the next
    tick only before a DAG's first run; once runs exist, ``catchup=False`` starts the latest
    missed tick as soon as the DAG is unpaused. The cron arithmetic below (``_get_prev``,
    ``_align_to_next``) is the one Airflow's cron timetables use; Airflow has no public form.

    Airflow recomputes the next run each time it parses the DAG file, paused or not, and
    starts it once due. A tick already past is due only when it is the very next one after
    the DAG's last scheduled run and at most ``DUE_SLACK`` old: a DAG that is running its
    schedule keeps every tick, while a DAG never scheduled before (or one whose last
    scheduled run is more than a tick back) waits for the next tick, however soon after a
    tick it is unpaused.
    """

    def _follows(self, last: DataInterval | None, info: DagRunInfo) -> bool:
        return last is not None and self._get_prev(info.run_after) <= last.end

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        info = super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )
        if info is None or restriction.catchup:
            return info
        now = timezone.utcnow()
        if info.run_after >= now:
            return info
        if info.run_after >= now - DUE_SLACK and self._follows(last_automated_data_interval, info):
            return info
        upcoming = self._align_to_next(now)  # type: ignore[arg-type]  # Airflow annotates pendulum's DateTime; utcnow() returns one
        if restriction.latest is not None and upcoming > restriction.latest:
            return None
        return DagRunInfo.interval(upcoming - self._interval, upcoming)


class StageOperator(BashOperator):
    """A DVC stage's bash; exit code ``INPUT_ERROR_EXIT_CODE`` (the stage refused its
    configuration or input) fails the task at once: the same params and files fail every
    retry. Any other failure keeps its retries (a busy API server, a killed worker)."""

    def execute(self, context: Context) -> Any:
        try:
            return super().execute(context)
        except AirflowException:
            process = self.subprocess_hook.sub_process
            if process is not None and process.returncode == INPUT_ERROR_EXIT_CODE:
                raise AirflowFailException(
                    f"{self.task_id}: configuration or input error (its message is above): not retried"
                ) from None
            raise


class NextbuyPlugin(AirflowPlugin):
    name = "nextbuy"
    # AirflowPlugin annotates it without ClassVar, though Airflow reads it off the class.
    timetables: ClassVar[list] = [NextTickTimetable]  # type: ignore[misc]
