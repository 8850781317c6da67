"""dashboard.yaml as pydantic models: the repo's spec loads; a broken edit fails naming the file and field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nextbuy.mlops.dashboards.spec import DashboardSpec, DashboardSpecError, load_dashboard_spec
from tests.mlops.dashboards.workspace import DASHBOARD_SPEC


def _load(tmp_path, text: str) -> DashboardSpec:
    path = tmp_path / "dashboard.yaml"
    path.write_text(text)
    return load_dashboard_spec(path)


def _error(tmp_path, text: str) -> str:
    with pytest.raises(DashboardSpecError) as info:
        _load(tmp_path, text)
    assert str(tmp_path / "dashboard.yaml") in str(info.value)  # names the file
    return str(info.value)


def test_repo_spec_loads():
    spec = load_dashboard_spec(DASHBOARD_SPEC)
    assert isinstance(spec, DashboardSpec)
    assert spec.tab == "On-call"
    assert spec.project_description
    assert [p.type for p in spec.panels[:4]] == ["text", "counter", "counter", "bar"]
    assert "{run}" in spec.panels[0].title  # on-call sees which run the dashboard draws
    assert any(p.per_bucket for p in spec.panels)


def test_defaults(tmp_path):
    spec = _load(tmp_path, "panels:\n  - title: x\n    series: [{metric: drifted_columns}]\n")
    panel = spec.panels[0]
    assert (spec.tab, panel.type, panel.size, panel.aggregation, panel.stacked, panel.tab) == (
        "On-call",
        "line",
        "full",
        "last",
        False,
        None,
    )
    assert panel.series[0].value_type == "share"
    assert panel.series[0].metric_type == "DriftedColumnsCount"


def test_dashboard_spec_errors_are_loud(tmp_path):
    bad = tmp_path / "dashboard.yaml"
    bad.write_text(
        "panels:\n  - title: x\n    type: line\n    series:\n      - {metric: positivity, kind: nope}\n"
    )
    with pytest.raises(DashboardSpecError, match="kind"):
        load_dashboard_spec(bad)
    bad.write_text("panels:\n  - title: x\n    colour: red\n    series: [{metric: volume}]\n")
    with pytest.raises(DashboardSpecError, match="unknown keys"):
        load_dashboard_spec(bad)


def test_error_is_a_value_error_wrapping_pydantics(tmp_path):
    with pytest.raises(ValueError, match="invalid dashboard spec") as info:
        _load(tmp_path, "panels: []\n")
    assert isinstance(info.value, DashboardSpecError)
    assert isinstance(info.value.__cause__, ValidationError)
    assert "panels" in str(info.value)


def test_bad_panel_type(tmp_path):
    message = _error(tmp_path, "panels:\n  - title: Drift\n    type: pie\n    series: [{metric: volume}]\n")
    assert "panels[0].type (panel 'Drift')" in message
    assert "'line', 'bar', 'counter' or 'text'" in message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("panels:\n  - title: x\n    colour: red\n    series: [{metric: volume}]\n", "panels[0].colour"),
        (
            "panels:\n  - title: x\n    series: [{metric: volume, colour: red}]\n",
            "panels[0].series[0].colour",
        ),
        ("colour: red\npanels:\n  - {title: x, type: text}\n", "colour"),
    ],
)
def test_unknown_key(tmp_path, text, field):
    message = _error(tmp_path, text)
    assert f"{field}" in message
    assert "unknown keys" in message


def test_unknown_metric(tmp_path):
    message = _error(tmp_path, "panels:\n  - title: x\n    series: [{metric: positivty, kind: observed}]\n")
    assert "panels[0].series[0].metric (panel 'x')" in message
    assert "unknown metric 'positivty'" in message


def test_raw_evidently_metric_is_accepted(tmp_path):
    spec = _load(tmp_path, "panels:\n  - title: x\n    series: [{metric: RowCount, labels: {a: 1}}]\n")
    assert spec.panels[0].series[0].metric_type == "RowCount"
    assert spec.panels[0].series[0].labels == {"a": "1"}


@pytest.mark.parametrize(
    ("series", "field", "words"),
    [
        ("{metric: positivity}", "series[0].kind", "positivity needs kind"),
        ("{metric: positivity, kind: nope}", "series[0].kind", "'estimated_hi'"),
        ("{metric: drift}", "series[0].column", "drift needs a column"),
        ("{metric: drifted_columns, value: pct}", "series[0].value", "'share' or 'count'"),
        ("{metric: volume, legend: 'bucket {bucket}'}", "series[0].legend", "never filled"),
        ("{metric: drift, column: score, legend: '{kind}'}", "series[0].legend", "never filled"),
        ("{metric: alerting_buckets, legend: '{run}'}", "series[0].legend", "never filled"),
    ],
)
def test_series_rules(tmp_path, series, field, words):
    message = _error(tmp_path, f"panels:\n  - title: x\n    series: [{series}]\n")
    assert field in message
    assert words in message


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("panels: []\n", "panels", "at least 1 item"),
        ("tab: x\n", "panels", "Field required"),
        ("panels:\n  - {type: text}\n", "panels[0].title", "Field required"),
        ("panels:\n  - {title: '', type: text}\n", "panels[0].title", "at least 1 character"),
        ("panels:\n  - {title: x}\n", "panels[0].series", "non-empty 'series'"),
        ("panels:\n  - {title: x, type: text, size: big}\n", "panels[0].size", "'full' or 'half'"),
        (
            "panels:\n  - {title: x, aggregation: max, series: [{metric: volume}]}\n",
            "panels[0].aggregation",
            "'avg'",
        ),
        ("panels:\n  - {title: 'b {bucket}', type: text}\n", "panels[0]", "title: placeholders ['bucket']"),
        ("panels:\n  - [1]\n", "panels[0]", "valid dictionary"),
        ("", "panels", "Field required"),
    ],
)
def test_panel_rules(tmp_path, text, field, words):
    message = _error(tmp_path, text)
    assert field in message
    assert words in message


def test_placeholders_filled_where_a_bucket_is_known(tmp_path):
    spec = _load(
        tmp_path,
        """
panels:
  - {title: "Run {run}", type: text, description: "only {run}"}
  - title: "Bucket {bucket} of {run}"
    description: "all of bucket {bucket}"
    per_bucket: true
    series:
      - {metric: positivity, kind: observed, legend: "{kind} {bucket}"}
  - title: x
    series:
      - {metric: volume, per_bucket: true, legend: "bucket {bucket}"}
      - {metric: volume, bucket: 2, legend: "bucket {bucket}"}
      - {metric: volume, legend: "bucket {{bucket}}"}
      - {metric: drifted_columns, value: count, legend: "{value}"}
""",
    )
    assert len(spec.panels) == 3


def test_invalid_yaml_names_the_file(tmp_path):
    assert "not valid YAML" in _error(tmp_path, "panels: [\n")
