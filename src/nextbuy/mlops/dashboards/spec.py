"""The on-call dashboard's declarative spec (monitoring/dashboard.yaml) as pydantic models.

``load_dashboard_spec`` reads and validates the file; an invalid spec raises ``DashboardSpecError`` naming
the file, the field (``panels[3].series[0].kind``) and the panel's title, so an on-call edit fails loudly
before anything is published. Turning a spec into an Evidently dashboard is ``publish.build_dashboard``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from nextbuy import yaml_io
from nextbuy.mlops.dashboards.custom_metrics import BUCKET_KINDS, BucketKind
from nextbuy.mlops.dashboards.metrics import is_metric_type

#: Friendly metric names of dashboard.yaml -> (Evidently metric type, scoped per bucket).
METRIC_ALIASES = {
    "positivity": ("BucketPositivity", True),
    "volume": ("BucketVolume", True),
    "alert": ("BucketAlert", True),
    "alerting_buckets": ("AlertedBucketsCount", False),
    "not_alerting_buckets": ("NotAlertingBucketsCount", False),
    "drift": ("ValueDrift", False),
    "drifted_columns": ("DriftedColumnsCount", False),
}
#: "{bucket}", "{kind}", ... in titles, descriptions and legends; leaves Evidently's own "{{param}}" alone.
#: "{run}" (titles and descriptions): the pipeline run the dashboard shows.
PLACEHOLDER = re.compile(r"(?<!\{)\{(bucket|kind|column|value|run)\}(?!\})")
DEFAULT_TAB = "On-call"


class DashboardSpecError(ValueError):
    """dashboard.yaml is unreadable or invalid; the message names the file and the offending fields."""


class _Spec(BaseModel):
    # numbers in YAML (a tag, a label value) are text to Evidently
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def _placeholders(text: str | None) -> set[str]:
    return {m.group(1) for m in PLACEHOLDER.finditer(text or "")}


class SeriesSpec(_Spec):
    """One series of a panel: a friendly metric (METRIC_ALIASES) or any Evidently metric type name."""

    metric: str = Field(min_length=1)
    kind: BucketKind | None = Field(default=None, validate_default=True)  # so a missing kind is checked
    column: str | None = Field(default=None, validate_default=True)
    value: Literal["share", "count"] | None = None
    bucket: int | None = None
    per_bucket: bool = False
    legend: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in METRIC_ALIASES and not is_metric_type(metric):
            raise ValueError(
                f"unknown metric {metric!r}: use one of {sorted(METRIC_ALIASES)} "
                "or an Evidently metric type name (with `labels`)"
            )
        return metric

    @field_validator("kind")
    @classmethod
    def _positivity_needs_kind(cls, kind: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("metric") == "positivity" and kind is None:
            raise ValueError(f"positivity needs kind in {BUCKET_KINDS}")
        return kind

    @field_validator("column")
    @classmethod
    def _drift_needs_column(cls, column: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("metric") == "drift" and not column:
            raise ValueError("drift needs a column")
        return column

    @property
    def metric_type(self) -> str:
        return METRIC_ALIASES.get(self.metric, (self.metric, False))[0]

    @property
    def bucket_scoped(self) -> bool:
        return METRIC_ALIASES.get(self.metric, (self.metric, False))[1]

    @property
    def value_type(self) -> str:
        """drifted_columns: which of the metric's two values (share by default)."""
        return self.value or "share"

    def legend_fields(self, panel_per_bucket: bool) -> set[str]:
        """The placeholders a legend of this series can fill."""
        fields = {name for name in ("kind", "column", "value") if getattr(self, name) is not None}
        if self.bucket_scoped and (self.bucket is not None or self.per_bucket or panel_per_bucket):
            fields.add("bucket")
        return fields


class PanelSpec(_Spec):
    """One panel; ``per_bucket`` repeats it for each uncertainty bucket ("{bucket}" in title/description)."""

    title: str = Field(min_length=1)
    description: str | None = None
    type: Literal["line", "bar", "counter", "text"] = "line"
    size: Literal["full", "half"] = "full"
    per_bucket: bool = False
    series: list[SeriesSpec] = Field(default_factory=list, validate_default=True)
    aggregation: Literal["last", "sum", "avg"] = "last"  # the values the Evidently UI knows
    stacked: bool = False
    tab: str | None = None

    @field_validator("series")
    @classmethod
    def _plots_need_series(cls, series: list[SeriesSpec], info: ValidationInfo) -> list[SeriesSpec]:
        if info.data.get("type", "line") != "text" and not series:
            raise ValueError("needs a non-empty 'series' list (only text panels have none)")
        return series

    @model_validator(mode="after")
    def _placeholders_can_be_filled(self) -> PanelSpec:
        # an unfilled placeholder would show as "{bucket}" on the dashboard
        panel_fields = {"run", "bucket"} if self.per_bucket else {"run"}
        for name in ("title", "description"):
            unfilled = _placeholders(getattr(self, name)) - panel_fields
            if unfilled:
                raise ValueError(
                    f"{name}: placeholders {sorted(unfilled)} are never filled "
                    "(a title or description may use {run}, and {bucket} in a per_bucket panel)"
                )
        for j, s in enumerate(self.series):
            unfilled = _placeholders(s.legend) - s.legend_fields(self.per_bucket)
            if unfilled:
                raise ValueError(
                    f"series[{j}].legend: placeholders {sorted(unfilled)} are never filled "
                    "(use {{bucket}} for the series Evidently draws per bucket)"
                )
        return self


class DashboardSpec(_Spec):
    project_description: str | None = None
    tab: str = DEFAULT_TAB  # of panels without their own
    panels: list[PanelSpec] = Field(min_length=1)


def _field_path(loc: Sequence[Any], raw: Any) -> str:
    """('panels', 3, 'series', 0, 'kind') -> "panels[3].series[0].kind (panel 'Bucket {bucket}: ...')"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    try:
        title = raw["panels"][loc[1]]["title"] if loc[:1] == ("panels",) and len(loc) > 1 else None
    except (KeyError, IndexError, TypeError):
        title = None
    path = path or "(top level)"
    return f"{path} (panel {title!r})" if title else path


def _allowed_keys(loc: Sequence[Any]) -> list[str]:
    parent = loc[-3] if len(loc) >= 3 else None  # ('panels', 0, 'series', 1, 'colour') -> 'series'
    models: dict[Any, type[BaseModel]] = {"panels": PanelSpec, "series": SeriesSpec}
    model = models.get(parent, DashboardSpec)
    return sorted(model.model_fields)


def _describe(error: ErrorDetails, raw: Any) -> str:
    if error["type"] == "extra_forbidden":
        message = f"unknown keys are not allowed (allowed: {_allowed_keys(error['loc'])})"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return f"  {_field_path(error['loc'], raw)}: {message}"


def load_dashboard_spec(path: str | Path) -> DashboardSpec:
    """Read and validate dashboard.yaml; DashboardSpecError names the file and every offending field."""
    try:
        raw = yaml_io.load(Path(path).read_text(), str(path)) or {}
    except yaml_io.DocumentError as err:  # the file, line and column: not valid YAML there
        raise DashboardSpecError(f"not valid YAML: {err}") from err
    try:
        return DashboardSpec.model_validate(raw)
    except ValidationError as err:
        lines = [_describe(e, raw) for e in err.errors(include_url=False)]
        raise DashboardSpecError(f"{path}: invalid dashboard spec\n" + "\n".join(lines)) from err
