"""Delay-aware positivity monitoring per uncertainty bucket (pure).

Recent traffic has immature labels: conversions seen so far undercount the
eventual ones, so a naive positivity rate falls every day and would page
someone for nothing. The estimate here adds, for every not-yet-converted
impression, its probability of still converting (the delay model's p_flip),
and an alert fires only when the confidence interval of that estimate leaves
the tolerance band around what the model predicted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from nextbuy.config import MonitorConfig
from nextbuy.domain.timeunits import DAY


def window_index(shown_at: pd.Series, start: pd.Timestamp, window_days: float) -> np.ndarray:
    return np.floor(((shown_at - start) / DAY).to_numpy() / window_days).astype(np.int64)


def _rate_ci(rate: pd.Series, n: pd.Series, z: float) -> tuple[pd.Series, pd.Series]:
    se = np.sqrt(rate * (1.0 - rate) / n.clip(lower=1))
    return (rate - z * se).clip(lower=0.0), (rate + z * se).clip(upper=1.0)


def _outside(lo: pd.Series, hi: pd.Series, predicted: pd.Series, tolerance: np.ndarray) -> pd.Series:
    return (hi < predicted * (1.0 - tolerance)) | (lo > predicted * (1.0 + tolerance))


def bucket_positivity(rows: pd.DataFrame, cfg: MonitorConfig) -> pd.DataFrame:
    """Per (window, bucket): volume, predicted, observed on matured rows, naive, delay-corrected
    estimate with CI, and the alert flags (delay-aware and, for comparison, naive).

    ``rows`` columns: window, bucket, prob_calibrated, label_observed, expected_label, elapsed_days.
    """
    z = float(norm.ppf(0.5 + cfg.confidence / 2.0))
    matured = rows["elapsed_days"] >= cfg.maturity_days
    grouped = rows.assign(matured_label=rows["label_observed"].where(matured), matured=matured).groupby(
        ["window", "bucket"]
    )
    table = grouped.agg(
        volume=("prob_calibrated", "size"),
        predicted=("prob_calibrated", "mean"),
        observed=("matured_label", "mean"),
        matured_volume=("matured", "sum"),
        naive=("label_observed", "mean"),
        estimated=("expected_label", "mean"),
        min_elapsed_days=("elapsed_days", "min"),
    ).reset_index()
    table["estimated_lo"], table["estimated_hi"] = _rate_ci(table["estimated"], table["volume"], z)
    table["naive_lo"], table["naive_hi"] = _rate_ci(table["naive"], table["volume"], z)
    enough = table["volume"] >= cfg.min_volume
    tolerance = cfg.tolerance(table["bucket"].to_numpy())
    table["alert"] = enough & _outside(
        table["estimated_lo"], table["estimated_hi"], table["predicted"], tolerance
    )
    table["naive_alert"] = enough & _outside(
        table["naive_lo"], table["naive_hi"], table["predicted"], tolerance
    )
    table["matured_volume"] = table["matured_volume"].astype(np.int64)
    table["volume"] = table["volume"].astype(np.int64)
    return table


def alerts(table: pd.DataFrame, start: pd.Timestamp, window_days: float) -> list[dict]:
    """One readable record per alerting (window, bucket)."""
    hits = table[table["alert"]]
    return [
        {
            "window": int(r.window),
            "window_start": str(start + r.window * window_days * DAY),
            "bucket": int(r.bucket),
            "predicted": float(r.predicted),
            "estimated": float(r.estimated),
            "ci": [float(r.estimated_lo), float(r.estimated_hi)],
            "volume": int(r.volume),
            "message": (
                f"bucket {int(r.bucket)}: delay-corrected positivity {r.estimated:.2%} "
                f"[{r.estimated_lo:.2%}, {r.estimated_hi:.2%}] vs predicted {r.predicted:.2%}"
            ),
        }
        for r in hits.itertuples()
    ]
