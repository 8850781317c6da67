"""Uncertainty buckets and per-bucket calibration."""

from __future__ import annotations

import json

import numpy as np
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
    reliability_table,
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
    assert edges.shape == (3,) and np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges, [0.25, 0.5, 0.75], atol=0.02)
    counts = np.bincount(assign_buckets(u, edges), minlength=4)
    assert counts.min() > 0.24 * u.size and counts.max() < 0.26 * u.size
    # Bucket 0 is the least uncertain.
    b = assign_buckets(np.array([0.0, 0.4, 0.99]), edges)
    assert b.dtype == np.int64 and list(b) == [0, 1, 3]


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
    assert counts.size == edges.size + 1 and np.all(counts > 0)


def test_per_bucket_beats_global_calibration():
    s_fit, u_fit, y_fit = simulate(20_000, seed=1)
    s_new, u_new, y_new = simulate(20_000, seed=2)
    cal = fit_bucket_calibration(s_fit, u_fit, y_fit, n_buckets=4, min_bucket_size=50)
    assert cal.n_buckets == 4 and not any(cal.used_global)
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
        assert np.all(np.diff(pred) >= 0) and pred.min() >= 0 and pred.max() <= 1
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
    assert list(t["bin"]) == [0, 1, 9] and list(t["count"]) == [2, 1, 2]
    np.testing.assert_allclose(t["observed_rate"], [0.5, 0.0, 1.0])
    # ECE = sum_bins count/n * |mean_p - rate|
    want = (2 * abs(0.05 - 0.5) + 1 * 0.15 + 2 * abs(0.975 - 1.0)) / 5
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(want)

    tb = reliability_table(p, y, n_bins=10, bucket=np.array([0, 1, 0, 1, 1]))
    assert list(tb.columns) == ["bucket", "bin", "mean_predicted", "observed_rate", "count"]
    assert tb["count"].sum() == 5 and set(tb["bucket"]) == {0, 1}

    rng = np.random.default_rng(6)
    q = rng.uniform(size=50_000)
    assert expected_calibration_error(q, rng.random(q.size) < q) < 0.01
    assert expected_calibration_error(q, rng.random(q.size) < q**2) > 0.1
