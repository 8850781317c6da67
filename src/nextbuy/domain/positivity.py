"""Delay-aware positivity monitoring per uncertainty bucket (pure).

Recent traffic has immature labels: conversions seen so far undercount the
eventual ones, so a naive positivity rate falls every day and would page
someone for nothing. The estimate here asks the delay model how many
conversions should have been seen by now, and scales its eventual-conversion
estimate by how many were. For row i the delay model (fitted on the training
log, with the engagement seen so far) gives q_i = P(converts eventually) and
F_i = P(delay <= elapsed); if the window's conversion probabilities are c times
the model's, the conversions seen so far count about Y ~ Poisson(c * sum q_i F_i). With a
Gamma(k, k) prior on c (``prior_conversions`` = k: a weak pull to "as the
model expects"), c | Y ~ Gamma(k + Y, k + sum q_i F_i), and the window's
eventual positivity is c * mean(q_i), with the CI from c's quantiles.

Why not simply add each unconverted row's flip probability (the label_delay
stage's soft label)? That trusts engagement to reveal every change, and when
most carts are abandoned it does not: after a drop in conversion, carts still
come and look as promising as before, so such an estimate stays where the
model was and never alerts. Scaling by the conversions actually seen catches
the drop as labels mature; for a fresh window sum q_i F_i is small, the CI is
wide, and until the model expects ``min_seen_share`` of the window's conversions
seen it is not judged. An alert fires only when the CI leaves the tolerance
band around what the model predicted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import gamma, norm

from nextbuy.config import MonitorConfig
from nextbuy.domain.timeunits import DAY


def window_index(shown_at: pd.Series, start: pd.Timestamp, window_days: float) -> np.ndarray:
    return np.floor(((shown_at - start) / DAY).to_numpy() / window_days).astype(np.int64)


def _rate_ci(rate: pd.Series, n: pd.Series, z: float) -> tuple[pd.Series, pd.Series]:
    se = np.sqrt(rate * (1.0 - rate) / n.clip(lower=1))
    return (rate - z * se).clip(lower=0.0), (rate + z * se).clip(upper=1.0)


def _outside(lo: pd.Series, hi: pd.Series, predicted: pd.Series, tolerance: np.ndarray) -> pd.Series:
    return (hi < predicted * (1.0 - tolerance)) | (lo > predicted * (1.0 + tolerance))


def _corrected_ci(table: pd.DataFrame, prior: float, confidence: float) -> tuple[pd.Series, ...]:
    """Estimate and CI of eventual positivity from conversions seen vs expected (module doc)."""
    shape = table["seen"] + prior
    rate = table["expected_seen"] + prior
    tail = (1.0 - confidence) / 2.0
    ratio = shape / rate
    lo = gamma.ppf(tail, shape, scale=1.0 / rate)
    hi = gamma.ppf(1.0 - tail, shape, scale=1.0 / rate)
    eventual = table["expected_eventual"]
    return ratio * eventual, (lo * eventual).clip(upper=1.0), (hi * eventual).clip(upper=1.0)


# The per-(window, bucket) sums and means every engine aggregates; ``judged`` does the rest.
WINDOW_SUMS = (
    "volume",
    "predicted",
    "observed",
    "matured_volume",
    "naive",
    "seen",
    "expected_seen",
    "expected_eventual",
    "min_elapsed_days",
)


def window_sums(rows: pd.DataFrame, maturity_days: float) -> pd.DataFrame:
    """Per (window, bucket), sorted by both: volume, mean predicted, mean observed label of the
    matured rows (NaN without one), matured volume, naive rate, conversions seen, the delay
    model's expected seen conversions (sum) and eventual rate (mean), the youngest row's age.

    ``rows`` columns: window, bucket, prob_calibrated, label_observed, elapsed_days, and the
    delay model's expected_eventual (q) and expected_seen (q F) of each row."""
    matured = rows["elapsed_days"] >= maturity_days
    grouped = rows.assign(matured_label=rows["label_observed"].where(matured), matured=matured).groupby(
        ["window", "bucket"]
    )
    return grouped.agg(
        volume=("prob_calibrated", "size"),
        predicted=("prob_calibrated", "mean"),
        observed=("matured_label", "mean"),
        matured_volume=("matured", "sum"),
        naive=("label_observed", "mean"),
        seen=("label_observed", "sum"),
        expected_seen=("expected_seen", "sum"),
        expected_eventual=("expected_eventual", "mean"),
        min_elapsed_days=("elapsed_days", "min"),
    ).reset_index()


def bucket_positivity(rows: pd.DataFrame, cfg: MonitorConfig) -> pd.DataFrame:
    """Per (window, bucket): volume, predicted, observed on matured rows, naive, delay-corrected
    estimate with CI, and the alert flags (delay-aware and, for comparison, naive)
    (:func:`window_sums`, then :func:`judged`)."""
    return judged(window_sums(rows, cfg.maturity_days), cfg)


def judged(table: pd.DataFrame, cfg: MonitorConfig) -> pd.DataFrame:
    """:func:`window_sums`' table with the delay-corrected estimate, its CI and the alerts."""
    z = float(norm.ppf(0.5 + cfg.confidence / 2.0))
    table = table.copy()
    table["estimated"], table["estimated_lo"], table["estimated_hi"] = _corrected_ci(
        table, cfg.prior_conversions, cfg.confidence
    )
    # Judged only once the delay model expects a fair share of the window's conversions seen:
    # before that the estimate leans on the early tail of the delay, its least certain part.
    seen_share = table["expected_seen"] / (table["expected_eventual"] * table["volume"]).clip(lower=1e-12)
    enough = (table["volume"] >= cfg.min_volume) & (seen_share >= cfg.min_seen_share)
    table = table.drop(columns=["seen", "expected_seen", "expected_eventual"])
    table["naive_lo"], table["naive_hi"] = _rate_ci(table["naive"], table["volume"], z)
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
