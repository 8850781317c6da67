"""The custom Evidently metrics of a monitor window's snapshot.

* ``BucketTablePreset`` — custom SingleValue metrics that *copy* the monitor stage's per-bucket numbers
  (the bucket table is handed to the report as the additional dataset ``bucket_table``; nothing is
  recomputed here): ``BucketPositivity(bucket, kind)`` for every kind in ``BUCKET_KINDS``,
  ``BucketVolume(bucket)``, ``BucketAlert(bucket)`` (0/1), ``AlertedBucketsCount()`` and
  ``NotAlertingBucketsCount()``. Missing values (e.g. ``observed`` before any label matured) are stored
  as NaN and show as gaps.
* ``OnCallCounter(counter)`` — copies of the alerting-bucket count and the drifted-columns count/share for
  the dashboard's counter panels only: Evidently 0.7.23's counter panel prints a value of 0 as "no value"
  (it tests the number's truthiness), so these store 0 as ``COUNTER_ZERO`` (1e-9, printed "0" since the
  counter rounds to 2 decimals). Every other metric stores exact values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import pandas as pd
from evidently import Dataset
from evidently.core.container import MetricContainer, MetricOrContainer
from evidently.core.metric_types import MetricId, SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.core.report import Context
from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import CounterData, WidgetSize, counter, table_data
from evidently.metrics import DriftedColumnsCount

BucketKind = Literal["predicted", "observed", "naive", "estimated", "estimated_lo", "estimated_hi"]
BUCKET_KINDS: tuple[str, ...] = get_args(BucketKind)

#: Name of the additional dataset (the window's bucket table) that the bucket metrics read.
BUCKET_TABLE = "bucket_table"
#: Columns whose distribution is compared with the reference (the champion's holdout).
DRIFT_COLUMNS = ("score", "uncertainty", "bucket", "category", "log_price")
#: What an OnCallCounter stores for 0: Evidently 0.7.23's counter panel shows a falsy value (0) as
#: "no value" and rounds any other to 2 decimals, so 1e-9 is shown as "0".
COUNTER_ZERO = 1e-9
#: OnCallCounter(counter=...) values.
COUNTERS = ("alerting_buckets", "drifted_columns_share", "drifted_columns_count")


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


def _alerting_buckets(context: Context) -> tuple[int, int]:
    """(alerting, not alerting) buckets of the window."""
    alerts = pd.to_numeric(_bucket_table(context)["alert"], errors="coerce").fillna(0)
    alerting = int((alerts != 0).sum())
    return alerting, len(alerts) - alerting


class AlertedBucketsCountCalculation(SingleValueCalculation[AlertedBucketsCount]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        return _without_widget(self.result(_alerting_buckets(context)[0]))

    def display_name(self) -> str:
        return "Alerting buckets"


class NotAlertingBucketsCount(SingleValueMetric):
    """Number of buckets of the window that do not alert (within tolerance, or too small to judge)."""


class NotAlertingBucketsCountCalculation(SingleValueCalculation[NotAlertingBucketsCount]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        return _without_widget(self.result(_alerting_buckets(context)[1]))

    def display_name(self) -> str:
        return "Buckets not alerting"


def drift_columns(current: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """The DRIFT_COLUMNS with values on both sides (an all-NaN column cannot be compared)."""
    return [
        c
        for c in DRIFT_COLUMNS
        if c in current.columns
        and c in reference.columns
        and current[c].notna().any()
        and reference[c].notna().any()
    ]


class OnCallCounter(SingleValueMetric):
    """A number shown by a counter panel of the dashboard (``counter`` in COUNTERS): the alerting-bucket
    count, or the drifted-columns share/count of DataDriftPreset (``method``/``threshold`` as there).
    Stored exactly, except 0 -> COUNTER_ZERO (see there); NaN when the window has no drift columns."""

    counter: str
    method: str | None = None
    threshold: float | None = None


class OnCallCounterCalculation(SingleValueCalculation[OnCallCounter]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> SingleValue:
        counter = self.metric.counter
        if counter == "alerting_buckets":
            value: float = _alerting_buckets(context)[0]
        elif counter in ("drifted_columns_share", "drifted_columns_count"):
            value = self._drifted(context, current_data, reference_data, counter.rsplit("_", 1)[-1])
        else:
            raise ValueError(f"OnCallCounter: unknown counter {counter!r} (one of {COUNTERS})")
        return _without_widget(self.result(COUNTER_ZERO if value == 0 else value))

    def _drifted(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None, which: str
    ) -> float:
        if reference_data is None:
            return math.nan
        columns = drift_columns(current_data.as_dataframe(), reference_data.as_dataframe())
        if not columns:
            return math.nan
        # the DriftedColumnsCount of DataDriftPreset (same parameters: computed once, reused)
        drifted = DriftedColumnsCount(
            columns=columns, method=self.metric.method, threshold=self.metric.threshold
        )
        result = context.calculate_metric(drifted.to_calculation())
        return float(getattr(result, which).value)

    def display_name(self) -> str:
        return f"On-call counter: {self.metric.counter.replace('_', ' ')}"


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

    def generate_metrics(self, context: Context) -> Sequence[MetricOrContainer]:
        metrics: list = []
        for bucket in self.buckets:
            metrics += [BucketPositivity(bucket=bucket, kind=kind) for kind in BUCKET_KINDS]
            metrics += [BucketVolume(bucket=bucket), BucketAlert(bucket=bucket)]
        return [*metrics, AlertedBucketsCount(), NotAlertingBucketsCount()]

    def render(
        self,
        context: Context,
        child_widgets: list[tuple[MetricId | None, list[BaseWidgetInfo]]] | None = None,
    ) -> list[BaseWidgetInfo]:
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
