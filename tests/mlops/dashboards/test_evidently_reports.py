"""Evidently snapshots per window and the published on-call dashboard (fast: synthetic windows, tmp workspace)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy.mlops.dashboards import evidently_reports as er

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_SPEC = ROOT / "monitoring" / "dashboard.yaml"
PROJECT = "nextbuy-monitor-test"
N_WINDOWS = 5
N_BUCKETS = 3
START = pd.Timestamp("2024-03-01")


def _rows(rng: np.random.Generator, n: int, score_shift: float = 0.0, log_price: bool = True) -> pd.DataFrame:
    uncertainty = rng.gamma(2.0, 0.1, n)
    prob = 1.0 / (1.0 + np.exp(-rng.normal(-2.0 + score_shift, 1.0, n)))
    return pd.DataFrame({
        "score": rng.normal(score_shift, 1.0, n),
        "uncertainty": uncertainty,
        "bucket": np.digitize(uncertainty, [0.15, 0.3]).astype(int),
        "prob_calibrated": prob,
        "category": rng.integers(0, 8, n),
        "log_price": np.where(rng.random(n) < 0.05, np.nan, rng.normal(3.0, 1.0, n)) if log_price else np.nan,
        "label_observed": (rng.random(n) < prob).astype(int),
        "expected_label": prob,
    })


def _bucket_table(rows: pd.DataFrame, day: int, n_days: int) -> pd.DataFrame:
    """Shaped like the monitor stage's table; the last two windows have no matured labels (observed NaN)."""
    out = []
    for bucket in range(N_BUCKETS):
        b = rows[rows["bucket"] == bucket]
        predicted = float(b["prob_calibrated"].mean())
        estimated = predicted * (1.0 + 0.1 * bucket * day / n_days)
        half_width = 1.96 * math.sqrt(estimated * (1 - estimated) / max(len(b), 1))
        out.append({"bucket": bucket, "volume": float(len(b)), "predicted": predicted,
                    "observed": float(b["label_observed"].mean()) if day < n_days - 2 else np.nan,
                    "naive": float(b["label_observed"].mean()) * (1.0 - 0.15 * day / n_days),
                    "estimated": estimated, "estimated_lo": estimated - half_width,
                    "estimated_hi": estimated + half_width,
                    "alert": bool(bucket == N_BUCKETS - 1 and day == n_days - 1)})
    return pd.DataFrame(out)


def make_windows(n_windows: int = N_WINDOWS, seed: int = 0):
    """(reference_rows, [(window_start, window_rows, bucket_table)]) with score drift growing over time."""
    rng = np.random.default_rng(seed)
    reference = _rows(rng, 2000)
    windows = []
    for day in range(n_windows):
        rows = _rows(rng, 800, score_shift=0.12 * day)
        windows.append((START + pd.Timedelta(days=day), rows, _bucket_table(rows, day, n_windows)))
    return reference, windows


def make_snapshots(reference, windows):
    return [er.window_snapshot(rows, reference, table.assign(window_start=start), start, [f"window:{start:%Y-%m-%d}"])
            for start, rows, table in windows]


def fill_workspace(workspace: Path, project: str = PROJECT) -> tuple[str, list]:
    """A workspace with N_WINDOWS published windows; returns (project id, windows)."""
    reference, windows = make_windows()
    project_id = er.publish(workspace, project, make_snapshots(reference, windows), DASHBOARD_SPEC)
    return project_id, windows


def expected_panel_titles(buckets) -> list[str]:
    """Titles straight from dashboard.yaml: 'per bucket' panels once per bucket."""
    spec = yaml.safe_load(DASHBOARD_SPEC.read_text())
    titles = []
    for panel in spec["panels"]:
        if panel.get("per_bucket"):
            titles += [panel["title"].replace("{bucket}", str(b)) for b in buckets]
        else:
            titles.append(panel["title"])
    return titles


def assert_table_equal(stored: pd.DataFrame, table: pd.DataFrame) -> None:
    expected = table[list(er.TABLE_COLUMNS)].astype({"alert": float}).sort_values("bucket").reset_index(drop=True)
    assert stored["bucket"].tolist() == expected["bucket"].tolist()
    for column in er.TABLE_COLUMNS[1:]:
        np.testing.assert_allclose(stored[column].to_numpy(float), expected[column].to_numpy(float),
                                   rtol=0, atol=0, equal_nan=True, err_msg=column)


@pytest.fixture(scope="module")
def windows_and_snapshots():
    reference, windows = make_windows()
    return reference, windows, make_snapshots(reference, windows)


def _single_values(snapshot_or_run) -> dict:
    """{(metric type, frozenset(params)): value} of every SingleValue stored (the 0.7 way of reading a run)."""
    from evidently.core.metric_types import SingleValue

    out = {}
    for result in snapshot_or_run.metric_results.values():
        values = [result] if isinstance(result, SingleValue) else [
            getattr(result, "count", None), getattr(result, "share", None)]
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
    reference, windows, snapshots = windows_and_snapshots
    for (start, rows, table), snapshot in zip(windows, snapshots):
        # one SingleValue per (bucket, kind), per-bucket volume and alert, and the alert counter
        values = _single_values(snapshot)
        for _, row in table.iterrows():
            b = str(int(row["bucket"]))
            for kind in er.BUCKET_KINDS:
                stored = values[("BucketPositivity", frozenset({"bucket": b, "kind": kind}.items()))]
                assert (math.isnan(stored) and math.isnan(row[kind])) or stored == row[kind], (start, b, kind)
            assert values[("BucketVolume", frozenset({"bucket": b}.items()))] == row["volume"]
            assert values[("BucketAlert", frozenset({"bucket": b}.items()))] == int(row["alert"])
        assert values[("AlertedBucketsCount", frozenset())] == int(table["alert"].sum())
        assert_table_equal(er.snapshot_bucket_values(snapshot), table)

        drift = {dict(k[1])["column"]: v for k, v in values.items() if k[0] == "ValueDrift"}
        assert set(drift) == set(er.DRIFT_COLUMNS)
        assert all(np.isfinite(v) and v >= 0 for v in drift.values())
        drifted = {dict(k[1])["value_type"]: v for k, v in values.items() if k[0] == "DriftedColumnsCount"}
        assert set(drifted) == {"count", "share"}
        assert drifted["share"] == pytest.approx(drifted["count"] / len(er.DRIFT_COLUMNS))

    def score_drift(snapshot):
        return next(v for k, v in _single_values(snapshot).items()
                    if k[0] == "ValueDrift" and dict(k[1])["column"] == "score")

    # the synthetic score shifts by 0.12 sd a day: PSI must grow from the first to the last window
    assert score_drift(snapshots[-1]) > score_drift(snapshots[0])
    assert snapshots[0].to_snapshot_model().timestamp == START.to_pydatetime()


def test_publish_twice_is_idempotent_and_reloads(tmp_path, windows_and_snapshots):
    reference, windows, snapshots = windows_and_snapshots
    workspace = tmp_path / "workspace"
    first = er.publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
    second = er.publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
    assert first == second

    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))  # a fresh handle reads only what is on disk
    projects = ws.search_project(PROJECT)
    assert [str(p.id) for p in projects] == [first]
    runs = ws.list_runs(projects[0].id)
    assert len(runs) == N_WINDOWS  # one run per window, not one per publish

    dashboard = ws.get_dashboard(projects[0].id)
    titles = [p.title for p in dashboard.panels]
    assert titles == expected_panel_titles(range(N_BUCKETS))
    assert len(set(titles)) == len(titles)
    assert [len(t.panels) for t in dashboard.tabs] == [len(titles)]
    assert all(p.values for p in dashboard.panels)

    by_window = {}
    for run_id in runs:
        run = ws.get_run(projects[0].id, run_id)
        by_window[pd.Timestamp(run.timestamp)] = run
    assert sorted(by_window) == [start for start, _, _ in windows]
    for start, _, table in windows:
        run = by_window[start]
        assert_table_equal(er.snapshot_bucket_values(run), table)
        assert er.snapshot_alert_count(run) == int(table["alert"].sum())
        assert f"window:{start:%Y-%m-%d}" in run.tags

    # re-publishing one window with new numbers replaces that run (no duplicate point in the series)
    start, rows, table = windows[0]
    changed = table.assign(estimated=table["estimated"] + 0.05, alert=True)
    er.publish(workspace, PROJECT, [er.window_snapshot(rows, reference, changed, start, ["rerun"])], DASHBOARD_SPEC)
    ws = Workspace(str(workspace))
    runs = ws.list_runs(first)
    assert len(runs) == N_WINDOWS
    rerun = [r for r in (ws.get_run(first, rid) for rid in runs) if pd.Timestamp(r.timestamp) == start]
    assert len(rerun) == 1 and rerun[0].tags == ["rerun"]
    assert_table_equal(er.snapshot_bucket_values(rerun[0]), changed)
    assert [p.title for p in ws.get_dashboard(first).panels] == titles


def test_series_the_ui_reads_one_line_per_bucket_and_nan_gaps(tmp_path, windows_and_snapshots):
    """The dashboard's panel filters, evaluated by Evidently's own series query, give one series per bucket
    with one point per window and gaps (None) where observed is still NaN."""
    import asyncio

    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local import InMemoryDataStorage

    reference, windows, snapshots = windows_and_snapshots
    project_id = er.publish(tmp_path / "ws", PROJECT, snapshots, DASHBOARD_SPEC)
    from evidently.ui.workspace import Workspace

    dashboard = Workspace(str(tmp_path / "ws")).get_dashboard(project_id)
    panel = next(p for p in dashboard.panels if p.title.startswith("Observed positivity per bucket"))
    filters = [SeriesFilter(tags=v.tags, metadata=v.metadata, metric=v.metric, metric_labels=v.metric_labels)
               for v in panel.values]
    import uuid

    storage = InMemoryDataStorage(str(tmp_path / "ws"))
    response = asyncio.run(storage.get_data_series(uuid.UUID(project_id), filters, None, None))
    assert len(response.sources) == N_WINDOWS
    series = {(s.params["bucket"], s.params["kind"]): s.values for s in response.series}
    assert set(series) == {(str(b), k) for b in range(N_BUCKETS) for k in ("observed", "predicted")}
    for b in range(N_BUCKETS):
        observed = series[(str(b), "observed")]
        expected = [t.loc[t["bucket"] == b, "observed"].item() for _, _, t in windows]
        assert [None if math.isnan(e) else pytest.approx(e) for e in expected] == [
            None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in observed]
    legends = {v.legend for v in panel.values}
    assert legends == {f"bucket {b} {k}" for b in range(N_BUCKETS) for k in ("observed", "predicted")}


@pytest.mark.parametrize("n_buckets", [2, 5])
def test_dashboard_spec_expands_per_bucket(n_buckets):
    spec = er.load_dashboard_spec(DASHBOARD_SPEC)
    dashboard = er.build_dashboard(spec, range(n_buckets), project_id="p")
    titles = [p.title for p in dashboard.panels]
    assert titles == expected_panel_titles(range(n_buckets))
    assert not any(re.search(r"(?<!\{)\{bucket\}", t) for t in titles)
    estimated = next(p for p in dashboard.panels if p.title.startswith("Estimated eventual positivity"))
    assert len(estimated.values) == 2 * n_buckets
    assert {v.metric_labels["bucket"] for v in estimated.values} == {str(b) for b in range(n_buckets)}
    per_bucket = [p for p in dashboard.panels if p.title.endswith("predicted vs actual positivity")]
    assert len(per_bucket) == n_buckets
    for b, panel in enumerate(per_bucket):
        assert {v.metric_labels["kind"] for v in panel.values} == set(er.BUCKET_KINDS)
        assert {v.metric_labels["bucket"] for v in panel.values} == {str(b)}
    # rebuilding gives the same ids: no churn, no duplicates
    again = er.build_dashboard(spec, range(n_buckets), project_id="p")
    assert [p.id for p in again.panels] == [p.id for p in dashboard.panels]


def test_dashboard_spec_errors_are_loud(tmp_path):
    bad = tmp_path / "dashboard.yaml"
    bad.write_text("panels:\n  - title: x\n    type: line\n    series:\n      - {metric: positivity, kind: nope}\n")
    with pytest.raises(er.DashboardSpecError, match="kind"):
        er.load_dashboard_spec(bad)
    bad.write_text("panels:\n  - title: x\n    colour: red\n    series: [{metric: volume}]\n")
    with pytest.raises(er.DashboardSpecError, match="unknown keys"):
        er.load_dashboard_spec(bad)


def test_window_without_prices_and_tz_aware_start():
    rng = np.random.default_rng(1)
    reference = _rows(rng, 500)
    rows = _rows(rng, 300, log_price=False)
    table = _bucket_table(rows, 0, 5)
    snapshot = er.window_snapshot(rows, reference, table, pd.Timestamp("2024-03-01 02:00", tz="Europe/Paris"), [])
    drift_columns = {dict(k[1])["column"] for k in _single_values(snapshot) if k[0] == "ValueDrift"}
    assert drift_columns == set(er.DRIFT_COLUMNS) - {"log_price"}
    model = snapshot.to_snapshot_model()
    assert model.timestamp == pd.Timestamp("2024-03-01 01:00").to_pydatetime()  # UTC, naive
    assert_table_equal(er.snapshot_bucket_values(snapshot), table)
    with pytest.raises(ValueError, match="bucket_table lacks"):
        er.window_snapshot(rows, reference, table.drop(columns=["naive"]), START, [])
