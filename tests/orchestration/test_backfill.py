"""`nextbuy airflow backfill`: the DAG unpaused first, the days one at a time in date order with
the preset in each run's conf, bad dates and presets refused in one line before anything is
created, and a busy SQLite database waited out."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from nextbuy.orchestration import backfill
from nextbuy.orchestration.backfill import BackfillError
from tests.conftest import ROOT


def test_the_dag_is_unpaused_then_the_days_queued_one_at_a_time_with_the_preset():
    conf = backfill.run_conf(ROOT, "presets/online-retail.yaml", "a week of real days")
    unpause, create = backfill.airflow_commands(
        "nextbuy_training", dt.date(2011, 9, 1), dt.date(2011, 9, 7), conf
    )
    assert unpause[-3:] == ["dags", "unpause", "nextbuy_training"]
    flags = dict(zip(create[5::2], create[6::2], strict=True))
    assert flags["--max-active-runs"] == "1"  # one workspace: days never interleave
    assert (flags["--from-date"], flags["--to-date"]) == ("2011-09-01", "2011-09-07")
    assert json.loads(flags["--dag-run-conf"]) == {
        "preset": "presets/online-retail.yaml",
        "reason": "a week of real days",
    }


@pytest.mark.parametrize(
    ("start", "end", "named"),
    [("2011-9-1", "2011-09-07", "--from '2011-9-1'"), ("2011-09-07", "2011-09-01", "is after --to")],
)
def test_bad_dates_are_refused_naming_the_flag(start, end, named):
    with pytest.raises(BackfillError, match=named):
        backfill.days(start, end)


@pytest.mark.parametrize("preset", ["presets/no-such-store.yaml", "/etc/passwd", "../presets/tiny.yaml"])
def test_a_preset_that_is_not_a_file_of_the_project_is_refused(preset):
    with pytest.raises(BackfillError, match="--preset"):
        backfill.run_conf(ROOT, preset, None)


def test_nothing_is_created_without_a_running_airflow_or_for_another_dag(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path)}
    with pytest.raises(BackfillError, match="make airflow"):
        backfill.backfill(ROOT, "nextbuy_training", "2011-09-01", "2011-09-02", None, None, env)
    with pytest.raises(BackfillError, match="nextbuy_training, nextbuy_monitoring"):
        backfill.backfill(ROOT, "nextbuy_batch", "2011-09-01", "2011-09-02", None, None, env)


def test_a_busy_database_is_waited_out(tmp_path, monkeypatch, capsys):
    (tmp_path / "airflow.db").touch()
    answers = iter(
        [
            subprocess.CompletedProcess([], 0, "", ""),  # unpause
            subprocess.CompletedProcess([], 1, "", "sqlite3.OperationalError: database is locked"),
            subprocess.CompletedProcess([], 0, "", ""),
        ]
    )
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or next(answers))
    env = {"AIRFLOW_HOME": str(tmp_path)}
    assert backfill.backfill(ROOT, "nextbuy_training", "2011-09-01", "2011-09-07", None, None, env, 0.0) == 0
    assert [c[3:5] for c in calls] == [["dags", "unpause"], ["backfill", "create"], ["backfill", "create"]]
    out = capsys.readouterr().out
    assert "database is busy" in out
    assert "7 day(s) 2011-09-01 .. 2011-09-07 queued" in out
