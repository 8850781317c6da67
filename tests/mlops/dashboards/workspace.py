"""Synthetic monitor windows, their snapshots and a filled workspace, shared by the dashboard tests.

Two pipeline runs: RUN (the current one, March 2024, last published) and OTHER_RUN (another champion on
later traffic, November 2024, published before it): the dashboard must draw RUN only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from nextbuy.mlops.dashboards.metrics import TABLE_COLUMNS, run_name, window_snapshot
from nextbuy.mlops.dashboards.publish import publish

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD_SPEC = ROOT / "monitoring" / "dashboard.yaml"
PROJECT = "nextbuy-monitor-test"
N_WINDOWS = 5
N_BUCKETS = 3
START = pd.Timestamp("2024-03-01")
RUN = run_name("nextbuy", 3, START, START + pd.Timedelta(days=N_WINDOWS))
#: Another run: later traffic (so it would be the "latest window" if it leaked into the dashboard),
#: alerting in its last window, no drift.
OTHER_START = pd.Timestamp("2024-11-20")
OTHER_RUN = run_name("nextbuy", 2, OTHER_START, OTHER_START + pd.Timedelta(days=N_WINDOWS))
#: The current run's only alert (bucket N_BUCKETS - 1), before its last window: its latest count is 0.
ALERT_DAY = N_WINDOWS - 3


def make_rows(
    rng: np.random.Generator, n: int, score_shift: float = 0.0, log_price: bool = True
) -> pd.DataFrame:
    uncertainty = rng.gamma(2.0, 0.1, n)
    prob = 1.0 / (1.0 + np.exp(-rng.normal(-2.0 + score_shift, 1.0, n)))
    return pd.DataFrame(
        {
            "score": rng.normal(score_shift, 1.0, n),
            "uncertainty": uncertainty,
            "bucket": np.digitize(uncertainty, [0.15, 0.3]).astype(int),
            "prob_calibrated": prob,
            "category": rng.integers(0, 8, n),
            "log_price": np.where(rng.random(n) < 0.05, np.nan, rng.normal(3.0, 1.0, n))
            if log_price
            else np.nan,
            "label_observed": (rng.random(n) < prob).astype(int),
            "expected_label": prob,
        }
    )


def make_bucket_table(
    rows: pd.DataFrame, day: int, n_days: int, alert_day: int | None = None
) -> pd.DataFrame:
    """Shaped like the monitor stage's table; the last two windows have no matured labels (observed NaN).
    The last bucket alerts on alert_day (default: the last window)."""
    alert_day = n_days - 1 if alert_day is None else alert_day
    out = []
    for bucket in range(N_BUCKETS):
        b = rows[rows["bucket"] == bucket]
        predicted = float(b["prob_calibrated"].mean())
        estimated = predicted * (1.0 + 0.1 * bucket * day / n_days)
        half_width = 1.96 * math.sqrt(estimated * (1 - estimated) / max(len(b), 1))
        out.append(
            {
                "bucket": bucket,
                "volume": float(len(b)),
                "predicted": predicted,
                "observed": float(b["label_observed"].mean()) if day < n_days - 2 else np.nan,
                "naive": float(b["label_observed"].mean()) * (1.0 - 0.15 * day / n_days),
                "estimated": estimated,
                "estimated_lo": estimated - half_width,
                "estimated_hi": estimated + half_width,
                "alert": bool(bucket == N_BUCKETS - 1 and day == alert_day),
            }
        )
    return pd.DataFrame(out)


def make_windows(
    n_windows: int = N_WINDOWS,
    seed: int = 0,
    start: pd.Timestamp = START,
    alert_day: int | None = None,
    score_shift_per_day: float = 0.12,
):
    """(reference_rows, [(window_start, window_rows, bucket_table)]) with score drift growing over time."""
    rng = np.random.default_rng(seed)
    reference = make_rows(rng, 2000)
    windows = []
    for day in range(n_windows):
        rows = make_rows(rng, 800, score_shift=score_shift_per_day * day)
        table = make_bucket_table(rows, day, n_windows, alert_day)
        windows.append((start + pd.Timedelta(days=day), rows, table))
    return reference, windows


def make_snapshots(reference, windows, run: str = RUN):
    return [
        window_snapshot(
            rows, reference, table.assign(window_start=start), start, [f"window:{start:%Y-%m-%d}"], run=run
        )
        for start, rows, table in windows
    ]


def fill_workspace(workspace: Path, project: str = PROJECT) -> tuple[str, list]:
    """A workspace holding OTHER_RUN, then RUN published over it (N_WINDOWS windows each; RUN's latest
    window has no alert, OTHER_RUN's has one); returns (project id, RUN's windows)."""
    other_reference, other_windows = make_windows(seed=1, start=OTHER_START, score_shift_per_day=0.0)
    publish(workspace, project, make_snapshots(other_reference, other_windows, OTHER_RUN), DASHBOARD_SPEC)
    reference, windows = make_windows(alert_day=ALERT_DAY)
    project_id = publish(workspace, project, make_snapshots(reference, windows, RUN), DASHBOARD_SPEC)
    return project_id, windows


def expected_panel_titles(buckets, run: str | None = RUN) -> list[str]:
    """Titles straight from dashboard.yaml: 'per bucket' panels once per bucket, "{run}" filled (unless
    run is None)."""
    spec = yaml.safe_load(DASHBOARD_SPEC.read_text())
    titles = []
    for panel in spec["panels"]:
        title = panel["title"] if run is None else panel["title"].replace("{run}", run)
        if panel.get("per_bucket"):
            titles += [title.replace("{bucket}", str(b)) for b in buckets]
        else:
            titles.append(title)
    return titles


def assert_table_equal(stored: pd.DataFrame, table: pd.DataFrame) -> None:
    expected = table[list(TABLE_COLUMNS)].astype({"alert": float})
    expected = expected.sort_values("bucket").reset_index(drop=True)
    assert stored["bucket"].tolist() == expected["bucket"].tolist()
    for column in TABLE_COLUMNS[1:]:
        np.testing.assert_allclose(
            stored[column].to_numpy(float),
            expected[column].to_numpy(float),
            rtol=0,
            atol=0,
            equal_nan=True,
            err_msg=column,
        )
