"""Publishing window snapshots to a local Evidently Workspace, and the dashboard built from the spec.

``publish`` writes the snapshots of one pipeline run (one Evidently run per window; re-publishing a run
replaces all of that run's snapshots) and rebuilds the project dashboard from monitoring/dashboard.yaml
(``spec``) for that run: every panel filters on the run's metadata, so the windows of other runs
(another champion, another traffic span) stay in the project, listed under Reports, but are never
drawn. "Per bucket" panels and series are expanded by ``build_dashboard`` for the run's buckets.
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

from nextbuy.mlops.dashboards import workspace_files
from nextbuy.mlops.dashboards.metrics import RUN_KEY, WINDOW_KEY
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


def _fill(text: str | None, **values: object) -> str | None:
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
    if s.metric == "not_alerting_buckets":
        return "buckets not alerting"
    if s.metric == "drift":
        return f"{s.column} drift"
    if s.metric == "drifted_columns":
        return f"drifted columns ({s.value_type})"
    return s.metric


#: What a counter panel reads for these series: OnCallCounter, which stores 0 so that Evidently 0.7.23's
#: counter shows "0" rather than "no value" (custom_metrics.COUNTER_ZERO).
_COUNTER_COPY = "OnCallCounter"


def _counter_copy(s: SeriesSpec) -> str | None:
    """The OnCallCounter `counter` of a series in a counter panel, None when it has no copy."""
    if s.metric == "alerting_buckets":
        return "alerting_buckets"
    if s.metric == "drifted_columns":
        return f"drifted_columns_{s.value_type}"
    return None


def _metric_type_and_labels(s: SeriesSpec, panel_type: str) -> tuple[str, dict[str, str]]:
    labels = dict(s.labels)
    counter = _counter_copy(s) if panel_type == "counter" else None
    if counter is not None:
        return _COUNTER_COPY, dict(labels, counter=counter)
    if s.metric == "positivity":
        labels["kind"] = str(s.kind)
    elif s.metric == "drift":
        labels["column"] = str(s.column)
    elif s.metric == "drifted_columns":
        labels["value_type"] = s.value_type
    return s.metric_type, labels


def _series_buckets(s: SeriesSpec, buckets: Sequence[int], panel_bucket: int | None) -> list[int | None]:
    if s.bucket_scoped and s.bucket is not None:
        return [s.bucket]
    if s.bucket_scoped and s.per_bucket:
        return list(buckets)
    if s.bucket_scoped and panel_bucket is not None:
        return [panel_bucket]
    return [None]  # unscoped: Evidently draws one series per matching bucket itself


def _panel_metrics(
    s: SeriesSpec, panel_type: str, buckets: Sequence[int], panel_bucket: int | None, run: str | None
) -> list[PanelMetric]:
    metric_type, labels = _metric_type_and_labels(s, panel_type)
    metadata = {RUN_KEY: run} if run is not None else {}
    out = []
    for bucket in _series_buckets(s, buckets, panel_bucket):
        bucket_labels = dict(labels, **({"bucket": str(bucket)} if bucket is not None else {}))
        legend = _fill(
            s.legend or _default_legend(s, bucket), bucket=bucket, kind=s.kind, column=s.column, value=s.value
        )
        out.append(
            PanelMetric(
                metric=metric_type,
                metric_labels=bucket_labels,
                legend=legend,
                tags=list(s.tags),
                metadata=metadata,
            )
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


def _expanded_panels(p: PanelSpec, buckets: Sequence[int], run: str | None) -> list[DashboardPanelPlot]:
    """The panel, or one per bucket for a per_bucket panel."""
    out = []
    for panel_bucket in buckets if p.per_bucket else [None]:
        values = [m for s in p.series for m in _panel_metrics(s, p.type, buckets, panel_bucket, run)]
        # Lines of one bucket each, bucket by bucket (predicted beside estimated of the same one):
        # Evidently colours a panel's lines by their order, from a palette whose neighbours differ.
        if all("bucket" in m.metric_labels for m in values):
            values.sort(key=lambda m: int(m.metric_labels["bucket"]))
        title = _fill(p.title, bucket=panel_bucket, run=run)
        assert title is not None  # a panel's title is required
        out.append(_panel(p, title, _fill(p.description, bucket=panel_bucket, run=run), values))
    return out


def build_dashboard(
    spec: DashboardSpec, buckets: Iterable[int], project_id: Any = "", run: str | None = None
) -> DashboardModel:
    """The DashboardModel for a validated spec and the buckets of the run it shows.

    run: every series draws only snapshots whose metadata ``run`` is this (None: no filter); "{run}" in
    titles and descriptions names it. Counter panels of ``alerting_buckets`` / ``drifted_columns`` read
    their OnCallCounter copies (0 shown as "0", not "no value"). Panel and tab ids derive from the
    project id, the tab and the panel's position, so a rebuild yields the same ids."""
    buckets = sorted({int(b) for b in buckets})
    panels: list[DashboardPanelPlot] = []
    tabs: dict[str, list[uuid.UUID]] = {}
    for i, p in enumerate(spec.panels):
        tab = spec.tab if p.tab is None else p.tab
        for j, panel in enumerate(_expanded_panels(p, buckets, run)):
            # not the filled title: "{run}" changes from run to run
            panel.id = uuid.uuid5(_ID_NAMESPACE, f"{project_id}/panel/{tab}/{i}/{p.title}/{j}")
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


def _snapshot_key(snapshot: Snapshot) -> tuple[str, str]:
    """(run, window) of a snapshot made by window_snapshot."""
    metadata = snapshot.to_snapshot_model().metadata
    missing = [k for k in (RUN_KEY, WINDOW_KEY) if not metadata.get(k)]
    if missing:
        raise ValueError(f"publish expects snapshots made by window_snapshot (metadata lacks {missing})")
    return str(metadata[RUN_KEY]), str(metadata[WINDOW_KEY])


def _snapshot_buckets(metadata: Mapping) -> list[int]:
    raw = str(metadata.get("buckets", "") or "")
    return [int(b) for b in raw.split(",") if b.strip()]


def _project_id(ws: Workspace, project_name: str, description: str | None) -> Any:
    """The id of the project named project_name, created if missing (the lowest id if several)."""
    found = sorted(ws.search_project(project_name), key=lambda p: str(p.id))
    project = found[0] if found else ws.create_project(project_name, description=description)
    return project.id


def _replaced_snapshots(metadata_by_id: Mapping[str, Mapping], run: str) -> list[str]:
    """Ids of the project's snapshots (their metadata by id) that publishing ``run`` replaces: those
    of the same run, and those without a run (published before runs were recorded: no dashboard can
    tell them apart)."""
    return [sid for sid, metadata in metadata_by_id.items() if metadata.get(RUN_KEY) in (run, None)]


def publish(
    workspace_dir: str | Path, project_name: str, snapshots: list, dashboard_spec_path: str | Path
) -> str:
    """Publish one pipeline run's window snapshots (window_snapshot, all with the same ``run``) and make
    the dashboard show that run.

    Creates or reuses the project named project_name in a local Workspace at workspace_dir; replaces the
    snapshots the project already holds for this run (re-publishing a run replaces it: no duplicate
    points, no stale windows) and any without a run (from before runs were recorded): adds these (one
    per window; a window's last snapshot wins) before it deletes those, each written whole under a
    temporary name and renamed into place, so a kill at any point leaves the old run or the new one
    complete (at worst both); a snapshot that does not read back is first set aside with a warning
    (``workspace_files.set_aside_unreadable``); rebuilds the dashboard from dashboard_spec_path, filtered
    to this run, for its buckets. Snapshots of other runs are kept (Reports lists them, tagged run:...)
    but not drawn. Returns the project id."""
    spec = load_dashboard_spec(dashboard_spec_path)  # fail before touching the workspace
    latest = {_snapshot_key(snapshot): snapshot for snapshot in snapshots}
    runs = sorted({run for run, _ in latest})
    if len(runs) != 1:
        raise ValueError(f"publish takes the snapshots of exactly one run, got runs {runs}")
    run = runs[0]
    Path(workspace_dir).mkdir(parents=True, exist_ok=True)
    # a killed writer's leftovers set aside (Workspace reads all); the others' metadata
    stored = workspace_files.set_aside_unreadable(workspace_dir)
    ws = Workspace(str(workspace_dir))
    project_id = _project_id(ws, project_name, spec.project_description)
    replaced = _replaced_snapshots(stored.get(str(project_id), {}), run)
    buckets: set[int] = set()
    for _, snapshot in sorted(latest.items()):  # every new snapshot whole before an old one goes
        workspace_files.add_snapshot(ws, project_id, snapshot)
        buckets.update(_snapshot_buckets(snapshot.to_snapshot_model().metadata))
    for snapshot_id in replaced:
        ws.delete_run(project_id, snapshot_id)
    workspace_files.save_dashboard(ws, project_id, build_dashboard(spec, buckets, project_id, run=run))
    return str(project_id)
