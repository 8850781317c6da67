"""Per-bucket thresholds fitted jointly by DP, against brute force over every cut
point and the single global threshold on the same cut points."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from nextbuy.config import ThresholdsConfig
from nextbuy.domain.decisions import (
    Thresholds,
    cross_fitted_bucket_thresholds,
    cut_points,
    fit_bucket_thresholds,
    fit_global_threshold,
    pr_curve_table,
    precision_recall,
)
from nextbuy.domain.decisions.crossfit import _folds

TOL = 1e-9


@st.composite
def problems(draw, max_rows=40, max_buckets=3):
    n = draw(st.integers(1, max_rows))
    n_buckets = draw(st.integers(1, max_buckets))
    # Scores from a small grid so ties between rows and cut points happen.
    score = np.array(draw(st.lists(st.integers(0, 10), min_size=n, max_size=n)), dtype=np.float64) / 10
    label = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int8)
    bucket = np.array(draw(st.lists(st.integers(0, n_buckets - 1), min_size=n, max_size=n)), dtype=np.int64)
    target = draw(st.sampled_from([0.1, 0.25, 0.3, 0.5, 2 / 3, 0.75, 0.9]))
    n_candidates = draw(st.sampled_from([None, 2, 3, 5]))
    min_positives = draw(st.integers(0, 4))
    return score, bucket, label, n_buckets, target, n_candidates, min_positives


def counts(decisions, label):
    tp = int(np.sum(decisions & (label == 1)))
    return tp, int(np.sum(decisions)) - tp


def meets(tp, fp, target):
    return (1 - target) * tp - target * fp >= -TOL


def brute_cuts(score, n_candidates):
    """Cut points by definition: every distinct score, or the capped quantile grid."""
    if n_candidates is None or np.unique(score).size <= n_candidates:
        return np.unique(score)
    return np.unique(np.quantile(score, np.linspace(0, 1, n_candidates), method="inverted_cdf"))


def brute_single(score, label, target, cuts, min_support):
    """(TP, FP, feasible) of the best single cut, by enumeration."""
    points = [counts(score >= c, label) for c in cuts]
    ok = [(tp, -fp) for tp, fp in points if tp >= max(1, min_support) and meets(tp, fp, target)]
    if ok:
        tp, neg_fp = max(ok)
        return tp, -neg_fp, True
    if not points or max(tp + fp for tp, fp in points) == 0:
        return 0, 0, False
    floor = min(max(1, min_support), max(tp + fp for tp, fp in points))
    tp, fp = max(
        ((tp, fp) for tp, fp in points if tp + fp >= floor), key=lambda c: (c[0] / (c[0] + c[1]), c[0])
    )
    return (tp, fp, False) if tp > 0 else (0, 0, False)


@settings(max_examples=150, deadline=None)
@given(problems())
def test_dp_equals_brute_force_over_every_cut_point(problem):
    score, bucket, label, n_buckets, target, n_candidates, min_positives = problem
    fitted = fit_bucket_thresholds(score, bucket, label, n_buckets, target, n_candidates, min_positives)
    single = fitted.single
    s_tp, s_fp, s_ok = brute_single(score, label, target, brute_cuts(score, n_candidates), min_positives)
    assert counts(score >= single.threshold, label) == (s_tp, s_fp)
    assert single.feasible == s_ok

    # Per bucket: +inf and every distinct score of the bucket (exact) or the shared grid (capped);
    # a bucket below the support floor has one choice, the single threshold.
    options = []
    for k in range(n_buckets):
        in_k = bucket == k
        positives = int(label[in_k].sum())
        assert fitted.positives[k] == positives
        assert fitted.rows[k] == int(in_k.sum())
        assert fitted.fallback[k] == (positives < min_positives)
        if positives < min_positives:
            cuts = [single.threshold]
        elif n_candidates is None:
            cuts = [np.inf, *np.unique(score[in_k])]
        else:
            cuts = [np.inf, *brute_cuts(score, n_candidates)]
        options.append([counts(score[in_k] >= c, label[in_k]) for c in cuts])
    best = None
    for combo in itertools.product(*options):
        tp, fp = sum(c[0] for c in combo), sum(c[1] for c in combo)
        if tp >= max(1, min_positives) and meets(tp, fp, target):
            best = max(best or (tp, -fp), (tp, -fp))

    tp, fp = counts(fitted.thresholds.decide(score, bucket), label)
    if best is None:  # infeasible: the single threshold's most precise point everywhere
        assert not fitted.feasible
        assert np.all(fitted.thresholds.thresholds == single.threshold)
    else:
        assert fitted.feasible
        assert meets(tp, fp, target)
        assert (tp, -fp) == best
        assert s_ok <= fitted.feasible
        assert not s_ok or tp >= s_tp


@settings(max_examples=100, deadline=None)
@given(problems(max_rows=60))
def test_both_policies_choose_among_the_same_cut_points(problem):
    """The single threshold is never given a coarser grid than the per-bucket policy:
    every threshold of both lies on one shared grid, and the single threshold is the best
    "same cut in every bucket" on it."""
    score, bucket, label, n_buckets, target, n_candidates, min_positives = problem
    grid = cut_points(score, n_candidates)
    np.testing.assert_array_equal(grid, brute_cuts(score, n_candidates))
    fitted = fit_bucket_thresholds(score, bucket, label, n_buckets, target, n_candidates, min_positives)
    on_grid = set(grid) | {np.inf}
    assert fitted.single.threshold in on_grid
    assert all(t in on_grid for t in fitted.thresholds.thresholds)
    # One bucket: the per-bucket policy IS the single threshold (same grid, same optimum).
    alone = fit_bucket_thresholds(score, np.zeros_like(bucket), label, 1, target, n_candidates, 0)
    assert counts(alone.thresholds.decide(score, np.zeros_like(bucket)), label) == counts(
        score >= alone.single.threshold, label
    )


def test_exact_grid_is_every_distinct_score_and_a_cap_only_coarsens_both():
    score = np.array([0.3, 0.1, 0.3, 0.7, 0.5, 0.9, 0.2])
    np.testing.assert_array_equal(cut_points(score, None), [0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    np.testing.assert_array_equal(cut_points(score, 10), cut_points(score, None))  # cap not reached
    capped = cut_points(score, 3)
    assert set(capped) <= set(score)
    assert capped.size == 3
    assert capped[0] == 0.1
    assert capped[-1] == 0.9
    # With a cap, a bucket is offered no cut point the single threshold is not offered.
    rng = np.random.default_rng(0)
    s = rng.uniform(size=400)
    b = rng.integers(0, 2, 400)
    y = (rng.uniform(size=400) < s).astype(np.int8)
    for n_candidates in (None, 7):
        fitted = fit_bucket_thresholds(s, b, y, 2, 0.7, n_candidates, 0)
        grid = set(cut_points(s, n_candidates))
        assert fitted.single.threshold in grid
        assert set(fitted.thresholds.thresholds) <= grid | {np.inf}


@settings(max_examples=100, deadline=None)
@given(problems(max_rows=200, max_buckets=4))
def test_joint_meets_target_and_beats_global(problem):
    score, bucket, label, n_buckets, target, n_candidates, min_positives = problem
    fitted = fit_bucket_thresholds(score, bucket, label, n_buckets, target, n_candidates, min_positives)
    tp, fp = counts(fitted.thresholds.decide(score, bucket), label)
    t_global = fit_global_threshold(score, label, target, n_candidates, min_positives)
    assert t_global == fitted.single
    g_tp, g_fp = counts(score >= t_global.threshold, label)
    if t_global.feasible:
        assert fitted.feasible
        assert meets(g_tp, g_fp, target)
        assert g_tp >= max(1, min_positives)
    if fitted.feasible:
        assert meets(tp, fp, target)
        assert tp >= max(1, min_positives)
        assert not t_global.feasible or tp >= g_tp
    else:
        assert (tp, fp) == (g_tp, g_fp)


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
    fitted = fit_bucket_thresholds(score, bucket, label, 3, target, None, 50)
    assert fitted.feasible
    assert fitted.single.feasible
    assert not fitted.fallback.any()
    t_global = fitted.single.threshold
    joint = precision_recall(fitted.thresholds.decide(score, bucket), label)
    glob = precision_recall(score >= t_global, label)
    assert joint["precision"] >= target - TOL
    assert glob["precision"] >= target - TOL
    assert joint["recall"] > glob["recall"] + 0.03
    # The worse-converting buckets get stricter thresholds.
    t = fitted.thresholds.thresholds
    assert t[0] < t[1] < t[2]
    # And it holds on fresh traffic, up to sampling noise.
    s2, b2, y2 = simulate(20_000, seed=1)
    joint2 = precision_recall(fitted.thresholds.decide(s2, b2), y2)
    glob2 = precision_recall(s2 >= t_global, y2)
    assert joint2["precision"] > target - 0.04
    assert joint2["recall"] > glob2["recall"] + 0.02


def test_bucket_below_min_support_gets_the_single_threshold():
    score, bucket, label = simulate(6_000, seed=3)
    keep = bucket < 2
    # Bucket 2: five lucky low-score positives and nothing else -- a threshold fitted on
    # them would accept every low score of that bucket on fresh traffic.
    score = np.concatenate([score[keep], [0.05, 0.06, 0.07, 0.08, 0.09]])
    bucket = np.concatenate([bucket[keep], [2] * 5])
    label = np.concatenate([label[keep], [1] * 5]).astype(np.int8)
    target = 0.6

    loose = fit_bucket_thresholds(score, bucket, label, 3, target, None, 0)
    assert loose.thresholds.thresholds[2] == 0.05
    assert not loose.fallback.any()

    fitted = fit_bucket_thresholds(score, bucket, label, 3, target, None, 10)
    assert fitted.feasible
    assert list(fitted.fallback) == [False, False, True]
    assert fitted.thresholds.thresholds[2] == fitted.single.threshold > 0.09
    assert fitted.support()[2] == {"rows": 5, "positives": 5, "single_threshold_fallback": True}
    # The supported buckets are still fitted jointly (around the fixed bucket).
    assert fitted.thresholds.thresholds[0] < fitted.single.threshold < fitted.thresholds.thresholds[1]
    tp, fp = counts(fitted.thresholds.decide(score, bucket), label)
    assert meets(tp, fp, target)
    # An empty bucket below the floor gets the single threshold too, not "accept nothing" ...
    four = fit_bucket_thresholds(score, bucket, label, 4, target, None, 10)
    assert four.thresholds.thresholds[3] == four.single.threshold
    assert four.rows[3] == 0
    # ... while without a floor "accept nothing" (+inf) stays the DP's choice for a bucket of negatives.
    neg = (
        np.concatenate([score, [0.95, 0.96]]),
        np.concatenate([bucket, [3, 3]]),
        np.concatenate([label, [0, 0]]),
    )
    assert np.isposinf(fit_bucket_thresholds(*neg, 4, target, None, 0).thresholds.thresholds[3])


def infeasible_problem():
    """Scores i/100; positives are the even i in [50, 90), the top ten rows negatives:
    precision peaks at 0.4 (accept i >= 50), far below a 0.9 target."""
    i = np.arange(100)
    score = i / 100
    label = ((i >= 50) & (i < 90) & (i % 2 == 0)).astype(np.int8)
    return score, i % 3, label


def test_infeasible_target_returns_the_most_precise_point_flagged():
    score, bucket, label = infeasible_problem()
    fitted = fit_bucket_thresholds(score, bucket, label, 3, 0.9, None, 5)
    assert not fitted.feasible
    assert not fitted.single.feasible
    assert fitted.single.threshold == 0.5
    np.testing.assert_array_equal(fitted.thresholds.thresholds, [0.5, 0.5, 0.5])
    assert precision_recall(fitted.thresholds.decide(score, bucket), label)["precision"] == pytest.approx(0.4)
    # The most precise point must accept at least the support floor: 60 rows -> i >= 40.
    floor = fit_bucket_thresholds(score, bucket, label, 3, 0.9, None, 60)
    assert not floor.feasible
    assert floor.single.threshold == 0.4
    assert np.all(floor.thresholds.thresholds == 0.4)
    # The same data at a reachable target is feasible.
    assert fit_bucket_thresholds(score, bucket, label, 3, 0.35, None, 5).feasible


def test_no_positives_or_no_rows_accept_nothing_flagged():
    rng = np.random.default_rng(1)
    score = rng.uniform(size=500)
    bucket = rng.integers(0, 3, 500)
    zeros = np.zeros(500, dtype=np.int8)
    fitted = fit_bucket_thresholds(score, bucket, zeros, 4, 0.3, None, 5)
    assert not fitted.feasible
    assert np.all(np.isposinf(fitted.thresholds.thresholds))
    empty = fit_bucket_thresholds(
        np.array([]), np.array([], dtype=np.int64), np.array([], dtype=np.int8), 2, 0.3, 10, 5
    )
    assert not empty.feasible
    assert np.all(np.isposinf(empty.thresholds.thresholds))
    assert fit_global_threshold(np.array([]), np.array([]), 0.3, 10, 5).threshold == np.inf
    with pytest.raises(ValueError, match="binary"):
        fit_bucket_thresholds(score, bucket, score, 3, 0.3, None, 5)


def test_dp_scales_with_positives_not_rows():
    """Exact over every distinct score on 200k rows: options per bucket are bounded by its positives."""
    rng = np.random.default_rng(4)
    n = 200_000
    score = rng.uniform(size=n)
    bucket = rng.integers(0, 3, n)
    label = (rng.uniform(size=n) < 0.02 * score).astype(np.int8)  # ~2k positives
    fitted = fit_bucket_thresholds(score, bucket, label, 3, 0.02, None, 50)
    assert fitted.feasible
    tp, fp = counts(fitted.thresholds.decide(score, bucket), label)
    assert meets(tp, fp, 0.02)
    assert tp >= counts(score >= fitted.single.threshold, label)[0]


def test_json_round_trip_with_inf():
    t = Thresholds(thresholds=np.array([0.2, np.inf, 0.71]), target_precision=0.3)
    text = json.dumps(t.to_dict(), allow_nan=False)  # strict JSON: no Infinity token
    back = Thresholds.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.thresholds, t.thresholds)
    assert back.target_precision == 0.3
    assert Thresholds.from_dict({"thresholds": ["inf", 0.5], "target_precision": 0.4}).thresholds[0] == np.inf
    d = back.decide(np.array([0.5, 0.99, 0.7, 0.71]), np.array([0, 1, 2, 2]))
    assert list(d) == [True, False, False, True]
    with pytest.raises(ValueError, match="bucket index out of range"):
        back.decide(np.array([0.5]), np.array([3]))


def test_precision_recall_with_soft_labels_and_weights():
    d = np.array([True, True, False, False])
    y = np.array([1, 0, 1, 0])
    r = precision_recall(d, y)
    assert r == {"precision": 0.5, "recall": 0.5, "accepted": 2.0, "positives": 2.0, "true_positives": 1.0}
    # Expected eventual labels (delay-corrected evaluation).
    soft = np.array([1.0, 0.5, 0.25, 0.0])
    r = precision_recall(d, soft)
    assert r["precision"] == pytest.approx(0.75)
    assert r["recall"] == pytest.approx(1.5 / 1.75)
    r = precision_recall(d, y, weight=np.array([1.0, 3.0, 2.0, 1.0]))
    assert r["precision"] == pytest.approx(0.25)
    assert r["recall"] == pytest.approx(1 / 3)
    none = precision_recall(np.zeros(4, dtype=bool), y)
    assert none["precision"] == 0.0
    assert none["recall"] == 0.0
    assert none["accepted"] == 0.0


def test_pr_curve_table():
    score, _, label = simulate(5_000, seed=2)
    table = pr_curve_table(score, label, max_points=100)
    assert list(table.columns) == ["precision", "recall", "threshold"]
    assert 2 <= len(table) <= 100
    assert np.all(np.diff(table["threshold"]) > 0)
    assert np.all(np.diff(table["recall"]) <= 0)
    assert table["recall"].iloc[0] == pytest.approx(1.0)
    assert pr_curve_table(score, np.zeros_like(label)).empty


# -- cross-fitting: keep the per-bucket policy only where it wins out of fold ----------------


def _thresholds_cfg(**knobs) -> ThresholdsConfig:
    return ThresholdsConfig.model_validate(knobs)


def _store_like(seed: int, effect: float, n: int = 20_000):
    """Scores around a few-percent conversion rate, three uncertainty buckets; ``effect`` > 0 makes
    the most uncertain bucket convert less (and the least uncertain more) at equal score, growing
    with the score: the keynote's effect. ``effect`` 0: buckets say nothing."""
    rng = np.random.default_rng(seed)
    score = rng.normal(-3.0, 1.0, n)
    bucket = rng.integers(0, 3, n)
    p = expit(score - effect * (bucket - 1) * np.maximum(score + 3.0, 0.0))
    return score, bucket, (rng.random(n) < p).astype(np.int64)


def test_cross_fitting_keeps_per_bucket_thresholds_where_uncertainty_carries_signal():
    for seed in range(3):
        score, bucket, label = _store_like(seed, effect=1.0)
        plain = fit_bucket_thresholds(score, bucket, label, 3, 0.3, None, 30)
        fitted = cross_fitted_bucket_thresholds(
            score,
            bucket,
            label,
            3,
            _thresholds_cfg(
                target_precision=0.3, n_candidates=None, min_bucket_positives=30, cross_fit_folds=5, seed=seed
            ),
        )
        assert fitted.cross_fit.kept_per_bucket
        np.testing.assert_array_equal(fitted.thresholds.thresholds, plain.thresholds.thresholds)
        assert fitted.cross_fit.bucket_tp > 1.2 * fitted.cross_fit.single_tp  # out of fold, equal precision
        for tp, accepted in ((fitted.cross_fit.bucket_tp, fitted.cross_fit.bucket_accepted),
                             (fitted.cross_fit.single_tp, fitted.cross_fit.single_accepted)):  # fmt: skip
            assert tp / accepted >= 0.3 - TOL


def test_cross_fitting_falls_back_to_the_single_threshold_when_buckets_are_noise():
    # In sample the DP still spreads its thresholds over buckets that mean nothing; out of fold
    # that gains no TP at equal precision, so most fits serve the single threshold everywhere.
    kept = []
    for seed in range(10):
        score, bucket, label = _store_like(seed, effect=0.0)
        fitted = cross_fitted_bucket_thresholds(
            score,
            bucket,
            label,
            3,
            _thresholds_cfg(
                target_precision=0.3, n_candidates=None, min_bucket_positives=30, cross_fit_folds=5, seed=0
            ),
        )
        plain = fit_bucket_thresholds(score, bucket, label, 3, 0.3, None, 30)
        np.testing.assert_array_equal(fitted.cross_fit.per_bucket.thresholds, plain.thresholds.thresholds)
        kept.append(fitted.cross_fit.kept_per_bucket)
        if not fitted.cross_fit.kept_per_bucket:
            assert np.all(fitted.thresholds.thresholds == fitted.single.threshold)
            assert fitted.feasible == fitted.single.feasible
    assert sum(kept) <= 4  # one-sided one-standard-error rule: ~16% expected


def test_cross_fitting_off_or_infeasible_is_the_plain_joint_fit():
    score, bucket, label = _store_like(0, effect=1.0, n=3_000)
    plain = fit_bucket_thresholds(score, bucket, label, 3, 0.3, None, 10)
    off = cross_fitted_bucket_thresholds(
        score,
        bucket,
        label,
        3,
        _thresholds_cfg(
            target_precision=0.3, n_candidates=None, min_bucket_positives=10, cross_fit_folds=1, seed=0
        ),
    )
    assert off.cross_fit is None
    np.testing.assert_array_equal(off.thresholds.thresholds, plain.thresholds.thresholds)
    infeasible = cross_fitted_bucket_thresholds(
        score,
        bucket,
        label,
        3,
        _thresholds_cfg(
            target_precision=0.99, n_candidates=None, min_bucket_positives=10, cross_fit_folds=5, seed=0
        ),
    )
    assert not infeasible.feasible
    assert infeasible.cross_fit is None


def test_folds_are_stratified_by_bucket_and_label():
    _score, bucket, label = _store_like(1, effect=0.0, n=5_000)
    fold = _folds(bucket, label, 5, seed=3)
    for b in range(3):
        for y in (0, 1):
            counts_per_fold = np.bincount(fold[(bucket == b) & (label == y)], minlength=5)
            assert counts_per_fold.max() - counts_per_fold.min() <= 1
