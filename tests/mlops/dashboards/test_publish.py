"""The published on-call dashboard: runs in a local workspace and the dashboard built from dashboard.yaml."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from nextbuy.mlops.dashboards import custom_metrics, metrics
from nextbuy.mlops.dashboards.publish import build_dashboard, publish
from nextbuy.mlops.dashboards.spec import load_dashboard_spec
from tests.mlops.dashboards.workspace import (
    ALERT_DAY,
    DASHBOARD_SPEC,
    N_BUCKETS,
    N_WINDOWS,
    OTHER_RUN,
    OTHER_START,
    PROJECT,
    RUN,
    START,
    assert_table_equal,
    expected_panel_titles,
    fill_workspace,
    make_snapshots,
    make_windows,
)


def _storage(workspace):
    """The UI server's view of a workspace (it loads every snapshot: make one per workspace state)."""
    from evidently.ui.service.storage.local import InMemoryDataStorage

    return InMemoryDataStorage(str(workspace))


def _series(storage, project_id, panel):
    """What the UI gets for a panel: Evidently's own series query with the panel's filters."""
    import asyncio
    import uuid

    from evidently.ui.service.base import SeriesFilter

    filters = [
        SeriesFilter(tags=v.tags, metadata=v.metadata, metric=v.metric, metric_labels=v.metric_labels)
        for v in panel.values
    ]
    return asyncio.run(storage.get_data_series(uuid.UUID(str(project_id)), filters, None, None))


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
    assert all(p.values for p in dashboard.panels if p.plot_params["plot_type"] != "text")
    assert {v.metadata[metrics.RUN_KEY] for p in dashboard.panels for v in p.values} == {RUN}

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

    # re-publishing the run with new numbers for one window replaces the run (no duplicate point)
    start, rows, table = windows[0]
    changed = table.assign(estimated=table["estimated"] + 0.05, alert=True)
    rerun_snapshot = metrics.window_snapshot(rows, reference, changed, start, ["rerun"], run=RUN)
    publish(workspace, PROJECT, [rerun_snapshot, *snapshots[1:]], DASHBOARD_SPEC)
    ws = Workspace(str(workspace))
    runs = ws.list_runs(first)
    assert len(runs) == N_WINDOWS
    rerun = [r for r in (ws.get_run(first, rid) for rid in runs) if pd.Timestamp(r.timestamp) == start]
    assert len(rerun) == 1
    assert rerun[0].tags == [f"run:{RUN}", "rerun"]
    assert_table_equal(metrics.snapshot_bucket_values(rerun[0]), changed)
    assert [p.title for p in ws.get_dashboard(first).panels] == titles

    # a re-published run drops the windows it no longer has (e.g. after a change of window_days)
    publish(workspace, PROJECT, snapshots[2:], DASHBOARD_SPEC)
    runs = Workspace(str(workspace)).list_runs(first)
    assert len(runs) == N_WINDOWS - 2


def test_other_runs_are_kept_but_not_drawn(tmp_path):
    """Two pipeline runs in one project: the dashboard draws the last published only; a snapshot from
    before runs were recorded is removed."""
    from evidently import Dataset, Report
    from evidently.metrics import RowCount
    from evidently.ui.workspace import Workspace

    workspace = tmp_path / "ws"
    fill_workspace(workspace)  # OTHER_RUN, then RUN
    ws = Workspace(str(workspace))
    project_id = ws.search_project(PROJECT)[0].id
    legacy = Report([RowCount()]).run(
        Dataset.from_pandas(pd.DataFrame({"x": [1.0, 2.0]})), None, metadata={"window_start": "2024-03-01"}
    )
    ws.add_run(project_id, legacy)
    assert len(ws.list_runs(project_id)) == 2 * N_WINDOWS + 1

    reference, windows = make_windows(alert_day=ALERT_DAY)
    assert publish(workspace, PROJECT, make_snapshots(reference, windows, RUN), DASHBOARD_SPEC) == str(
        project_id
    )
    ws = Workspace(str(workspace))
    stored = [ws.get_run(project_id, rid) for rid in ws.list_runs(project_id)]
    by_run = {}
    for run in stored:
        by_run.setdefault(run.metadata.get(metrics.RUN_KEY), []).append(pd.Timestamp(run.timestamp))
    assert {k: len(v) for k, v in by_run.items()} == {RUN: N_WINDOWS, OTHER_RUN: N_WINDOWS}
    assert min(by_run[OTHER_RUN]) == OTHER_START  # kept, and later in time than the current run

    dashboard = ws.get_dashboard(project_id)
    assert dashboard.panels[0].title == f"Run: {RUN}"
    run_starts = [START + pd.Timedelta(days=d) for d in range(N_WINDOWS)]
    storage = _storage(workspace)
    for panel in dashboard.panels:
        if panel.plot_params["plot_type"] == "text":
            continue
        response = _series(storage, project_id, panel)
        assert [pd.Timestamp(s.timestamp) for s in response.sources] == run_starts, panel.title
        assert response.series, panel.title
        assert all(any(v is not None for v in s.values) for s in response.series), panel.title

    counters = {p.title: p for p in dashboard.panels if p.plot_params["plot_type"] == "counter"}
    alerting = _series(storage, project_id, counters["Alerting buckets (latest window)"]).series
    # the run's last window has no alert (OTHER_RUN's has): 0, stored so that the UI prints "0"
    assert [s.values[-1] for s in alerting] == [custom_metrics.COUNTER_ZERO]
    drifted = _series(storage, project_id, counters["Drifted columns share (latest window)"]).series
    assert len(drifted) == 1
    assert 0 < drifted[0].values[-1] <= 1

    with pytest.raises(ValueError, match="exactly one run"):
        publish(
            workspace,
            PROJECT,
            make_snapshots(reference, windows[:1], RUN) + make_snapshots(reference, windows[1:2], OTHER_RUN),
            DASHBOARD_SPEC,
        )
    with pytest.raises(ValueError, match="exactly one run"):
        publish(workspace, PROJECT, [], DASHBOARD_SPEC)
    with pytest.raises(ValueError, match="metadata lacks"):
        publish(workspace, PROJECT, [legacy], DASHBOARD_SPEC)


def test_series_the_ui_reads_one_line_per_bucket_and_nan_gaps(tmp_path, windows_and_snapshots):
    """The dashboard's panel filters, evaluated by Evidently's own series query, give one series per bucket
    with one point per window and gaps (None) where observed is still NaN."""
    from evidently.ui.workspace import Workspace

    _reference, windows, snapshots = windows_and_snapshots
    project_id = publish(tmp_path / "ws", PROJECT, snapshots, DASHBOARD_SPEC)
    dashboard = Workspace(str(tmp_path / "ws")).get_dashboard(project_id)
    panel = next(p for p in dashboard.panels if p.title.startswith("Observed-so-far positivity per bucket"))
    storage = _storage(tmp_path / "ws")
    response = _series(storage, project_id, panel)
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

    # the stacked bar: alerting + not alerting = the window's buckets, so every window has a bar
    panel = next(p for p in dashboard.panels if p.title == "Alerting buckets per window")
    series = {s.metric_type.split(":")[-1]: s.values for s in _series(storage, project_id, panel).series}
    alerts = [int(t["alert"].sum()) for _, _, t in windows]
    assert series == {
        "AlertedBucketsCount": alerts,
        "NotAlertingBucketsCount": [N_BUCKETS - a for a in alerts],
    }


@pytest.mark.parametrize("n_buckets", [2, 5])
def test_dashboard_spec_expands_per_bucket(n_buckets):
    spec = load_dashboard_spec(DASHBOARD_SPEC)
    dashboard = build_dashboard(spec, range(n_buckets), project_id="p", run=RUN)
    titles = [p.title for p in dashboard.panels]
    assert titles == expected_panel_titles(range(n_buckets))
    assert not any(re.search(r"(?<!\{)\{bucket\}", t) for t in titles)
    estimated = next(p for p in dashboard.panels if p.title.startswith("Estimated eventual positivity"))
    assert len(estimated.values) == 2 * n_buckets
    # bucket by bucket, so the UI's palette gives a bucket's two lines neighbouring (unlike) colours
    pairs = [(v.metric_labels["bucket"], v.metric_labels["kind"]) for v in estimated.values]
    assert pairs == [(str(b), kind) for b in range(n_buckets) for kind in ("estimated", "predicted")]
    per_bucket = [p for p in dashboard.panels if p.title.endswith("confidence interval vs predicted")]
    assert len(per_bucket) == n_buckets
    for b, panel in enumerate(per_bucket):
        kinds = {v.metric_labels["kind"] for v in panel.values}
        assert kinds == {"predicted", "observed", "estimated", "estimated_lo", "estimated_hi"}
        assert {v.metric_labels["bucket"] for v in panel.values} == {str(b)}
    # rebuilding, for this run or another, gives the same ids: no churn, no duplicates
    again = build_dashboard(spec, range(n_buckets), project_id="p", run=OTHER_RUN)
    assert [p.id for p in again.panels] == [p.id for p in dashboard.panels]
    assert len({p.id for p in again.panels}) == len(again.panels)


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
  - title: "On call: {run}"
    type: counter
    series:
      - {metric: alerting_buckets}
      - {metric: drifted_columns, value: count}
  - title: "Bucket {bucket}"
    per_bucket: true
    type: bar
    stacked: true
    size: half
    series:
      - {metric: positivity, kind: naive, legend: "{kind} of {bucket}"}
      - {metric: drifted_columns}
""")
    dashboard = build_dashboard(load_dashboard_spec(path), [1, 0], project_id="p", run="r1")
    panels = {p.title: p for p in dashboard.panels}
    assert list(panels) == ["Notes", "Alerts", "On call: r1", "Bucket 0", "Bucket 1"]
    assert [(t.title, len(t.panels)) for t in dashboard.tabs] == [("Other", 1), ("Main", 4)]
    assert all(v.metadata == {"run": "r1"} for p in dashboard.panels for v in p.values)
    # counters of the on-call numbers read the copies that show 0 as "0"; other metrics are as written
    assert [(v.metric.split(":")[-1], v.metric_labels) for v in panels["On call: r1"].values] == [
        ("OnCallCounter", {"counter": "alerting_buckets"}),
        ("OnCallCounter", {"counter": "drifted_columns_count"}),
    ]
    unfiltered = build_dashboard(load_dashboard_spec(path), [0], project_id="p")
    assert all(v.metadata == {} for p in unfiltered.panels for v in p.values)
    assert "On call: {run}" in [p.title for p in unfiltered.panels]
    assert panels["Notes"].plot_params["plot_type"] == "text"
    assert panels["Notes"].subtitle == "read me"
    assert panels["Alerts"].plot_params["aggregation"] == "sum"
    fixed, drawn_by_evidently, raw = panels["Alerts"].values
    assert (fixed.metric_labels, fixed.legend) == ({"bucket": "1"}, "bucket 1 alert")
    assert (drawn_by_evidently.metric_labels, drawn_by_evidently.legend) == ({}, "bucket {{bucket}} alert")
    assert (raw.metric, raw.metric_labels, raw.tags) == ("evidently:metric_v2:RowCount", {"a": "1"}, ["x"])
    bucket_1 = panels["Bucket 1"]
    assert bucket_1.size == "half"
    assert bucket_1.plot_params["is_stacked"] is True
    assert [(v.metric.split(":")[-1], v.metric_labels, v.legend) for v in bucket_1.values] == [
        ("BucketPositivity", {"kind": "naive", "bucket": "1"}, "naive of 1"),
        ("DriftedColumnsCount", {"value_type": "share"}, "drifted columns (share)"),
    ]


def test_a_truncated_snapshot_is_set_aside_with_a_warning_and_publishing_goes_on(
    tmp_path, windows_and_snapshots, caplog
):
    """What a publisher killed mid-write left: the next publish quarantines it, naming it."""
    _, _, snapshots = windows_and_snapshots
    workspace = tmp_path / "workspace"
    project_id = publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
    folder = workspace / project_id / "snapshots"
    whole = next(folder.glob("*.json"))
    broken = folder / "0badc0de-0000-4000-8000-000000000000.json"
    broken.write_bytes(whole.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        assert publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC) == project_id
    assert not broken.exists()
    assert (folder / (broken.name + ".corrupt")).exists()
    assert broken.name in caplog.text
    assert "set aside" in caplog.text
    assert len(list(folder.glob("*.json"))) == len(snapshots)


def test_new_snapshots_are_whole_before_the_old_ones_go(tmp_path, windows_and_snapshots, monkeypatch):
    """A publish that fails after its first new snapshot leaves the previous run's complete."""
    from nextbuy.mlops.dashboards import workspace_files

    _, _, snapshots = windows_and_snapshots
    workspace = tmp_path / "workspace"
    project_id = publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
    folder = workspace / project_id / "snapshots"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    written = []
    add = workspace_files.add_snapshot

    def add_then_stop(ws, pid, snapshot):
        if written:
            raise KeyboardInterrupt  # stopped while writing the second
        written.append(add(ws, pid, snapshot))
        return written[-1]

    monkeypatch.setattr(workspace_files, "add_snapshot", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        publish(workspace, PROJECT, snapshots, DASHBOARD_SPEC)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {f"{written[0]}.json"}  # whole, no temporary file left
