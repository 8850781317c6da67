"""traffic + monitor stage cores on a tiny trained store: a drill drift is caught
in the drifted bucket after it starts; clean traffic raises nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nextbuy.cli import ALERT_EXIT_CODE, app
from nextbuy.mlops import io
from nextbuy.pipeline import watch_traffic
from tests.helpers import config

MONITOR = config("monitor", min_volume=200)


@pytest.fixture(scope="module")
def trained():
    from nextbuy.pipeline import run_in_memory
    from tests.conftest import TINY_PARAMS

    return run_in_memory(TINY_PARAMS)


def test_clean_month_raises_no_alert(trained):
    table, fired = watch_traffic(trained, config("traffic", days=20, impressions_per_day=3000), MONITOR)
    assert fired == []
    assert set(table["bucket"]) == {0, 1} and table["window"].nunique() == 20


def test_drift_drill_alerts_in_the_drifted_bucket_after_it_starts(trained):
    drift = {"kind": "bucket_shift", "bucket": 1, "start_day": 8, "odds_multiplier": 0.3}
    traffic = config("traffic", days=20, impressions_per_day=3000, drift=drift)
    table, fired = watch_traffic(trained, traffic, MONITOR)
    assert fired, table.to_string()
    assert {a["bucket"] for a in fired} == {1}
    assert min(a["window"] for a in fired) >= 8


def test_alerts_command_exit_status(tmp_path):
    path = tmp_path / "alerts.json"
    io.write_json({"now": "2026-03-01", "alerts": []}, path)
    assert CliRunner().invoke(app, ["alerts", "--path", str(path)]).exit_code == 0
    io.write_json(
        {"now": "2026-03-01", "alerts": [{"window_start": "2026-02-20", "message": "bucket 1: low"}]}, path
    )
    result = CliRunner().invoke(app, ["alerts", "--path", str(path)])
    assert result.exit_code == ALERT_EXIT_CODE and "bucket 1" in result.output
