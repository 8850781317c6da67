"""Evidently snapshots per window: custom bucket metrics and drift (fast: synthetic windows)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nextbuy.mlops.dashboards import custom_metrics, metrics
from tests.mlops.dashboards.workspace import (
    N_BUCKETS,
    RUN,
    START,
    assert_table_equal,
    make_bucket_table,
    make_rows,
)


def _single_values(snapshot_or_run) -> dict:
    """{(metric type, frozenset(params)): value} of every SingleValue stored
    (the 0.7 way of reading a run)."""
    from evidently.core.metric_types import SingleValue

    out = {}
    for result in snapshot_or_run.metric_results.values():
        values = (
            [result]
            if isinstance(result, SingleValue)
            else [getattr(result, "count", None), getattr(result, "share", None)]
        )
        for value in values:
            if value is None:
                continue
            location = value.get_metric_value_location()
            params = {k: str(v) for k, v in location.metric.params.items() if k not in ("type", "columns")}
            params.update({k: str(v) for k, v in location.param.items()})
            metric_type = location.metric.params["type"].split(":")[-1]
            out[(metric_type, frozenset(params.items()))] = value.value
    return out


def test_snapshot_holds_bucket_table_values_and_drift(windows_and_snapshots):
    _reference, windows, snapshots = windows_and_snapshots
    for (start, _rows, table), snapshot in zip(windows, snapshots, strict=True):
        # one SingleValue per (bucket, kind), per-bucket volume and alert, and the alert counter
        values = _single_values(snapshot)
        for _, row in table.iterrows():
            b = str(int(row["bucket"]))
            for kind in custom_metrics.BUCKET_KINDS:
                stored = values[("BucketPositivity", frozenset({"bucket": b, "kind": kind}.items()))]
                assert (math.isnan(stored) and math.isnan(row[kind])) or stored == row[kind], (start, b, kind)
            assert values[("BucketVolume", frozenset({"bucket": b}.items()))] == row["volume"]
            assert values[("BucketAlert", frozenset({"bucket": b}.items()))] == int(row["alert"])
        n_alerts = int(table["alert"].sum())
        assert values[("AlertedBucketsCount", frozenset())] == n_alerts
        assert values[("NotAlertingBucketsCount", frozenset())] == N_BUCKETS - n_alerts
        assert_table_equal(metrics.snapshot_bucket_values(snapshot), table)
        assert metrics.snapshot_alert_count(snapshot) == n_alerts
        model = snapshot.to_snapshot_model()
        assert model.metadata[metrics.RUN_KEY] == RUN
        assert model.tags[0] == f"run:{RUN}"
        assert f"window:{start:%Y-%m-%d}" in model.tags

        drift = {dict(k[1])["column"]: v for k, v in values.items() if k[0] == "ValueDrift"}
        assert set(drift) == set(custom_metrics.DRIFT_COLUMNS)
        assert all(np.isfinite(v) and v >= 0 for v in drift.values())
        drifted = {dict(k[1])["value_type"]: v for k, v in values.items() if k[0] == "DriftedColumnsCount"}
        assert set(drifted) == {"count", "share"}
        assert drifted["share"] == pytest.approx(drifted["count"] / len(custom_metrics.DRIFT_COLUMNS))

        # the counter panels' copies: exact, but 0 stored as COUNTER_ZERO (Evidently prints 0 as "no value")
        counters = {dict(k[1])["counter"]: v for k, v in values.items() if k[0] == "OnCallCounter"}
        assert set(counters) == set(custom_metrics.COUNTERS)
        for name, exact in [
            ("alerting_buckets", n_alerts),
            ("drifted_columns_share", drifted["share"]),
            ("drifted_columns_count", drifted["count"]),
        ]:
            assert counters[name] == (custom_metrics.COUNTER_ZERO if exact == 0 else pytest.approx(exact)), (
                name
            )
    # one DriftedColumnsCount per window: the drift counters reuse the preset's, they add no second one
    assert sum(k[0] == "DriftedColumnsCount" for k in _single_values(snapshots[0])) == 2

    def score_drift(snapshot):
        return next(
            v
            for k, v in _single_values(snapshot).items()
            if k[0] == "ValueDrift" and dict(k[1])["column"] == "score"
        )

    # the synthetic score shifts by 0.12 sd a day: PSI must grow from the first to the last window
    assert score_drift(snapshots[-1]) > score_drift(snapshots[0])
    assert snapshots[0].to_snapshot_model().timestamp == START.to_pydatetime()


def test_window_without_prices_and_tz_aware_start():
    rng = np.random.default_rng(1)
    reference = make_rows(rng, 500)
    rows = make_rows(rng, 300, log_price=False)
    table = make_bucket_table(rows, 0, 5)
    paris_start = pd.Timestamp("2024-03-01 02:00", tz="Europe/Paris")
    snapshot = metrics.window_snapshot(rows, reference, table, paris_start, [], run=RUN)
    drift_columns = {dict(k[1])["column"] for k in _single_values(snapshot) if k[0] == "ValueDrift"}
    assert drift_columns == set(custom_metrics.DRIFT_COLUMNS) - {"log_price"}
    counters = {
        dict(k[1])["counter"]: v for k, v in _single_values(snapshot).items() if k[0] == "OnCallCounter"
    }
    assert counters["drifted_columns_count"] in (custom_metrics.COUNTER_ZERO, *range(1, 5))
    assert (
        counters["alerting_buckets"] == custom_metrics.COUNTER_ZERO
    )  # make_bucket_table alerts on the last day
    model = snapshot.to_snapshot_model()
    assert model.timestamp == pd.Timestamp("2024-03-01 01:00").to_pydatetime()  # UTC, naive
    assert_table_equal(metrics.snapshot_bucket_values(snapshot), table)
    with pytest.raises(ValueError, match="bucket_table lacks"):
        metrics.window_snapshot(rows, reference, table.drop(columns=["naive"]), START, [], run=RUN)
    with pytest.raises(ValueError, match="needs the run"):
        metrics.window_snapshot(rows, reference, table, START, [], run=" ")


def test_window_without_drift_columns_has_nan_drift_counters():
    rng = np.random.default_rng(2)
    reference = make_rows(rng, 300).assign(
        score=np.nan, uncertainty=np.nan, category=np.nan, log_price=np.nan
    )
    reference["bucket"] = np.nan
    rows = make_rows(rng, 300)
    snapshot = metrics.window_snapshot(rows, reference, make_bucket_table(rows, 4, 5), START, [], run=RUN)
    values = _single_values(snapshot)
    assert not any(k[0] in ("ValueDrift", "DriftedColumnsCount") for k in values)
    counters = {dict(k[1])["counter"]: v for k, v in values.items() if k[0] == "OnCallCounter"}
    assert math.isnan(counters["drifted_columns_share"])
    assert math.isnan(counters["drifted_columns_count"])
    assert counters["alerting_buckets"] == 1


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-02-26 00:00:00", "2026-03-26", "nextbuy v3, traffic 2026-02-26..2026-03-26"),
        (
            "2026-02-26 06:30",
            pd.Timestamp("2026-03-26 12:00", tz="UTC"),
            "nextbuy v3, traffic 2026-02-26 06:30..2026-03-26 12:00",
        ),
    ],
)
def test_run_name(start, end, expected):
    assert metrics.run_name("nextbuy", "3", start, end) == expected


@pytest.mark.parametrize(
    "name", ["ValueDrift", "evidently:metric_v2:ValueDrift", "BucketPositivity", "RowCount"]
)
def test_metric_types_known_to_evidently(name):
    assert metrics.is_metric_type(name)


@pytest.mark.parametrize("name", ["positivity", "ValueDrfit", ""])
def test_unknown_metric_types(name):
    assert not metrics.is_metric_type(name)
