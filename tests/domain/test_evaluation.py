"""Shared evaluation definitions: which rows fit, the delay-corrected labels, soft log loss and
the soft-label AUC (alone, of blocks, of every bootstrap resample)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from nextbuy.domain import evaluation


def scored(**columns) -> pd.DataFrame:
    base = {
        "split": ["calib", "calib", "test", "test", "calib"],
        "matured": [True, False, True, False, True],
        "label": np.array([1, 0, 0, 0, 0], dtype=np.int8),
        "p_flip": [0.0, 0.4, 0.1, 0.3, 0.0],
    }
    return pd.DataFrame({**base, **columns})


def test_fit_rows_are_only_matured_calibration_rows():
    mask = evaluation.fit_rows(scored())
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, False, False, True]


def test_fit_rows_is_empty_when_nothing_has_matured():
    assert not evaluation.fit_rows(scored(matured=[False] * 5)).any()


def test_evaluation_labels_keep_positives_and_count_negatives_by_flip_probability():
    label = evaluation.evaluation_labels(scored())
    np.testing.assert_allclose(label, [1.0, 0.4, 0.1, 0.3, 0.0])
    # An observed positive stays 1 whatever its (stale) flip probability.
    assert evaluation.evaluation_labels(scored(p_flip=[0.9, 0.4, 0.1, 0.3, 0.0]))[0] == 1.0


def test_soft_log_loss_equals_sklearn_on_hard_labels():
    rng = np.random.default_rng(0)
    prob = rng.uniform(0.01, 0.99, 500)
    label = (rng.uniform(size=500) < prob).astype(float)
    assert evaluation.soft_log_loss(prob, label) == pytest.approx(log_loss(label, prob), rel=1e-9)


def test_soft_log_loss_of_a_fractional_label_is_the_mix_of_both_hard_losses():
    prob = np.array([0.3, 0.8])
    soft = evaluation.soft_log_loss(prob, np.array([0.25, 0.25]))
    hard = 0.25 * evaluation.soft_log_loss(prob, np.ones(2)) + 0.75 * evaluation.soft_log_loss(
        prob, np.zeros(2)
    )
    assert soft == pytest.approx(hard)


def test_soft_log_loss_is_minimal_at_the_label_itself():
    label = np.full(3, 0.3)
    at_label = evaluation.soft_log_loss(np.full(3, 0.3), label)
    assert all(at_label < evaluation.soft_log_loss(np.full(3, p), label) for p in (0.1, 0.29, 0.31, 0.6))


def test_soft_log_loss_stays_finite_for_confident_mistakes():
    loss = evaluation.soft_log_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert np.isfinite(loss)
    assert loss > 10


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return p, (rng.uniform(size=n) < p).astype(float)


# --- soft_auc ---------------------------------------------------------------


def test_soft_auc_equals_sklearn_on_hard_labels():
    p, label = _data(500)
    score = p + np.random.default_rng(1).normal(0, 0.3, p.size)
    assert evaluation.soft_auc(label, score) == pytest.approx(roc_auc_score(label, score))


def test_soft_auc_with_weights_equals_weighted_sklearn_on_hard_labels():
    p, label = _data(500)
    weight = np.random.default_rng(2).integers(0, 4, p.size).astype(float)
    assert evaluation.soft_auc(label, p, weight) == pytest.approx(
        roc_auc_score(label, p, sample_weight=weight)
    )


def test_soft_auc_of_a_fractional_label_counts_it_as_part_positive_part_negative():
    # label 0.5 on the middle row = one half-positive and one half-negative copy of it.
    score = np.array([0.1, 0.5, 0.9])
    soft = evaluation.soft_auc(np.array([0.0, 0.5, 1.0]), score)
    expanded = roc_auc_score([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9], sample_weight=[1, 0.5, 0.5, 1])
    assert soft == pytest.approx(expanded)
    assert evaluation.soft_auc(np.array([0.0, 1.0]), np.array([0.2, 0.8])) == 1.0


@pytest.mark.parametrize("label", [np.zeros(4), np.ones(4)])
def test_soft_auc_is_none_with_one_class(label):
    assert evaluation.soft_auc(label, np.array([0.1, 0.4, 0.6, 0.9])) is None


def test_soft_auc_is_none_when_weights_remove_a_class():
    label = np.array([0.0, 0.0, 1.0, 1.0])
    assert evaluation.soft_auc(label, np.array([0.1, 0.4, 0.6, 0.9]), np.array([1.0, 1.0, 0.0, 0.0])) is None


def within_blocks(score, pos, neg, cuts):
    """Rows sorted by score cut into blocks at ``cuts`` (no tie cut): each block's rank sum."""
    order = np.argsort(score, kind="stable")
    score, pos, neg = score[order], pos[order], neg[order]
    within, pos_b, neg_b = [], [], []
    for block in np.split(np.arange(score.size), cuts):
        s, p, q = score[block], pos[block], neg[block]
        lower = np.array([q[s < x].sum() for x in s])
        same = np.array([q[s == x].sum() for x in s])
        within.append((p * (lower + 0.5 * same)).sum())
        pos_b.append(p.sum())
        neg_b.append(q.sum())
    return np.array(within), np.array(pos_b), np.array(neg_b)


def test_rank_sum_auc_of_blocks_equals_soft_auc_with_ties_zero_weights_and_fractional_labels():
    rng = np.random.default_rng(3)
    score = np.round(rng.uniform(size=400), 1)  # 11 distinct scores, each tied many times
    label = np.where(rng.uniform(size=400) < 0.2, 0.4, (rng.uniform(size=400) < score).astype(float))
    weight = rng.uniform(size=400) * (rng.uniform(size=400) > 0.25)  # a quarter weigh nothing
    pos, neg = weight * label, weight * (1 - label)
    # blocks cut where the score changes (no score shared by two blocks), of uneven sizes
    cuts = (np.flatnonzero(np.diff(np.sort(score))) + 1)[[0, 1, 5, 8]]
    got = evaluation.rank_sum_auc(*within_blocks(score, pos, neg, cuts))
    assert got == pytest.approx(evaluation.soft_auc(label, score, weight), rel=1e-12)
    assert evaluation.rank_sum_auc(*within_blocks(score, pos, neg, [])) == pytest.approx(got, rel=1e-12)


def test_rank_sum_auc_is_none_with_one_class():
    assert evaluation.rank_sum_auc(np.zeros(2), np.zeros(2), np.array([3.0, 1.0])) is None
    assert evaluation.rank_sum_auc(np.zeros(2), np.array([3.0, 1.0]), np.zeros(2)) is None


def test_resampled_soft_auc_is_soft_auc_of_each_resample_with_ties_and_fractional_labels():
    rng = np.random.default_rng(4)
    score = np.round(rng.uniform(size=300), 1)
    label = np.where(rng.uniform(size=300) < 0.2, 0.4, (rng.uniform(size=300) < score).astype(float))
    counts = rng.multinomial(300, np.full(300, 1 / 300), size=40).astype(float)
    counts[0] = label == 0  # a resample without a positive
    got = evaluation.resampled_soft_auc(label, score, counts)
    want = [evaluation.soft_auc(label, score, c) for c in counts]
    assert np.isnan(got[0])
    assert want[0] is None
    assert got[1:] == pytest.approx(want[1:], rel=1e-12)
