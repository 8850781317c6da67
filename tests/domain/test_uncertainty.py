"""Uncertainty buckets, per-bucket calibration, and what the uncertainty measures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression

from nextbuy.domain.uncertainty import (
    BucketCalibration,
    assign_buckets,
    bucket_edges,
    expected_calibration_error,
    fit_bucket_calibration,
    in_degree_band_labels,
    positivity_by_score_band,
    reliability_table,
    uncertainty_by_history,
    uncertainty_coefficient,
)


def simulate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At equal score, more uncertain pairs convert less."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0.02, 0.98, n)
    unc = rng.uniform(0.0, 1.0, n)
    p = expit(logit(score) - 3.0 * unc)
    return score, unc, (rng.random(n) < p).astype(np.int8)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def global_isotonic(score, label):
    return IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(score, label)


def test_bucket_edges_quantiles():
    u = np.random.default_rng(0).uniform(size=10_000)
    edges = bucket_edges(u, 4)
    assert edges.shape == (3,)
    assert np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges, [0.25, 0.5, 0.75], atol=0.02)
    counts = np.bincount(assign_buckets(u, edges), minlength=4)
    assert counts.min() > 0.24 * u.size
    assert counts.max() < 0.26 * u.size
    # Bucket 0 is the least uncertain.
    b = assign_buckets(np.array([0.0, 0.4, 0.99]), edges)
    assert b.dtype == np.int64
    assert list(b) == [0, 1, 3]


def test_degenerate_uncertainty():
    same = np.full(100, 0.3)
    assert bucket_edges(same, 5).size == 0
    assert np.all(assign_buckets(same, bucket_edges(same, 5)) == 0)
    assert bucket_edges(np.array([]), 3).size == 0
    assert bucket_edges(np.arange(10.0), 1).size == 0
    # 80% ties at zero: cannot support 5 buckets, gets fewer, none empty.
    u = np.concatenate([np.zeros(80), np.linspace(0.1, 1, 20)])
    edges = bucket_edges(u, 5)
    assert 1 <= edges.size < 4
    assert np.all(np.bincount(assign_buckets(u, edges)) > 0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=60).map(lambda v: np.array(v, dtype=np.float64) / 3),
    st.integers(1, 8),
)
def test_bucket_edges_properties(u, n_buckets):
    edges = bucket_edges(u, n_buckets)
    assert np.all(np.diff(edges) > 0)
    assert edges.size <= min(n_buckets - 1, np.unique(u).size - 1)
    counts = np.bincount(assign_buckets(u, edges), minlength=edges.size + 1)
    assert counts.size == edges.size + 1
    assert np.all(counts > 0)


def test_per_bucket_beats_global_calibration():
    s_fit, u_fit, y_fit = simulate(20_000, seed=1)
    s_new, u_new, y_new = simulate(20_000, seed=2)
    cal = fit_bucket_calibration(s_fit, u_fit, y_fit, n_buckets=4, min_bucket_size=50)
    assert cal.n_buckets == 4
    assert not any(cal.used_global)
    per_bucket = cal.predict(s_new, u_new)
    glob = global_isotonic(s_fit, y_fit).predict(s_new)
    assert log_loss(per_bucket, y_new) < log_loss(glob, y_new) - 0.01
    # The global map is miscalibrated within each bucket; per-bucket is not.
    b = cal.bucket(u_new)
    ece_bucket = [expected_calibration_error(per_bucket[b == k], y_new[b == k]) for k in range(4)]
    ece_global = [expected_calibration_error(glob[b == k], y_new[b == k]) for k in range(4)]
    assert max(ece_bucket) < 0.04
    assert max(ece_global) > 0.08
    assert np.mean(ece_bucket) < np.mean(ece_global)


def test_monotone_in_score_within_bucket_and_matches_sklearn():
    s, u, y = simulate(5_000, seed=3)
    cal = fit_bucket_calibration(s, u, y, n_buckets=3, min_bucket_size=50)
    grid = np.linspace(-0.5, 1.5, 501)  # beyond the data range: clipped
    b = cal.bucket(u)
    for k in range(cal.n_buckets):
        u_k = np.full_like(grid, np.median(u[b == k]))
        pred = cal.predict(grid, u_k)
        assert np.all(np.diff(pred) >= 0)
        assert pred.min() >= 0
        assert pred.max() <= 1
        # np.interp on the knots reproduces sklearn's predict (serving needs no sklearn).
        iso = global_isotonic(s[b == k], y[b == k])
        np.testing.assert_allclose(pred, iso.predict(grid), atol=1e-12)
    # Higher uncertainty, same score: lower calibrated probability.
    mid = np.full(3, 0.6)
    per_bucket = cal.predict(mid, np.array([np.median(u[b == k]) for k in range(3)]))
    assert per_bucket[0] > per_bucket[1] > per_bucket[2]


def test_small_buckets_fall_back_to_global():
    s, u, y = simulate(300, seed=4)
    cal = fit_bucket_calibration(s, u, y, n_buckets=3, min_bucket_size=1_000)
    assert cal.used_global == (True, True, True)
    np.testing.assert_allclose(cal.predict(s, u), global_isotonic(s, y).predict(s), atol=1e-12)
    # Only the big bucket gets its own map.
    u2 = np.where(np.arange(300) < 250, 0.0, np.linspace(1, 2, 300))
    cal2 = fit_bucket_calibration(s, u2, y, n_buckets=2, min_bucket_size=100)
    assert cal2.used_global == (False, True)
    # All-same uncertainty: one bucket, equal to the global fit.
    cal3 = fit_bucket_calibration(s, np.zeros(300), y, n_buckets=4, min_bucket_size=10)
    assert cal3.n_buckets == 1
    np.testing.assert_allclose(cal3.predict(s, np.zeros(300)), global_isotonic(s, y).predict(s), atol=1e-12)


def test_single_class_bucket_falls_back_and_weights_are_used():
    s = np.linspace(0, 1, 200)
    u = np.repeat([0.0, 1.0], 100)
    y = np.where(u == 0, (s > 0.2).astype(int), 0)  # bucket 1 has no positives
    cal = fit_bucket_calibration(s, u, y, n_buckets=2, min_bucket_size=10)
    assert cal.used_global == (False, True)
    # Fractional labels and sample weights are accepted (expected eventual labels).
    w = np.linspace(0.5, 2.0, 200)
    cal_w = fit_bucket_calibration(s, u, y * 0.8 + 0.1, n_buckets=2, min_bucket_size=10, sample_weight=w)
    assert np.all((cal_w.predict(s, u) >= 0.1 - 1e-12) & (cal_w.predict(s, u) <= 0.9 + 1e-12))


def test_round_trip():
    s, u, y = simulate(2_000, seed=5)
    cal = fit_bucket_calibration(s, u, y, n_buckets=3, min_bucket_size=50)
    back = BucketCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(back.edges, cal.edges)
    assert back.used_global == cal.used_global
    np.testing.assert_array_equal(back.predict(s, u), cal.predict(s, u))


def test_reliability_table_and_ece():
    p = np.array([0.05, 0.05, 0.15, 0.95, 1.0])
    y = np.array([0, 1, 0, 1, 1])
    t = reliability_table(p, y, n_bins=10)
    assert list(t.columns) == ["bin", "mean_predicted", "observed_rate", "count"]
    assert list(t["bin"]) == [0, 1, 9]
    assert list(t["count"]) == [2, 1, 2]
    np.testing.assert_allclose(t["observed_rate"], [0.5, 0.0, 1.0])
    # ECE = sum_bins count/n * |mean_p - rate|
    want = (2 * abs(0.05 - 0.5) + 1 * 0.15 + 2 * abs(0.975 - 1.0)) / 5
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(want)

    tb = reliability_table(p, y, n_bins=10, bucket=np.array([0, 1, 0, 1, 1]))
    assert list(tb.columns) == ["bucket", "bin", "mean_predicted", "observed_rate", "count"]
    assert tb["count"].sum() == 5
    assert set(tb["bucket"]) == {0, 1}

    rng = np.random.default_rng(6)
    q = rng.uniform(size=50_000)
    assert expected_calibration_error(q, rng.random(q.size) < q) < 0.01
    assert expected_calibration_error(q, rng.random(q.size) < q**2) > 0.1


# --- what the uncertainty measures ------------------------------------------------------------------


def test_uncertainty_coefficient_is_negative_when_uncertain_pairs_convert_less():
    s, u, y = simulate(5_000, seed=7)
    fit = uncertainty_coefficient(s, u, y)
    assert fit["rows"] == 5_000
    # simulate: -3 per unit of uniform uncertainty, i.e. about -3 * sd(u) = -0.87 per sd.
    assert fit["coef"] == pytest.approx(-3.0 * u.std(), abs=4 * fit["se"])
    assert fit["ci95"][0] < fit["coef"] < fit["ci95"][1] < 0
    assert fit["ci95"][1] - fit["ci95"][0] == pytest.approx(2 * 1.96 * fit["se"], rel=1e-3)


def test_uncertainty_coefficient_covers_zero_when_uncertainty_is_noise():
    rng = np.random.default_rng(8)
    s = rng.uniform(0.02, 0.98, 5_000)
    y = (rng.random(s.size) < s).astype(np.int8)
    covered = 0
    for seed in range(20):
        fit = uncertainty_coefficient(s, np.random.default_rng(100 + seed).uniform(size=s.size), y)
        covered += fit["ci95"][0] < 0 < fit["ci95"][1]
    assert covered >= 16  # a 95% interval: about 19 of 20


def test_uncertainty_coefficient_matches_an_unpenalised_fit_and_takes_fractional_labels():
    from sklearn.linear_model import LogisticRegression

    s, u, y = simulate(3_000, seed=9)
    z = (u - u.mean()) / u.std()
    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1_000).fit(np.column_stack([logit(s), z]), y)
    assert uncertainty_coefficient(s, u, y)["coef"] == pytest.approx(sk.coef_[0, 1], abs=1e-5)
    # Delay-corrected labels: an observed negative counts by its flip probability.
    fractional = np.where(y == 1, 1.0, 0.3 * np.random.default_rng(9).random(y.size))
    fit = uncertainty_coefficient(s, u, fractional)
    assert fit["ci95"][1] < 0
    assert np.isfinite(fit["se"])
    # Fractional labels equal a weighted fit of duplicated 0/1 rows (same coefficient).
    both = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    weight = np.concatenate([fractional, 1 - fractional])
    X2 = np.column_stack([np.tile(logit(s), 2), np.tile(z, 2)])
    dup = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1_000).fit(X2, both, sample_weight=weight)
    assert fit["coef"] == pytest.approx(dup.coef_[0, 1], abs=1e-5)


def test_uncertainty_coefficient_holds_when_the_scores_barely_vary():
    """A barely trained model scores every pair about the same; the coefficient of uncertainty
    at equal score is still estimable, and the same as with the scores spread out."""
    s, u, y = simulate(3_000, seed=11)
    squeezed = expit(-3.0 + 1e-4 * logit(s))  # the same order, a ten-thousandth of the spread
    wide, narrow = uncertainty_coefficient(s, u, y), uncertainty_coefficient(squeezed, u, y)
    assert narrow["coef"] == pytest.approx(wide["coef"], abs=1e-6)
    assert narrow["se"] == pytest.approx(wide["se"], rel=1e-4)


def test_uncertainty_coefficient_is_none_when_it_cannot_be_estimated():
    s, u, y = simulate(500, seed=10)
    for fit in (
        uncertainty_coefficient(s[:10], u[:10], y[:10]),  # too few rows
        uncertainty_coefficient(s, np.full(s.size, 0.4), y),  # constant uncertainty
        uncertainty_coefficient(s, u, np.zeros(s.size)),  # no conversions
        uncertainty_coefficient(s, u, (u > 0.5).astype(float)),  # uncertainty separates the labels
    ):
        assert fit["coef"] is None
        assert fit["se"] is None
        assert fit["ci95"] is None
    assert uncertainty_coefficient(s[:10], u[:10], y[:10])["rows"] == 10


def test_positivity_by_score_band_groups_within_equal_score():
    # Two score levels, and within each, uncertainty 0 or 1 with known conversion.
    score = np.repeat([0.2, 0.2, 0.6, 0.6], 100)
    unc = np.repeat([0.1, 0.9, 0.1, 0.9], 100)
    label = np.concatenate([np.arange(100) < k for k in (30, 10, 80, 40)]).astype(float)
    t = positivity_by_score_band(score, unc, label, n_score_bands=2, n_uncertainty_bins=2)
    assert list(t.columns) == [
        "score_band",
        "uncertainty_bin",
        "uncertainty",
        "positivity",
        "mean_score",
        "count",
    ]
    assert list(t["score_band"]) == ["0", "0", "1", "1"]
    assert list(t["uncertainty_bin"]) == [0, 1, 0, 1]
    np.testing.assert_allclose(t["uncertainty"], [0.1, 0.9, 0.1, 0.9])
    np.testing.assert_allclose(t["positivity"], [0.3, 0.1, 0.8, 0.4])
    np.testing.assert_allclose(t["mean_score"], [0.2, 0.2, 0.6, 0.6])
    assert list(t["count"]) == [100] * 4

    s, u, y = simulate(20_000, seed=11)
    t = positivity_by_score_band(s, u, y)
    assert t["count"].sum() == 20_000
    assert set(t["score_band"]) == {"0", "1", "2", "3"}
    for _, band in t.groupby("score_band"):
        assert len(band) == 4
        assert band["uncertainty"].is_monotonic_increasing
        assert band["mean_score"].max() - band["mean_score"].min() < 0.03  # equal score within a band
        assert band["positivity"].iloc[0] > band["positivity"].iloc[-1]


def test_uncertainty_by_history_reads_degree_and_first_seen():
    snapshot = pd.Timestamp("2026-03-31")
    day = pd.Timedelta(days=1)
    # In-degrees: product 1 has 0, product 2 has 1, product 3 has 3 (one edge without a time).
    edges = pd.DataFrame(
        {
            "src": [1, 1, 4, 5],
            "dst": [2, 3, 3, 3],
            "weight": 1.0,
            "time": [snapshot - 30 * day, snapshot - 2 * day, pd.NaT, snapshot - 20 * day],
        }
    )
    # Product 6: no edges, first shown 3 days ago (as the shown product), also 10 days ago as a source.
    # Product 7: no edges, first shown 2 days ago.
    impressions = pd.DataFrame(
        {
            "source_id": [1, 6, 2],
            "shown_id": [6, 7, 1],
            "shown_at": [snapshot - 3 * day, snapshot - 2 * day, snapshot - 1 * day],
        }
    )
    impressions = pd.concat(
        [impressions, pd.DataFrame({"source_id": [6], "shown_id": [2], "shown_at": [snapshot - 10 * day]})]
    )
    shown = np.array([1, 2, 3, 6, 7, 7])
    unc = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    out = uncertainty_by_history(shown, unc, edges, impressions, snapshot, new_days=7)
    assert in_degree_band_labels() == ["0", "1-2", "3-9", "10-49", "50+"]
    assert out["by_in_degree"] == pytest.approx(
        {"0": (0.1 + 0.4 + 0.5 + 0.7) / 4, "1-2": 0.2, "3-9": 0.3, "10-49": None, "50+": None}
    )
    assert out["rows_by_in_degree"] == {"0": 4, "1-2": 1, "3-9": 1, "10-49": 0, "50+": 0}
    # New: first seen less than 7 days before the snapshot -> only product 7 (6 was a source 10 days ago;
    # 1 and 2 have a 30-day-old edge; 3 an edge 20 days ago).
    assert out["new_rows"] == 2
    assert out["established_rows"] == 4
    assert out["new_products"] == pytest.approx(0.6)
    assert out["established_products"] == pytest.approx(0.25)
    # A longer window makes product 6 (10 days) new too; a shorter one leaves nothing new.
    assert uncertainty_by_history(shown, unc, edges, impressions, snapshot, new_days=15)["new_rows"] == 3
    short = uncertainty_by_history(shown, unc, edges, impressions, snapshot, new_days=1)
    assert short["new_rows"] == 0
    assert short["new_products"] is None
