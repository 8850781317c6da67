"""Evidently 0.7 snapshots of the monitor stage's windows: one snapshot (an Evidently "run") per window.

* ``BucketTablePreset`` and ``OnCallCounter`` (``custom_metrics``): the monitor stage's per-bucket
  numbers and the on-call counters, copied into the snapshot.
* ``DataDriftPreset`` over score, uncertainty, bucket (categorical: bucket-share drift), category and
  log_price against the champion's holdout scores, with one fixed method (PSI, drift at >= 0.1) so a
  window's drift value means the same thing whatever its size: ``ValueDrift(column)`` per column and
  ``DriftedColumnsCount`` (count and share of drifted columns).

Every snapshot belongs to one pipeline *run* (champion version + traffic span, ``run_name``): its
metadata ``run`` and tag ``run:<run>`` let the dashboard draw only the current run.

``window_snapshot`` builds a window's snapshot; ``snapshot_bucket_values`` / ``snapshot_alert_count`` read
the numbers back from a snapshot or a stored run.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.metric_types import Metric, SingleValue
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset
from evidently.pydantic_utils import LOADED_TYPE_ALIASES, TYPE_ALIASES

from nextbuy.mlops.dashboards.custom_metrics import (
    BUCKET_KINDS,
    BUCKET_TABLE,
    COUNTERS,
    DRIFT_COLUMNS,
    BucketTablePreset,
    OnCallCounter,
    drift_columns,
)

if TYPE_CHECKING:
    from evidently.core.serialization import SnapshotModel

__all__ = [
    "DRIFT_METHOD",
    "DRIFT_THRESHOLD",
    "RUN_KEY",
    "RUN_TAG_PREFIX",
    "TABLE_COLUMNS",
    "WINDOW_KEY",
    "is_metric_type",
    "run_name",
    "snapshot_alert_count",
    "snapshot_bucket_values",
    "window_snapshot",
]

#: Snapshot metadata key that identifies a window within a run.
WINDOW_KEY = "window_start"
#: Snapshot metadata key of the pipeline run (champion version + traffic span) the window belongs to;
#: the dashboard filters on it, and re-publishing a run replaces all its snapshots.
RUN_KEY = "run"
#: Prefix of the run tag every snapshot carries (shown in the UI's tooltips and report list).
RUN_TAG_PREFIX = "run:"
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


def run_name(model_name: str, version: Any, traffic_start: Any, traffic_end: Any) -> str:
    """The id of a pipeline run as on-call reads it: "nextbuy v3, traffic 2026-02-26..2026-03-26".
    A run = the champion that scored the traffic + the traffic's span; times other than midnight keep
    their hour and minute, so two runs on the same day stay apart."""

    def stamp(value: Any) -> str:
        ts = _window_timestamp(value)
        return f"{ts:%Y-%m-%d}" if ts == ts.normalize() else f"{ts:%Y-%m-%d %H:%M}"

    return f"{model_name} v{version}, traffic {stamp(traffic_start)}..{stamp(traffic_end)}"


def is_metric_type(name: str) -> bool:
    """Whether name ("ValueDrift" or "evidently:metric_v2:ValueDrift") is a registered Evidently metric type
    (built-in or custom, such as the bucket metrics of ``custom_metrics``)."""
    alias = name if name.startswith(METRIC_TYPE_PREFIX) else METRIC_TYPE_PREFIX + name
    return any(base is Metric and a == alias for base, a in (*TYPE_ALIASES, *LOADED_TYPE_ALIASES))


# --------------------------------------------------------------------------------------------------
# One window -> one snapshot
# --------------------------------------------------------------------------------------------------


def _window_timestamp(window_start: str | datetime | np.datetime64) -> pd.Timestamp:
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
    columns = drift_columns(current, reference)
    if columns:
        metrics.append(
            DataDriftPreset(
                columns=columns, method=drift_method, threshold=drift_threshold, include_tests=False
            )
        )
    # after the preset: the drift counters reuse its DriftedColumnsCount (NaN without drift columns)
    metrics.append(OnCallCounter(counter="alerting_buckets"))
    metrics += [
        OnCallCounter(counter=c, method=drift_method, threshold=drift_threshold) for c in COUNTERS[1:]
    ]
    return metrics


def window_snapshot(
    window_rows: pd.DataFrame,
    reference_rows: pd.DataFrame,
    bucket_table: pd.DataFrame,
    window_start: pd.Timestamp,
    tags: list[str],
    *,
    run: str,
    drift_method: str = DRIFT_METHOD,
    drift_threshold: float = DRIFT_THRESHOLD,
) -> Snapshot:
    """One Evidently Report run (a snapshot) for one window of the pipeline run ``run`` (``run_name``),
    timestamp = window_start; tagged ``run:<run>`` plus ``tags``, metadata ``run`` and ``window_start``.

    window_rows / reference_rows: score, uncertainty, bucket, prob_calibrated, category, log_price,
    label_observed, expected_label (extra columns are ignored). reference_rows = the champion's scores
    on the training-time holdout. bucket_table: this window's rows (bucket, volume, predicted, observed,
    naive, estimated, estimated_lo, estimated_hi, alert); its values are stored as they are.
    A drift column that is all-NaN on either side (e.g. log_price for a real source without prices)
    is left out of the drift metrics of that window rather than failing it.
    """
    if not str(run).strip():
        raise ValueError("window_snapshot needs the run it belongs to (run_name: champion + traffic span)")
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
        tags=[RUN_TAG_PREFIX + str(run), *(str(t) for t in tags)],
        metadata={
            RUN_KEY: str(run),
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


def snapshot_bucket_values(snapshot: Snapshot | SnapshotModel) -> pd.DataFrame:
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


def snapshot_alert_count(snapshot: Snapshot | SnapshotModel) -> int | None:
    """The AlertedBucketsCount stored in a snapshot (Snapshot or SnapshotModel); None if absent."""
    for result in snapshot.metric_results.values():
        if isinstance(result, SingleValue) and _metric_type(result) == "AlertedBucketsCount":
            return int(result.value)
    return None
