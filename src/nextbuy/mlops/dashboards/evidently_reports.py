"""Evidently 0.7 snapshots of the monitor stage's windows, and the on-call dashboard built from them.

One snapshot (an Evidently "run") per traffic window, timestamped at the window start:

* ``BucketTablePreset`` — custom SingleValue metrics that *copy* the monitor stage's per-bucket numbers
  (the bucket table is handed to the report as the additional dataset ``bucket_table``; nothing is
  recomputed here): ``BucketPositivity(bucket, kind)`` for every kind in ``BUCKET_KINDS``,
  ``BucketVolume(bucket)``, ``BucketAlert(bucket)`` (0/1) and ``AlertedBucketsCount()``. Missing
  values (e.g. ``observed`` before any label matured) are stored as NaN and show as gaps.
* ``DataDriftPreset`` over score, uncertainty, bucket (categorical: bucket-share drift), category and
  log_price against the champion's holdout scores, with one fixed method (PSI, drift at >= 0.1) so a
  window's drift value means the same thing whatever its size: ``ValueDrift(column)`` per column and
  ``DriftedColumnsCount`` (count and share of drifted columns).

``publish`` writes the snapshots into a local Workspace (one run per window: re-publishing a window
replaces its run) and rebuilds the project dashboard from the declarative monitoring/dashboard.yaml,
whose "per bucket" panels and series are expanded here for the buckets present (2..5 or any number).
"""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import yaml
from evidently import DataDefinition, Dataset, Report
from evidently.core.container import MetricContainer
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.core.report import Context, Snapshot
from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import CounterData, WidgetSize, counter, table_data
from evidently.presets import DataDriftPreset
from evidently.sdk import panels as ev_panels
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.ui.workspace import Workspace

BUCKET_KINDS = ("predicted", "observed", "naive", "estimated", "estimated_lo", "estimated_hi")

#: Name of the additional dataset (the window's bucket table) that the bucket metrics read.
BUCKET_TABLE = "bucket_table"
#: Snapshot metadata key that identifies a window; a project holds one run per value.
WINDOW_KEY = "window_start"
#: Columns whose distribution is compared with the reference (the champion's holdout).
DRIFT_COLUMNS = ("score", "uncertainty", "bucket", "category", "log_price")
DRIFT_METHOD = "psi"
DRIFT_THRESHOLD = 0.1

ROW_COLUMNS = {  # column -> dtype of the rows handed to window_snapshot
    "score": "float64", "uncertainty": "float64", "bucket": "int64", "prob_calibrated": "float64",
    "category": "int64", "log_price": "float64", "label_observed": "int64", "expected_label": "float64",
}
NUMERICAL_ROW_COLUMNS = ["score", "uncertainty", "prob_calibrated", "log_price", "expected_label"]
CATEGORICAL_ROW_COLUMNS = ["bucket", "category", "label_observed"]
TABLE_COLUMNS = ("bucket", "volume", *BUCKET_KINDS, "alert")


# --------------------------------------------------------------------------------------------------
# Custom metrics: values copied from the window's bucket table
# --------------------------------------------------------------------------------------------------


def _bucket_table(context: Context) -> pd.DataFrame:
    dataset = context.additional_data.get(BUCKET_TABLE)
    if dataset is None:
        raise ValueError(f"bucket metrics need the bucket table as additional_data[{BUCKET_TABLE!r}] of Report.run")
    return dataset.as_dataframe()


def _bucket_value(context: Context, bucket: int, column: str) -> float:
    table = _bucket_table(context)
    row = table.loc[table["bucket"] == bucket]
    if row.empty:
        return math.nan
    value = row[column].iloc[0]
    return math.nan if pd.isna(value) else float(value)


class BucketPositivity(SingleValueMetric):
    """Positivity of one uncertainty bucket in one window, as computed by the monitor stage."""

    bucket: int
    kind: str  # one of BUCKET_KINDS


class BucketPositivityCalculation(SingleValueCalculation[BucketPositivity]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]) -> SingleValue:
        result = self.result(_bucket_value(context, self.metric.bucket, self.metric.kind))
        result.widget = []  # BucketTablePreset renders the whole table once
        return result

    def display_name(self) -> str:
        return f"Bucket {self.metric.bucket} {self.metric.kind} positivity"


class BucketVolume(SingleValueMetric):
    """Number of scored impressions of one bucket in one window."""

    bucket: int


class BucketVolumeCalculation(SingleValueCalculation[BucketVolume]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]) -> SingleValue:
        result = self.result(_bucket_value(context, self.metric.bucket, "volume"))
        result.widget = []
        return result

    def display_name(self) -> str:
        return f"Bucket {self.metric.bucket} volume"


class BucketAlert(SingleValueMetric):
    """1 when the monitor stage raised an alert for this bucket in this window, else 0."""

    bucket: int


class BucketAlertCalculation(SingleValueCalculation[BucketAlert]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]) -> SingleValue:
        value = _bucket_value(context, self.metric.bucket, "alert")
        result = self.result(0 if math.isnan(value) else int(value))
        result.widget = []
        return result

    def display_name(self) -> str:
        return f"Bucket {self.metric.bucket} alert"


class AlertedBucketsCount(SingleValueMetric):
    """Number of buckets alerting in the window (the on-call counter)."""


class AlertedBucketsCountCalculation(SingleValueCalculation[AlertedBucketsCount]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]) -> SingleValue:
        alerts = pd.to_numeric(_bucket_table(context)["alert"], errors="coerce").fillna(0)
        result = self.result(int((alerts != 0).sum()))
        result.widget = []
        return result

    def display_name(self) -> str:
        return "Alerting buckets"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


class BucketTablePreset(MetricContainer):
    """All bucket metrics of a window, rendered in the run view as one counter and one table."""

    buckets: List[int]

    def __init__(self, buckets: Sequence[int], include_tests: bool = False):
        self.buckets = [int(b) for b in buckets]
        super().__init__(include_tests=include_tests)

    def generate_metrics(self, context: Context):
        metrics: list = []
        for bucket in self.buckets:
            metrics += [BucketPositivity(bucket=bucket, kind=kind) for kind in BUCKET_KINDS]
            metrics += [BucketVolume(bucket=bucket), BucketAlert(bucket=bucket)]
        return [*metrics, AlertedBucketsCount()]

    def render(self, context: Context, child_widgets=None) -> List[BaseWidgetInfo]:
        table = _bucket_table(context)
        n_alerts = int(context.get_metric_result(AlertedBucketsCount()).value)
        rows = [[_fmt(int(r["bucket"])), _fmt(int(r["volume"])) if pd.notna(r["volume"]) else "—",
                 *[_fmt(float(r[k])) for k in BUCKET_KINDS], "ALERT" if r["alert"] else ""]
                for _, r in table.sort_values("bucket").iterrows()]
        return [
            counter(title="Alerting buckets in this window", size=WidgetSize.FULL,
                    counters=[CounterData(label="buckets alerting", value=str(n_alerts)),
                              CounterData(label="buckets", value=str(len(table)))]),
            table_data(title="Positivity per uncertainty bucket (from the monitor stage)",
                       column_names=["bucket", "volume", *BUCKET_KINDS, "alert"], data=rows),
        ]


# --------------------------------------------------------------------------------------------------
# One window -> one snapshot
# --------------------------------------------------------------------------------------------------


def _window_timestamp(window_start) -> pd.Timestamp:
    ts = pd.Timestamp(window_start)
    if ts.tzinfo is not None:  # Evidently compares run timestamps naively: store UTC without tz
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _clean_rows(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in DRIFT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")
    if rows.empty:
        raise ValueError(f"{name} has no rows: nothing to compare")
    keep = [c for c in ROW_COLUMNS if c in rows.columns]
    out = rows[keep].reset_index(drop=True).copy()
    for column in keep:
        dtype = ROW_COLUMNS[column]
        out[column] = pd.to_numeric(out[column], errors="coerce")
        if dtype == "int64" and out[column].notna().all():
            out[column] = out[column].astype("int64")
    return out


def _clean_bucket_table(bucket_table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in TABLE_COLUMNS if c not in bucket_table.columns]
    if missing:
        raise ValueError(f"bucket_table lacks columns {missing}")
    table = bucket_table[list(TABLE_COLUMNS)].reset_index(drop=True).copy()
    if table["bucket"].isna().any() or table["bucket"].duplicated().any():
        raise ValueError("bucket_table must hold one row per bucket of the window, "
                         f"got buckets {table['bucket'].tolist()}")
    table["bucket"] = table["bucket"].astype("int64")
    for column in ("volume", *BUCKET_KINDS):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    table["alert"] = table["alert"].map(lambda a: 0 if pd.isna(a) else int(bool(a))).astype("int64")
    return table.sort_values("bucket").reset_index(drop=True)


def window_snapshot(window_rows: pd.DataFrame, reference_rows: pd.DataFrame, bucket_table: pd.DataFrame,
                    window_start: pd.Timestamp, tags: list[str], *, drift_method: str = DRIFT_METHOD,
                    drift_threshold: float = DRIFT_THRESHOLD) -> Snapshot:
    """One Evidently Report run (a snapshot) for one window, timestamp = window_start.

    window_rows / reference_rows: score, uncertainty, bucket, prob_calibrated, category, log_price,
    label_observed, expected_label (extra columns are ignored). reference_rows = the champion's scores
    on the training-time holdout. bucket_table: this window's rows (bucket, volume, predicted, observed,
    naive, estimated, estimated_lo, estimated_hi, alert); its values are stored as they are.
    A drift column that is all-NaN on either side (e.g. log_price for a real source without prices)
    is left out of the drift metrics of that window rather than failing it.
    """
    table = _clean_bucket_table(bucket_table)
    current = _clean_rows(window_rows, "window_rows")
    reference = _clean_rows(reference_rows, "reference_rows")
    ts = _window_timestamp(window_start)

    metrics: list = [BucketTablePreset(buckets=table["bucket"].tolist())]
    drift_columns = [c for c in DRIFT_COLUMNS if current[c].notna().any() and reference[c].notna().any()]
    if drift_columns:
        metrics.append(DataDriftPreset(columns=drift_columns, method=drift_method, threshold=drift_threshold,
                                       include_tests=False))

    def definition(frame: pd.DataFrame) -> DataDefinition:
        return DataDefinition(numerical_columns=[c for c in NUMERICAL_ROW_COLUMNS if c in frame.columns],
                              categorical_columns=[c for c in CATEGORICAL_ROW_COLUMNS if c in frame.columns])

    table_definition = DataDefinition(numerical_columns=["volume", *BUCKET_KINDS],
                                      categorical_columns=["bucket", "alert"])
    # column stats of an all-NaN column (observed before any label matured, log_price without prices) divide 0/0
    with np.errstate(invalid="ignore", divide="ignore"):
        table_dataset = Dataset.from_pandas(table, data_definition=table_definition)
        current_dataset = Dataset.from_pandas(current, data_definition=definition(current))
        reference_dataset = Dataset.from_pandas(reference, data_definition=definition(reference))
    return Report(metrics).run(
        current_dataset,
        reference_dataset,
        additional_data={BUCKET_TABLE: table_dataset},
        timestamp=ts.to_pydatetime(),
        tags=[str(t) for t in tags],
        metadata={WINDOW_KEY: ts.isoformat(), "rows": str(len(current)),
                  "buckets": ",".join(str(b) for b in table["bucket"])},
        name=f"window {ts:%Y-%m-%d %H:%M}",
    )


def _metric_type(result: SingleValue) -> str:
    return str(result.get_metric_value_location().metric.params.get("type", "")).split(":")[-1]


def snapshot_bucket_values(snapshot) -> pd.DataFrame:
    """The bucket table stored in a snapshot (a Snapshot, or the SnapshotModel that Workspace.get_run returns):
    one row per bucket with volume, the BUCKET_KINDS and alert, read back from the custom metrics."""
    rows: Dict[int, Dict[str, float]] = {}
    for result in snapshot.metric_results.values():
        if not isinstance(result, SingleValue):
            continue
        kind = _metric_type(result)
        params = result.get_metric_value_location().metric.params
        if kind == "BucketPositivity":
            column = params["kind"]
        elif kind == "BucketVolume":
            column = "volume"
        elif kind == "BucketAlert":
            column = "alert"
        else:
            continue
        value = result.value
        rows.setdefault(int(params["bucket"]), {})[column] = math.nan if value is None else float(value)
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("bucket").reset_index()
    frame = frame.reindex(columns=list(TABLE_COLUMNS))
    return frame.sort_values("bucket").reset_index(drop=True)


def snapshot_alert_count(snapshot) -> Optional[int]:
    """The AlertedBucketsCount stored in a snapshot (Snapshot or SnapshotModel); None if absent."""
    for result in snapshot.metric_results.values():
        if isinstance(result, SingleValue) and _metric_type(result) == "AlertedBucketsCount":
            return int(result.value)
    return None


# --------------------------------------------------------------------------------------------------
# Declarative dashboard (monitoring/dashboard.yaml) -> Evidently DashboardModel
# --------------------------------------------------------------------------------------------------

#: Friendly metric names of dashboard.yaml -> (Evidently metric type, scoped per bucket).
METRIC_ALIASES = {
    "positivity": ("BucketPositivity", True),
    "volume": ("BucketVolume", True),
    "alert": ("BucketAlert", True),
    "alerting_buckets": ("AlertedBucketsCount", False),
    "drift": ("ValueDrift", False),
    "drifted_columns": ("DriftedColumnsCount", False),
}
PANEL_TYPES = ("line", "bar", "counter", "text")
PANEL_KEYS = {"title", "description", "type", "size", "per_bucket", "series", "aggregation", "stacked", "tab"}
SERIES_KEYS = {"metric", "kind", "column", "value", "bucket", "per_bucket", "legend", "labels", "tags"}
_PLACEHOLDER = re.compile(r"(?<!\{)\{(bucket|kind|column|value)\}(?!\})")  # leaves Evidently's {{param}} alone
_ID_NAMESPACE = uuid.UUID("6f1c3c2e-7d1b-4a53-9a4e-2d8c1f0b9e51")


class DashboardSpecError(ValueError):
    pass


def load_dashboard_spec(path: str | Path) -> dict:
    """Read and validate dashboard.yaml (errors name the panel, so an on-call edit fails loudly)."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    panels = spec.get("panels")
    if not isinstance(panels, list) or not panels:
        raise DashboardSpecError(f"{path}: needs a non-empty 'panels' list")
    for i, panel in enumerate(panels):
        where = f"{path}: panel {i} ({panel.get('title', '?')!r})" if isinstance(panel, dict) else f"{path}: panel {i}"
        if not isinstance(panel, dict) or not panel.get("title"):
            raise DashboardSpecError(f"{where}: each panel is a mapping with a 'title'")
        unknown = set(panel) - PANEL_KEYS
        if unknown:
            raise DashboardSpecError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(PANEL_KEYS)})")
        if panel.get("type", "line") not in PANEL_TYPES:
            raise DashboardSpecError(f"{where}: type must be one of {PANEL_TYPES}")
        if panel.get("size", "full") not in ("full", "half"):
            raise DashboardSpecError(f"{where}: size must be full or half")
        series = panel.get("series", [])
        if panel.get("type", "line") != "text" and not series:
            raise DashboardSpecError(f"{where}: needs a 'series' list")
        for j, s in enumerate(series):
            if not isinstance(s, dict) or "metric" not in s:
                raise DashboardSpecError(f"{where}: series {j} needs a 'metric'")
            unknown = set(s) - SERIES_KEYS
            if unknown:
                raise DashboardSpecError(f"{where}: series {j}: unknown keys {sorted(unknown)}")
            if s["metric"] == "positivity" and s.get("kind") not in BUCKET_KINDS:
                raise DashboardSpecError(f"{where}: series {j}: positivity needs kind in {BUCKET_KINDS}")
            if s["metric"] == "drift" and not s.get("column"):
                raise DashboardSpecError(f"{where}: series {j}: drift needs a column")
            if s["metric"] == "drifted_columns" and s.get("value", "share") not in ("share", "count"):
                raise DashboardSpecError(f"{where}: series {j}: drifted_columns value is share or count")
    return spec


def _fill(text: Optional[str], **values) -> Optional[str]:
    if text is None:
        return None
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if values.get(m.group(1)) is not None else m.group(0),
                            str(text))


def _default_legend(s: dict, bucket: Optional[int]) -> str:
    metric = s["metric"]
    if bucket is not None:
        prefix = f"bucket {bucket} "
    else:  # one series per bucket drawn by Evidently: its legend template names the bucket
        prefix = "bucket {{bucket}} " if METRIC_ALIASES.get(metric, (metric, False))[1] else ""
    if metric == "positivity":
        return f"{prefix}{s['kind']}"
    if metric in ("volume", "alert"):
        return f"{prefix}{metric}"
    if metric == "alerting_buckets":
        return "alerting buckets"
    if metric == "drift":
        return f"{s['column']} drift"
    if metric == "drifted_columns":
        return f"drifted columns ({s.get('value', 'share')})"
    return metric


def _panel_metrics(s: dict, buckets: Sequence[int], panel_bucket: Optional[int]) -> List[PanelMetric]:
    metric = s["metric"]
    metric_type, bucket_scoped = METRIC_ALIASES.get(metric, (metric, False))
    labels: Dict[str, str] = {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
    if metric == "positivity":
        labels["kind"] = s["kind"]
    elif metric == "drift":
        labels["column"] = str(s["column"])
    elif metric == "drifted_columns":
        labels["value_type"] = s.get("value", "share")
    if bucket_scoped and s.get("bucket") is not None:
        series_buckets: List[Optional[int]] = [int(s["bucket"])]
    elif bucket_scoped and s.get("per_bucket"):
        series_buckets = list(buckets)
    elif bucket_scoped and panel_bucket is not None:
        series_buckets = [panel_bucket]
    else:
        series_buckets = [None]  # unscoped: Evidently draws one series per matching bucket itself
    out = []
    for bucket in series_buckets:
        bucket_labels = dict(labels, **({"bucket": str(bucket)} if bucket is not None else {}))
        legend = s.get("legend") or _default_legend(s, bucket)
        legend = _fill(legend, bucket=bucket, kind=s.get("kind"), column=s.get("column"), value=s.get("value"))
        out.append(PanelMetric(metric=metric_type, metric_labels=bucket_labels, legend=legend,
                               tags=[str(t) for t in s.get("tags", [])]))
    return out


def build_dashboard(spec: Mapping, buckets: Iterable[int], project_id: Any = "") -> DashboardModel:
    """The DashboardModel for a validated spec and the buckets present in the project's runs.
    Panel and tab ids derive from the project id and titles, so a rebuild yields the same dashboard."""
    buckets = sorted({int(b) for b in buckets})
    default_tab = str(spec.get("tab", "On-call"))
    panels: List[DashboardPanelPlot] = []
    tabs: Dict[str, List[uuid.UUID]] = {}
    for p in spec["panels"]:
        for panel_bucket in (buckets if p.get("per_bucket") else [None]):
            title = _fill(p["title"], bucket=panel_bucket)
            description = _fill(p.get("description"), bucket=panel_bucket)
            size = p.get("size", "full")
            kind = p.get("type", "line")
            values = [m for s in p.get("series", []) for m in _panel_metrics(s, buckets, panel_bucket)]
            if kind == "line":
                panel = ev_panels.line_plot_panel(title, values, description=description, size=size)
            elif kind == "bar":
                panel = ev_panels.bar_plot_panel(title, values, description=description, size=size,
                                                 stacked=bool(p.get("stacked", False)))
            elif kind == "counter":
                panel = ev_panels.counter_panel(title, values, description=description, size=size,
                                                aggregation=p.get("aggregation", "last"))
            else:
                panel = ev_panels.text_panel(title, description=description, size=size)
            tab = str(p.get("tab", default_tab))
            panel.id = uuid.uuid5(_ID_NAMESPACE, f"{project_id}/panel/{tab}/{title}/{len(panels)}")
            panels.append(panel)
            tabs.setdefault(tab, []).append(panel.id)
    tab_models = [DashboardTabModel(id=uuid.uuid5(_ID_NAMESPACE, f"{project_id}/tab/{t}"), title=t, panels=ids)
                  for t, ids in tabs.items()]
    return DashboardModel(tabs=tab_models, panels=panels)


# --------------------------------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------------------------------


def _snapshot_window(snapshot: Snapshot) -> str:
    key = snapshot.to_snapshot_model().metadata.get(WINDOW_KEY)
    if key is None:
        raise ValueError("publish expects snapshots made by window_snapshot (metadata lacks window_start)")
    return str(key)


def _snapshot_buckets(metadata: Mapping) -> List[int]:
    raw = str(metadata.get("buckets", "") or "")
    return [int(b) for b in raw.split(",") if b.strip()]


def publish(workspace_dir: str | Path, project_name: str, snapshots: list, dashboard_spec_path: str | Path) -> str:
    """Create or reuse the project named project_name in a local Workspace at workspace_dir, add every
    snapshot (ws.add_run; a window already in the project is replaced, so re-running the monitor stage
    does not duplicate points), and rebuild the dashboard from dashboard_spec_path for the buckets of all
    the project's runs. Returns the project id."""
    spec = load_dashboard_spec(dashboard_spec_path)  # fail before touching the workspace
    Path(workspace_dir).mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace_dir))
    found = sorted(ws.search_project(project_name), key=lambda p: str(p.id))
    if found:
        project = found[0]
    else:
        project = ws.create_project(project_name, description=spec.get("project_description"))
    project_id = project.id

    stored: Dict[str, List[Any]] = {}
    window_buckets: Dict[str, set] = {}
    for run_id in ws.list_runs(project_id):
        run = ws.get_run(project_id, run_id)
        if run is None:
            continue
        window = str(run.metadata.get(WINDOW_KEY))
        stored.setdefault(window, []).append(run_id)
        window_buckets.setdefault(window, set()).update(_snapshot_buckets(run.metadata))

    latest: Dict[str, Snapshot] = {}
    for snapshot in snapshots:
        latest[_snapshot_window(snapshot)] = snapshot  # the last snapshot of a window wins
    for window, snapshot in sorted(latest.items()):
        for run_id in stored.pop(window, []):
            ws.delete_run(project_id, run_id)
        ws.add_run(project_id, snapshot)
        window_buckets[window] = set(_snapshot_buckets(snapshot.to_snapshot_model().metadata))
    buckets = set().union(*window_buckets.values()) if window_buckets else set()
    ws.save_dashboard(project_id, build_dashboard(spec, buckets, project_id))
    return str(project_id)
