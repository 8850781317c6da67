"""Evidently 0.7 snapshots of the monitor stage's windows: one snapshot (an Evidently "run") per window.

* ``BucketTablePreset`` — custom SingleValue metrics that *copy* the monitor stage's per-bucket numbers
  (the bucket table is handed to the report as the additional dataset ``bucket_table``; nothing is
  recomputed here): ``BucketPositivity(bucket, kind)`` for every kind in ``BUCKET_KINDS``,
  ``BucketVolume(bucket)``, ``BucketAlert(bucket)`` (0/1) and ``AlertedBucketsCount()``. Missing
  values (e.g. ``observed`` before any label matured) are stored as NaN and show as gaps.
* ``DataDriftPreset`` over score, uncertainty, bucket (categorical: bucket-share drift), category and
  log_price against the champion's holdout scores, with one fixed method (PSI, drift at >= 0.1) so a
  window's drift value means the same thing whatever its size: ``ValueDrift(column)`` per column and
  ``DriftedColumnsCount`` (count and share of drifted columns).

``window_snapshot`` builds a window's snapshot; ``snapshot_bucket_values`` / ``snapshot_alert_count`` read
the numbers back from a snapshot or a stored run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.container import MetricContainer
from evidently.core.metric_types import Metric, SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.core.report import Context, Snapshot
from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import CounterData, WidgetSize, counter, table_data
from evidently.presets import DataDriftPreset
from evidently.pydantic_utils import LOADED_TYPE_ALIASES, TYPE_ALIASES

BucketKind = Literal["predicted", "observed", "naive", "estimated", "estimated_lo", "estimated_hi"]
BUCKET_KINDS: tuple[str, ...] = get_args(BucketKind)

#: Name of the additional dataset (the window's bucket table) that the bucket metrics read.
BUCKET_TABLE = "bucket_table"
#: Snapshot metadata key that identifies a window; a project holds one run per value.
WINDOW_KEY = "window_start"
#: Columns whose distribution is compared with the reference (the champion's holdout).
DRIFT_COLUMNS = ("score", "uncertainty", "bucket", "category", "log_price")
DRIFT_METHOD = "psi"
DRIFT_THRESHOLD = 0.1

ROW_COLUMNS = {  # column -> dtype of the rows handed to window_snapshot
    "score": "float64",
    "uncertainty": "float64",
    "bucket": "int64",
    "prob_calibrated": "float64",
    "category": "int64",
    "log_price": "float64",
    "label_observed": "int64",
    "expected_label": "float64",
}
NUMERICAL_ROW_COLUMNS = ["score", "uncertainty", "prob_calibrated", "log_price", "expected_label"]
CATEGORICAL_ROW_COLUMNS = ["bucket", "category", "label_observed"]
TABLE_COLUMNS = ("bucket", "volume", *BUCKET_KINDS, "alert")
#: Evidently's prefix of metric type names (PanelMetric adds it to a bare name).
METRIC_TYPE_PREFIX = "evidently:metric_v2:"


def is_metric_type(name: str) -> bool:
    """Whether name ("ValueDrift" or "evidently:metric_v2:ValueDrift") is a registered Evidently metric type
    (built-in or custom, such as the bucket metrics below)."""
    alias = name if name.startswith(METRIC_TYPE_PREFIX) else METRIC_TYPE_PREFIX + name
    return any(base is Metric and a == alias for base, a in (*TYPE_ALIASES, *LOADED_TYPE_ALIASES))


# --------------------------------------------------------------------------------------------------
# Custom metrics: values copied from the window's bucket table
# --------------------------------------------------------------------------------------------------


def _bucket_table(context: Context) -> pd.DataFrame:
    dataset = context.additional_data.get(BUCKET_TABLE)
    if dataset is None:
        raise ValueError(
            f"bucket metrics need the bucket table as additional_data[{BUCKET_TABLE!r}] of Report.run"
        )
    return dataset.as_dataframe()


def _bucket_value(context: Context, bucket: int, column: str) -> float:
    table = _bucket_table(context)
    row = table.loc[table["bucket"] == bucket]
    if row.empty:
        return math.nan
    value = row[column].iloc[0]
    return math.nan if pd.isna(value) else float(value)


def _without_widget(result: SingleValue) -> SingleValue:
    result.widget = []  # BucketTablePreset renders the whole table once
    return result


class BucketPositivity(SingleValueMetric):
    """Positivity of one uncertainty bucket in one window, as computed by the monitor stage."""

    bucket: int
    kind: str  # one of BUCKET_KINDS


class BucketPositivityCalculation(SingleValueCalculation[BucketPositivity]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        return _without_widget(self.result(_bucket_value(context, self.metric.bucket, self.metric.kind)))

    def display_name(self) -> str:
        return f"Bucket {self.metric.bucket} {self.metric.kind} positivity"


class BucketVolume(SingleValueMetric):
    """Number of scored impressions of one bucket in one window."""

    bucket: int


class BucketVolumeCalculation(SingleValueCalculation[BucketVolume]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        return _without_widget(self.result(_bucket_value(context, self.metric.bucket, "volume")))

    def display_name(self) -> str:
        return f"Bucket {self.metric.bucket} volume"


class BucketAlert(SingleValueMetric):
    """1 when the monitor stage raised an alert for this bucket in this window, else 0."""

    bucket: int


class BucketAlertCalculation(SingleValueCalculation[BucketAlert]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        value = _bucket_value(context, self.metric.bucket, "alert")
        return _without_widget(self.result(0 if math.isnan(value) else int(value)))

    def display_name(self) -> str:
        return f"Bucket {self.metric.bucket} alert"


class AlertedBucketsCount(SingleValueMetric):
    """Number of buckets alerting in the window (the on-call counter)."""


class AlertedBucketsCountCalculation(SingleValueCalculation[AlertedBucketsCount]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        alerts = pd.to_numeric(_bucket_table(context)["alert"], errors="coerce").fillna(0)
        return _without_widget(self.result(int((alerts != 0).sum())))

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

    buckets: list[int]

    def __init__(self, buckets: Sequence[int], include_tests: bool = False):
        self.buckets = [int(b) for b in buckets]
        super().__init__(include_tests=include_tests)

    def generate_metrics(self, context: Context):
        metrics: list = []
        for bucket in self.buckets:
            metrics += [BucketPositivity(bucket=bucket, kind=kind) for kind in BUCKET_KINDS]
            metrics += [BucketVolume(bucket=bucket), BucketAlert(bucket=bucket)]
        return [*metrics, AlertedBucketsCount()]

    def render(self, context: Context, child_widgets=None) -> list[BaseWidgetInfo]:
        table = _bucket_table(context)
        n_alerts = int(context.get_metric_result(AlertedBucketsCount()).value)
        rows = [
            [
                _fmt(int(r["bucket"])),
                _fmt(int(r["volume"])) if pd.notna(r["volume"]) else "—",
                *[_fmt(float(r[k])) for k in BUCKET_KINDS],
                "ALERT" if r["alert"] else "",
            ]
            for _, r in table.sort_values("bucket").iterrows()
        ]
        return [
            counter(
                title="Alerting buckets in this window",
                size=WidgetSize.FULL,
                counters=[
                    CounterData(label="buckets alerting", value=str(n_alerts)),
                    CounterData(label="buckets", value=str(len(table))),
                ],
            ),
            table_data(
                title="Positivity per uncertainty bucket (from the monitor stage)",
                column_names=["bucket", "volume", *BUCKET_KINDS, "alert"],
                data=rows,
            ),
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
        raise ValueError(
            f"bucket_table must hold one row per bucket of the window, got buckets {table['bucket'].tolist()}"
        )
    table["bucket"] = table["bucket"].astype("int64")
    for column in ("volume", *BUCKET_KINDS):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    table["alert"] = table["alert"].map(lambda a: 0 if pd.isna(a) else int(bool(a))).astype("int64")
    return table.sort_values("bucket").reset_index(drop=True)


def _rows_definition(frame: pd.DataFrame) -> DataDefinition:
    return DataDefinition(
        numerical_columns=[c for c in NUMERICAL_ROW_COLUMNS if c in frame.columns],
        categorical_columns=[c for c in CATEGORICAL_ROW_COLUMNS if c in frame.columns],
    )


def _datasets(table: pd.DataFrame, current: pd.DataFrame, reference: pd.DataFrame) -> tuple[Dataset, ...]:
    """(bucket table, current rows, reference rows) as Evidently datasets."""
    table_definition = DataDefinition(
        numerical_columns=["volume", *BUCKET_KINDS], categorical_columns=["bucket", "alert"]
    )
    # column stats of an all-NaN column (observed before any label matured, log_price without prices)
    # divide 0/0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            Dataset.from_pandas(table, data_definition=table_definition),
            Dataset.from_pandas(current, data_definition=_rows_definition(current)),
            Dataset.from_pandas(reference, data_definition=_rows_definition(reference)),
        )


def _window_metrics(
    table: pd.DataFrame,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    drift_method: str,
    drift_threshold: float,
) -> list:
    metrics: list = [BucketTablePreset(buckets=table["bucket"].tolist())]
    drift_columns = [c for c in DRIFT_COLUMNS if current[c].notna().any() and reference[c].notna().any()]
    if drift_columns:
        metrics.append(
            DataDriftPreset(
                columns=drift_columns, method=drift_method, threshold=drift_threshold, include_tests=False
            )
        )
    return metrics


def window_snapshot(
    window_rows: pd.DataFrame,
    reference_rows: pd.DataFrame,
    bucket_table: pd.DataFrame,
    window_start: pd.Timestamp,
    tags: list[str],
    *,
    drift_method: str = DRIFT_METHOD,
    drift_threshold: float = DRIFT_THRESHOLD,
) -> Snapshot:
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
    table_dataset, current_dataset, reference_dataset = _datasets(table, current, reference)
    return Report(_window_metrics(table, current, reference, drift_method, drift_threshold)).run(
        current_dataset,
        reference_dataset,
        additional_data={BUCKET_TABLE: table_dataset},
        timestamp=ts.to_pydatetime(),
        tags=[str(t) for t in tags],
        metadata={
            WINDOW_KEY: ts.isoformat(),
            "rows": str(len(current)),
            "buckets": ",".join(str(b) for b in table["bucket"]),
        },
        name=f"window {ts:%Y-%m-%d %H:%M}",
    )


# --------------------------------------------------------------------------------------------------
# Reading a snapshot back
# --------------------------------------------------------------------------------------------------

#: Bucket-table column that a custom metric type stores (BucketPositivity: its `kind` param).
_TABLE_COLUMN_OF_METRIC = {"BucketVolume": "volume", "BucketAlert": "alert"}


def _metric_type(result: SingleValue) -> str:
    return str(result.get_metric_value_location().metric.params.get("type", "")).split(":")[-1]


def _table_column(metric_type: str, params: dict[str, Any]) -> str | None:
    if metric_type == "BucketPositivity":
        return params["kind"]
    return _TABLE_COLUMN_OF_METRIC.get(metric_type)


def snapshot_bucket_values(snapshot) -> pd.DataFrame:
    """The bucket table stored in a snapshot (a Snapshot, or the SnapshotModel that Workspace.get_run
    returns): one row per bucket with volume, the BUCKET_KINDS and alert, read back from the custom
    metrics."""
    rows: dict[int, dict[str, float]] = {}
    for result in snapshot.metric_results.values():
        if not isinstance(result, SingleValue):
            continue
        params = result.get_metric_value_location().metric.params
        column = _table_column(_metric_type(result), params)
        if column is None:
            continue
        value = result.value
        rows.setdefault(int(params["bucket"]), {})[column] = math.nan if value is None else float(value)
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("bucket").reset_index()
    frame = frame.reindex(columns=list(TABLE_COLUMNS))
    return frame.sort_values("bucket").reset_index(drop=True)


def snapshot_alert_count(snapshot) -> int | None:
    """The AlertedBucketsCount stored in a snapshot (Snapshot or SnapshotModel); None if absent."""
    for result in snapshot.metric_results.values():
        if isinstance(result, SingleValue) and _metric_type(result) == "AlertedBucketsCount":
            return int(result.value)
    return None
