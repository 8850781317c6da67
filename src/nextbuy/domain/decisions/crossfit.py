"""Cross-fitting the per-bucket thresholds: kept only where they beat the single threshold out of
fold at equal precision (see ``nextbuy.domain.decisions``, "Cross-fitting")."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from nextbuy.domain.decisions.fit import _check_inputs, fit_bucket_thresholds, fit_global_threshold
from nextbuy.domain.decisions.policy import BucketFit, CrossFit

if TYPE_CHECKING:
    from nextbuy.config import ThresholdsConfig


# Below every finite score: a bucket whose threshold is +inf accepts nothing out of fold.
_NEVER = 1e300


def _folds(bucket: np.ndarray, label: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each row, stratified by (bucket, label): every fold gets its share of each
    bucket's positives, so no fold's fit loses a bucket's support by chance."""
    rng = np.random.default_rng(seed)
    fold = np.empty(bucket.size, dtype=np.int64)
    strata = bucket * 2 + label
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        fold[rng.permutation(rows)] = (np.arange(rows.size) + int(rng.integers(k))) % k
    return fold


def cross_fitted_bucket_thresholds(
    score: np.ndarray,
    bucket: np.ndarray,
    label: np.ndarray,
    n_buckets: int,
    cfg: ThresholdsConfig,
) -> BucketFit:
    """:func:`fit_bucket_thresholds`, kept only where it wins out of fold at equal precision
    (``nextbuy.domain.decisions`` docstring, "Cross-fitting"); otherwise every bucket gets the
    single threshold (``feasible`` then the single threshold's).  ``cross_fit_folds`` < 2, or a
    per-bucket fit that misses the target: the plain joint fit."""
    target_precision, n_candidates = cfg.target_precision, cfg.n_candidates
    min_bucket_positives = cfg.min_bucket_positives
    fitted = fit_bucket_thresholds(
        score, bucket, label, n_buckets, target_precision, n_candidates, min_bucket_positives
    )
    k = int(cfg.cross_fit_folds)
    if k < 2 or not fitted.feasible:
        return fitted
    s, y = _check_inputs(score, label, target_precision)
    b = np.asarray(bucket, dtype=np.int64)
    fold = _folds(b, y, k, cfg.seed)
    # Out of fold, the per-bucket policy is the score shifted by each bucket's threshold offset
    # from the single threshold (accept iff score - offset_b >= single threshold).  Both scores
    # then get their best single cut at the target on the pooled rows: TP at equal precision.
    shifted = np.empty_like(s)
    for f in range(k):
        held = fold == f
        part = fit_bucket_thresholds(
            s[~held], b[~held], y[~held], n_buckets, target_precision, n_candidates,
            # each fit sees (k - 1) / k of the rows: the support floor scales with them
            round(min_bucket_positives * (k - 1) / k),
        )  # fmt: skip
        offset = part.thresholds.thresholds - part.single.threshold  # +inf: the bucket accepts nothing
        shifted[held] = np.where(np.isfinite(offset[b[held]]), s[held] - offset[b[held]], -_NEVER)
    cuts = [
        fit_global_threshold(x, y, target_precision, n_candidates, min_bucket_positives) for x in (shifted, s)
    ]
    bucket_accepts, single_accepts = (x >= cut.threshold for x, cut in zip((shifted, s), cuts, strict=True))
    bucket_tp, single_tp = int(y[bucket_accepts].sum()), int(y[single_accepts].sum())
    # More TP than McNemar's noise: one standard error of the positives only one policy accepts.
    discordant = int(y[bucket_accepts != single_accepts].sum())
    keep = bool(cuts[0].feasible and bucket_tp - single_tp > np.sqrt(discordant))
    check = CrossFit(
        folds=k,
        bucket_tp=bucket_tp,
        bucket_accepted=int(bucket_accepts.sum()),
        single_tp=single_tp,
        single_accepted=int(single_accepts.sum()),
        kept_per_bucket=keep,
        per_bucket=fitted.thresholds,
    )
    if keep:
        return dataclasses.replace(fitted, cross_fit=check)
    return dataclasses.replace(
        fitted, thresholds=fitted.baseline, feasible=fitted.single.feasible, cross_fit=check
    )
