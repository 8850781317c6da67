"""The Airflow plugin of this project (entry point ``airflow.plugins`` in pyproject.toml):
the timetable both DAGs are scheduled with.

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

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import timezone
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

# A tick this recent still counts as due (the scheduler notices it a little late).
DUE_SLACK = timedelta(minutes=5)


class NextTickTimetable(CronTriggerTimetable):
    """A cron schedule whose first run after creation or unpausing is the *next* tick."""

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        info = super().next_dagrun_info(
            last_automated_data_interval=last_automated_data_interval, restriction=restriction
        )
        if info is None or restriction.catchup:
            return info
        now = timezone.utcnow()
        if info.run_after >= now - DUE_SLACK:
            return info
        upcoming = self._align_to_next(now)
        if restriction.latest is not None and upcoming > restriction.latest:
            return None
        return DagRunInfo.interval(upcoming - self._interval, upcoming)


class NextbuyPlugin(AirflowPlugin):
    name = "nextbuy"
    timetables = [NextTickTimetable]
