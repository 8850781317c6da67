"""Per-bucket thresholds fitted jointly by DP, against brute force and the
single global threshold."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from nextbuy.domain.decisions import (
    Thresholds,
    candidate_thresholds,
    fit_bucket_thresholds,
    fit_global_threshold,
    pr_curve_table,
    precision_recall,
)

TOL = 1e-9


@st.composite
def problems(draw, max_rows=40, max_buckets=3):
    n = draw(st.integers(1, max_rows))
    n_buckets = draw(st.integers(1, max_buckets))
    # Scores from a small grid so ties between rows and candidates happen.
    score = np.array(draw(st.lists(st.integers(0, 10), min_size=n, max_size=n)), dtype=np.float64) / 10
    label = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int8)
    bucket = np.array(draw(st.lists(st.integers(0, n_buckets - 1), min_size=n, max_size=n)), dtype=np.int64)
    target = draw(st.sampled_from([0.1, 0.25, 0.3, 0.5, 2 / 3, 0.75, 0.9]))
    n_candidates = draw(st.integers(2, 5))
    return score, bucket, label, n_buckets, target, n_candidates


def counts(decisions, label):
    tp = int(np.sum(decisions & (label == 1)))
    return tp, int(np.sum(decisions)) - tp


def meets(tp, fp, target):
    return (1 - target) * tp - target * fp >= -TOL


@settings(max_examples=150, deadline=None)
@given(problems())
def test_dp_equals_brute_force(problem):
    score, bucket, label, n_buckets, target, n_candidates = problem
    fitted = fit_bucket_thresholds(score, bucket, label, n_buckets, target, n_candidates)
    tp, fp = counts(fitted.decide(score, bucket), label)
    assert meets(tp, fp, target)

    best = (0, 0)  # (TP, -FP) of the best feasible combination; accept-none is feasible
    for combo in itertools.product(*candidate_thresholds(score, bucket, n_buckets, n_candidates)):
        d = score >= np.asarray(combo)[bucket]
        c_tp, c_fp = counts(d, label)
        if meets(c_tp, c_fp, target):
            best = max(best, (c_tp, -c_fp))
    assert (tp, -fp) == best
    # Every chosen threshold comes from the bucket's candidate set.
    for k, cands in enumerate(candidate_thresholds(score, bucket, n_buckets, n_candidates)):
        assert fitted.thresholds[k] in cands


@settings(max_examples=100, deadline=None)
@given(problems(max_rows=200, max_buckets=4))
def test_joint_meets_target_and_beats_global(problem):
    score, bucket, label, n_buckets, target, n_candidates = problem
    fitted = fit_bucket_thresholds(score, bucket, label, n_buckets, target, n_candidates)
    joint = fitted.decide(score, bucket)
    tp, fp = counts(joint, label)
    assert meets(tp, fp, target)
    t_global = fit_global_threshold(score, label, target, n_candidates)
    g_tp, g_fp = counts(score >= t_global, label)
    assert meets(g_tp, g_fp, target)
    assert tp >= g_tp


def simulate(n: int, seed: int):
    """3 uncertainty buckets; at equal score, more uncertain pairs convert less."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0.01, 0.99, n)
    bucket = rng.integers(0, 3, n)
    p = expit(logit(score) - 1.5 * bucket)
    return score, bucket, (rng.random(n) < p).astype(np.int8)


def test_per_bucket_thresholds_give_more_recall_at_same_precision():
    score, bucket, label = simulate(20_000, seed=0)
    target = 0.6
    fitted = fit_bucket_thresholds(score, bucket, label, 3, target, n_candidates=200)
    t_global = fit_global_threshold(score, label, target, n_candidates=200)
    joint = precision_recall(fitted.decide(score, bucket), label)
    glob = precision_recall(score >= t_global, label)
    assert joint["precision"] >= target - TOL and glob["precision"] >= target - TOL
    assert joint["recall"] > glob["recall"] + 0.03
    # The worse-converting buckets get stricter thresholds.
    assert fitted.thresholds[0] < fitted.thresholds[1] < fitted.thresholds[2]
    # And it holds on fresh traffic, up to sampling noise.
    s2, b2, y2 = simulate(20_000, seed=1)
    joint2 = precision_recall(fitted.decide(s2, b2), y2)
    glob2 = precision_recall(s2 >= t_global, y2)
    assert joint2["precision"] > target - 0.04
    assert joint2["recall"] > glob2["recall"] + 0.02


def test_infeasible_target_accepts_nothing():
    rng = np.random.default_rng(1)
    score = rng.uniform(size=500)
    bucket = rng.integers(0, 3, 500)
    label = (score < 0.1).astype(np.int8)  # the score ranks every positive last
    fitted = fit_bucket_thresholds(score, bucket, label, 3, 0.95, n_candidates=50)
    assert np.all(np.isposinf(fitted.thresholds))
    assert not fitted.decide(score, bucket).any()
    assert fit_global_threshold(score, label, 0.95, n_candidates=50) == np.inf
    # No positives at all, and an empty bucket, and no rows at all.
    zeros = np.zeros(500, dtype=np.int8)
    assert np.all(np.isposinf(fit_bucket_thresholds(score, bucket, zeros, 4, 0.3, 50).thresholds))
    empty = fit_bucket_thresholds(
        np.array([]), np.array([], dtype=np.int64), np.array([], dtype=np.int8), 2, 0.3, 10
    )
    assert np.all(np.isposinf(empty.thresholds))
    assert fit_global_threshold(np.array([]), np.array([]), 0.3, 10) == np.inf


def test_json_round_trip_with_inf():
    t = Thresholds(thresholds=np.array([0.2, np.inf, 0.71]), target_precision=0.3)
    text = json.dumps(t.to_dict(), allow_nan=False)  # strict JSON: no Infinity token
    back = Thresholds.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.thresholds, t.thresholds)
    assert back.target_precision == 0.3
    assert Thresholds.from_dict({"thresholds": ["inf", 0.5], "target_precision": 0.4}).thresholds[0] == np.inf
    d = back.decide(np.array([0.5, 0.99, 0.7, 0.71]), np.array([0, 1, 2, 2]))
    assert list(d) == [True, False, False, True]
    with pytest.raises(ValueError):
        back.decide(np.array([0.5]), np.array([3]))


def test_precision_recall_with_soft_labels_and_weights():
    d = np.array([True, True, False, False])
    y = np.array([1, 0, 1, 0])
    r = precision_recall(d, y)
    assert r == {"precision": 0.5, "recall": 0.5, "accepted": 2.0, "positives": 2.0, "true_positives": 1.0}
    # Expected eventual labels (delay-corrected evaluation).
    soft = np.array([1.0, 0.5, 0.25, 0.0])
    r = precision_recall(d, soft)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == pytest.approx(1.5 / 1.75)
    r = precision_recall(d, y, weight=np.array([1.0, 3.0, 2.0, 1.0]))
    assert r["precision"] == pytest.approx(0.25) and r["recall"] == pytest.approx(1 / 3)
    none = precision_recall(np.zeros(4, dtype=bool), y)
    assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["accepted"] == 0.0


def test_pr_curve_table():
    score, _, label = simulate(5_000, seed=2)
    table = pr_curve_table(score, label, max_points=100)
    assert list(table.columns) == ["precision", "recall", "threshold"]
    assert 2 <= len(table) <= 100
    assert np.all(np.diff(table["threshold"]) > 0)
    assert np.all(np.diff(table["recall"]) <= 0)
    assert table["recall"].iloc[0] == pytest.approx(1.0)
    assert pr_curve_table(score, np.zeros_like(label)).empty
