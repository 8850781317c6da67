"""The published on-call dashboard: runs in a local workspace and the dashboard built from dashboard.yaml."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from nextbuy.mlops.dashboards import metrics
from nextbuy.mlops.dashboards.publish import build_dashboard, publish
from nextbuy.mlops.dashboards.spec import load_dashboard_spec
from tests.mlops.dashboards.workspace import (
    DASHBOARD_SPEC,
    N_BUCKETS,
    N_WINDOWS,
    PROJECT,
    assert_table_equal,
    expected_panel_titles,
)


def test_publish_twice_is_idempotent_and_reloads(tmp_path, windows_and_snapshots):
    reference, windows, snapshots = windows_and_snapshots
    workspace = tmp_path / "workspace"
    first = publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
    second = publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
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
        assert_table_equal(metrics.snapshot_bucket_values(run), table)
        assert metrics.snapshot_alert_count(run) == int(table["alert"].sum())
        assert f"window:{start:%Y-%m-%d}" in run.tags

    # re-publishing one window with new numbers replaces that run (no duplicate point in the series)
    start, rows, table = windows[0]
    changed = table.assign(estimated=table["estimated"] + 0.05, alert=True)
    publish(
        workspace,
        PROJECT,
        [metrics.window_snapshot(rows, reference, changed, start, ["rerun"])],
        DASHBOARD_SPEC,
    )
    ws = Workspace(str(workspace))
    runs = ws.list_runs(first)
    assert len(runs) == N_WINDOWS
    rerun = [r for r in (ws.get_run(first, rid) for rid in runs) if pd.Timestamp(r.timestamp) == start]
    assert len(rerun) == 1 and rerun[0].tags == ["rerun"]
    assert_table_equal(metrics.snapshot_bucket_values(rerun[0]), changed)
    assert [p.title for p in ws.get_dashboard(first).panels] == titles


def test_series_the_ui_reads_one_line_per_bucket_and_nan_gaps(tmp_path, windows_and_snapshots):
    """The dashboard's panel filters, evaluated by Evidently's own series query, give one series per bucket
    with one point per window and gaps (None) where observed is still NaN."""
    import asyncio
    import uuid

    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local import InMemoryDataStorage
    from evidently.ui.workspace import Workspace

    reference, windows, snapshots = windows_and_snapshots
    project_id = publish(tmp_path / "ws", PROJECT, snapshots, DASHBOARD_SPEC)
    dashboard = Workspace(str(tmp_path / "ws")).get_dashboard(project_id)
    panel = next(p for p in dashboard.panels if p.title.startswith("Observed positivity per bucket"))
    filters = [
        SeriesFilter(tags=v.tags, metadata=v.metadata, metric=v.metric, metric_labels=v.metric_labels)
        for v in panel.values
    ]
    storage = InMemoryDataStorage(str(tmp_path / "ws"))
    response = asyncio.run(storage.get_data_series(uuid.UUID(project_id), filters, None, None))
    assert len(response.sources) == N_WINDOWS
    series = {(s.params["bucket"], s.params["kind"]): s.values for s in response.series}
    assert set(series) == {(str(b), k) for b in range(N_BUCKETS) for k in ("observed", "predicted")}
    for b in range(N_BUCKETS):
        observed = series[(str(b), "observed")]
        expected = [t.loc[t["bucket"] == b, "observed"].item() for _, _, t in windows]
        assert [None if math.isnan(e) else pytest.approx(e) for e in expected] == [
            None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in observed
        ]
    legends = {v.legend for v in panel.values}
    assert legends == {f"bucket {b} {k}" for b in range(N_BUCKETS) for k in ("observed", "predicted")}


@pytest.mark.parametrize("n_buckets", [2, 5])
def test_dashboard_spec_expands_per_bucket(n_buckets):
    spec = load_dashboard_spec(DASHBOARD_SPEC)
    dashboard = build_dashboard(spec, range(n_buckets), project_id="p")
    titles = [p.title for p in dashboard.panels]
    assert titles == expected_panel_titles(range(n_buckets))
    assert not any(re.search(r"(?<!\{)\{bucket\}", t) for t in titles)
    estimated = next(p for p in dashboard.panels if p.title.startswith("Estimated eventual positivity"))
    assert len(estimated.values) == 2 * n_buckets
    assert {v.metric_labels["bucket"] for v in estimated.values} == {str(b) for b in range(n_buckets)}
    per_bucket = [p for p in dashboard.panels if p.title.endswith("predicted vs actual positivity")]
    assert len(per_bucket) == n_buckets
    for b, panel in enumerate(per_bucket):
        assert {v.metric_labels["kind"] for v in panel.values} == set(metrics.BUCKET_KINDS)
        assert {v.metric_labels["bucket"] for v in panel.values} == {str(b)}
    # rebuilding gives the same ids: no churn, no duplicates
    again = build_dashboard(spec, range(n_buckets), project_id="p")
    assert [p.id for p in again.panels] == [p.id for p in dashboard.panels]


def test_dashboard_panels_series_and_tabs(tmp_path):
    """How each spec key turns into Evidently panels, metrics, labels and legends."""
    path = tmp_path / "dashboard.yaml"
    path.write_text("""
tab: Main
panels:
  - {title: Notes, type: text, description: read me, tab: Other}
  - title: Alerts
    type: counter
    aggregation: sum
    series:
      - {metric: alert, bucket: 1}
      - {metric: alert}
      - {metric: RowCount, labels: {a: 1}, tags: [x]}
  - title: "Bucket {bucket}"
    per_bucket: true
    type: bar
    stacked: true
    size: half
    series:
      - {metric: positivity, kind: naive, legend: "{kind} of {bucket}"}
      - {metric: drifted_columns}
""")
    dashboard = build_dashboard(load_dashboard_spec(path), [1, 0], project_id="p")
    panels = {p.title: p for p in dashboard.panels}
    assert list(panels) == ["Notes", "Alerts", "Bucket 0", "Bucket 1"]
    assert [(t.title, len(t.panels)) for t in dashboard.tabs] == [("Other", 1), ("Main", 3)]
    assert panels["Notes"].plot_params["plot_type"] == "text" and panels["Notes"].subtitle == "read me"
    assert panels["Alerts"].plot_params["aggregation"] == "sum"
    fixed, drawn_by_evidently, raw = panels["Alerts"].values
    assert (fixed.metric_labels, fixed.legend) == ({"bucket": "1"}, "bucket 1 alert")
    assert (drawn_by_evidently.metric_labels, drawn_by_evidently.legend) == ({}, "bucket {{bucket}} alert")
    assert (raw.metric, raw.metric_labels, raw.tags) == ("evidently:metric_v2:RowCount", {"a": "1"}, ["x"])
    bucket_1 = panels["Bucket 1"]
    assert bucket_1.size == "half" and bucket_1.plot_params["is_stacked"] is True
    assert [(v.metric.split(":")[-1], v.metric_labels, v.legend) for v in bucket_1.values] == [
        ("BucketPositivity", {"kind": "naive", "bucket": "1"}, "naive of 1"),
        ("DriftedColumnsCount", {"value_type": "share"}, "drifted columns (share)"),
    ]
