"""Publishing window snapshots to a local Evidently Workspace, and the dashboard built from the spec.

``publish`` writes the snapshots (one run per window: re-publishing a window replaces its run) and
rebuilds the project dashboard from monitoring/dashboard.yaml (``spec``), whose "per bucket" panels and
series are expanded by ``build_dashboard`` for the buckets present (2..5 or any number).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evidently.core.report import Snapshot
from evidently.sdk import panels as ev_panels
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.ui.workspace import Workspace

from nextbuy.mlops.dashboards.metrics import WINDOW_KEY
from nextbuy.mlops.dashboards.spec import (
    PLACEHOLDER,
    DashboardSpec,
    PanelSpec,
    SeriesSpec,
    load_dashboard_spec,
)

_ID_NAMESPACE = uuid.UUID("6f1c3c2e-7d1b-4a53-9a4e-2d8c1f0b9e51")

# --------------------------------------------------------------------------------------------------
# Spec -> Evidently DashboardModel
# --------------------------------------------------------------------------------------------------


def _fill(text: str | None, **values) -> str | None:
    """text with its placeholders replaced; one without a value stays as written."""
    if text is None:
        return None

    def replace(match: re.Match) -> str:
        value = values.get(match.group(1))
        return match.group(0) if value is None else str(value)

    return PLACEHOLDER.sub(replace, str(text))


def _default_legend(s: SeriesSpec, bucket: int | None) -> str:
    # no bucket: Evidently draws one series per bucket, and its legend template names the bucket
    prefix = f"bucket {bucket} " if bucket is not None else ("bucket {{bucket}} " if s.bucket_scoped else "")
    if s.metric == "positivity":
        return f"{prefix}{s.kind}"
    if s.metric in ("volume", "alert"):
        return f"{prefix}{s.metric}"
    if s.metric == "alerting_buckets":
        return "alerting buckets"
    if s.metric == "drift":
        return f"{s.column} drift"
    if s.metric == "drifted_columns":
        return f"drifted columns ({s.value_type})"
    return s.metric


def _metric_labels(s: SeriesSpec) -> dict[str, str]:
    labels = dict(s.labels)
    if s.metric == "positivity":
        labels["kind"] = str(s.kind)
    elif s.metric == "drift":
        labels["column"] = str(s.column)
    elif s.metric == "drifted_columns":
        labels["value_type"] = s.value_type
    return labels


def _series_buckets(s: SeriesSpec, buckets: Sequence[int], panel_bucket: int | None) -> list[int | None]:
    if s.bucket_scoped and s.bucket is not None:
        return [s.bucket]
    if s.bucket_scoped and s.per_bucket:
        return list(buckets)
    if s.bucket_scoped and panel_bucket is not None:
        return [panel_bucket]
    return [None]  # unscoped: Evidently draws one series per matching bucket itself


def _panel_metrics(s: SeriesSpec, buckets: Sequence[int], panel_bucket: int | None) -> list[PanelMetric]:
    labels = _metric_labels(s)
    out = []
    for bucket in _series_buckets(s, buckets, panel_bucket):
        bucket_labels = dict(labels, **({"bucket": str(bucket)} if bucket is not None else {}))
        legend = _fill(
            s.legend or _default_legend(s, bucket), bucket=bucket, kind=s.kind, column=s.column, value=s.value
        )
        out.append(
            PanelMetric(metric=s.metric_type, metric_labels=bucket_labels, legend=legend, tags=list(s.tags))
        )
    return out


def _panel(
    p: PanelSpec, title: str, description: str | None, values: list[PanelMetric]
) -> DashboardPanelPlot:
    if p.type == "line":
        return ev_panels.line_plot_panel(title, values, description=description, size=p.size)
    if p.type == "bar":
        return ev_panels.bar_plot_panel(
            title, values, description=description, size=p.size, stacked=p.stacked
        )
    if p.type == "counter":
        return ev_panels.counter_panel(
            title, values, description=description, size=p.size, aggregation=p.aggregation
        )
    return ev_panels.text_panel(title, description=description, size=p.size)


def _expanded_panels(p: PanelSpec, buckets: Sequence[int]) -> list[DashboardPanelPlot]:
    """The panel, or one per bucket for a per_bucket panel."""
    out = []
    for panel_bucket in buckets if p.per_bucket else [None]:
        values = [m for s in p.series for m in _panel_metrics(s, buckets, panel_bucket)]
        out.append(
            _panel(p, _fill(p.title, bucket=panel_bucket), _fill(p.description, bucket=panel_bucket), values)
        )
    return out


def build_dashboard(spec: DashboardSpec, buckets: Iterable[int], project_id: Any = "") -> DashboardModel:
    """The DashboardModel for a validated spec and the buckets present in the project's runs.
    Panel and tab ids derive from the project id and titles, so a rebuild yields the same dashboard."""
    buckets = sorted({int(b) for b in buckets})
    panels: list[DashboardPanelPlot] = []
    tabs: dict[str, list[uuid.UUID]] = {}
    for p in spec.panels:
        tab = spec.tab if p.tab is None else p.tab
        for panel in _expanded_panels(p, buckets):
            panel.id = uuid.uuid5(_ID_NAMESPACE, f"{project_id}/panel/{tab}/{panel.title}/{len(panels)}")
            panels.append(panel)
            tabs.setdefault(tab, []).append(panel.id)
    tab_models = [
        DashboardTabModel(id=uuid.uuid5(_ID_NAMESPACE, f"{project_id}/tab/{t}"), title=t, panels=ids)
        for t, ids in tabs.items()
    ]
    return DashboardModel(tabs=tab_models, panels=panels)


# --------------------------------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------------------------------


def _snapshot_window(snapshot: Snapshot) -> str:
    key = snapshot.to_snapshot_model().metadata.get(WINDOW_KEY)
    if key is None:
        raise ValueError("publish expects snapshots made by window_snapshot (metadata lacks window_start)")
    return str(key)


def _snapshot_buckets(metadata: Mapping) -> list[int]:
    raw = str(metadata.get("buckets", "") or "")
    return [int(b) for b in raw.split(",") if b.strip()]


def _project_id(ws: Workspace, project_name: str, description: str | None) -> Any:
    """The id of the project named project_name, created if missing (the lowest id if several)."""
    found = sorted(ws.search_project(project_name), key=lambda p: str(p.id))
    project = found[0] if found else ws.create_project(project_name, description=description)
    return project.id


def _stored_windows(ws: Workspace, project_id: Any) -> tuple[dict[str, list[Any]], dict[str, set]]:
    """({window: run ids}, {window: buckets}) of the runs already in the project."""
    run_ids: dict[str, list[Any]] = {}
    window_buckets: dict[str, set] = {}
    for run_id in ws.list_runs(project_id):
        run = ws.get_run(project_id, run_id)
        if run is None:
            continue
        window = str(run.metadata.get(WINDOW_KEY))
        run_ids.setdefault(window, []).append(run_id)
        window_buckets.setdefault(window, set()).update(_snapshot_buckets(run.metadata))
    return run_ids, window_buckets


def publish(
    workspace_dir: str | Path, project_name: str, snapshots: list, dashboard_spec_path: str | Path
) -> str:
    """Create or reuse the project named project_name in a local Workspace at workspace_dir, add every
    snapshot (ws.add_run; a window already in the project is replaced, so re-running the monitor stage
    does not duplicate points), and rebuild the dashboard from dashboard_spec_path for the buckets of all
    the project's runs. Returns the project id."""
    spec = load_dashboard_spec(dashboard_spec_path)  # fail before touching the workspace
    Path(workspace_dir).mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace_dir))
    project_id = _project_id(ws, project_name, spec.project_description)
    stored, window_buckets = _stored_windows(ws, project_id)
    latest = {_snapshot_window(snapshot): snapshot for snapshot in snapshots}  # a window's last snapshot wins
    for window, snapshot in sorted(latest.items()):
        for run_id in stored.pop(window, []):
            ws.delete_run(project_id, run_id)
        ws.add_run(project_id, snapshot)
        window_buckets[window] = set(_snapshot_buckets(snapshot.to_snapshot_model().metadata))
    buckets = set().union(*window_buckets.values())
    ws.save_dashboard(project_id, build_dashboard(spec, buckets, project_id))
    return str(project_id)
