"""Which scored holdout rows fit what, and the labels they are judged against.

Calibration and thresholds are fitted on the same rows (matured calibration
pairs), and every evaluation of the test split uses delay-corrected labels:
one definition each, shared by the calibrate, thresholds and deploy stages. The AUC they
report is one quantity: :func:`soft_auc`, a delay-corrected label counting as positive
with its mass and negative with the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain import delay


def fit_rows(scored: pd.DataFrame) -> np.ndarray:
    """Calibration-split rows whose labels have matured: what calibration and thresholds are fitted on."""
    return ((scored["split"] == "calib") & scored["matured"]).to_numpy()


def evaluation_labels(scored: pd.DataFrame) -> np.ndarray:
    """Delay-corrected expected eventual label: immature negatives count by their flip probability."""
    return delay.expected_eventual_label(scored["label"].to_numpy(), scored["p_flip"].to_numpy())


def soft_log_loss(prob: np.ndarray, label: np.ndarray) -> float:
    """Cross-entropy that also takes fractional (delay-corrected) labels."""
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log1p(-p)))


def soft_auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float | None:
    """AUC where row i counts as a positive with mass label_i and a negative with 1 - label_i
    (times weight_i); ties count half. None with one class: :func:`resampled_soft_auc` of one
    resample."""
    w = np.ones(len(label)) if weight is None else np.asarray(weight, dtype=np.float64)
    auc = resampled_soft_auc(label, score, w[np.newaxis, :])[0]
    return None if np.isnan(auc) else float(auc)


def rank_sum_auc(within: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float | None:
    """:func:`soft_auc` as the Mann-Whitney statistic, from blocks of rows in ascending score
    order that share no score: ``pos``, ``neg``, each block's positive and negative mass;
    ``within``, the sum over its rows of positive mass x (the block's negative mass at lower
    scores + half of that at the row's score: a tie counts half). The blocks' rank sums add up
    once each is credited the negative mass of every block before it. None with one class."""
    within, pos, neg = (np.asarray(a, dtype=np.float64) for a in (within, pos, neg))
    positives, negatives = pos.sum(), neg.sum()
    if positives <= 0 or negatives <= 0:
        return None
    earlier = np.cumsum(neg) - neg
    return float((within.sum() + (pos * earlier).sum()) / (positives * negatives))


def resampled_soft_auc(label: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`soft_auc` of every resample at once: row ``b`` of ``counts`` weighs row i of the data
    ``counts[b, i]`` times (NaN where a resample holds one class). The rows are sorted by score
    once and the resamples' masses summed per block of equal score, so every resample costs one
    pass over the blocks (:func:`rank_sum_auc`'s sums, a row per resample), not a sort."""
    label = np.asarray(label, dtype=np.float64)
    if label.size == 0:  # no rows: no class at all
        return np.full(len(counts), np.nan)
    order = np.argsort(score, kind="stable")
    ordered = np.asarray(score)[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    weights = np.asarray(counts, dtype=np.float64)[:, order]
    pos = np.add.reduceat(weights * label[order], starts, axis=1)
    neg = np.add.reduceat(weights * (1.0 - label[order]), starts, axis=1)
    positives, negatives = pos.sum(axis=1), neg.sum(axis=1)
    earlier = np.cumsum(neg, axis=1) - neg
    ranked = (pos * (earlier + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), ranked / (positives * negatives), np.nan)
