"""Top-K by retrieval: the candidates an index returns, re-ranked exactly, each source's list
proven complete or completed by a scan (see the package docstring)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.graph.scoring import serving_score
from nextbuy.domain.retrieval.index import (
    CandidateIndex,
    scans_unproven,
    search,
    source_weights,
)
from nextbuy.domain.uncertainty import BucketCalibration, assign_buckets

# Floats gathered at once in the re-rank (candidates x product features): bounds memory.
GATHER_FLOATS = 1 << 23
# Logit slack of the completeness bound: covers float32 rounding of scores and of the search.
BOUND_SLACK = 1e-5
SCAN_CELLS = 1 << 22  # sources x products of mean logits computed at once by the exact scan
# Products the scan re-ranks at once: the first block, and the largest (blocks grow x4).
SCAN_BLOCK, SCAN_MAX_BLOCK = 4096, 1 << 16
RESULT_COLUMNS = ("candidate_id", "score", "uncertainty", "bucket", "prob_calibrated", "decision")


def ranking_key(
    score: np.ndarray, bucket: np.ndarray, calibration: BucketCalibration, thresholds: Thresholds
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated probability, decision, and the served ranking key: accepted first, then
    calibrated probability, score breaking ties between isotonic steps."""
    prob = calibration.predict_in_bucket(score, bucket)
    decision = thresholds.decide(score, bucket)
    return prob, decision, decision * 4.0 + prob * 2.0 + score * 1e-6


def rank(
    cand: np.ndarray,
    score: np.ndarray,
    uncertainty: np.ndarray,
    bucket: np.ndarray,
    valid: np.ndarray,
    k: int,
    calibration: BucketCalibration,
    thresholds: Thresholds,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The k best of each row's candidates [m, c] by the served key (invalid ones last):
    the result columns [m, k] and each row's k-th key."""
    prob, decision, key = ranking_key(score, bucket, calibration, thresholds)
    key = np.where(valid, key, -np.inf)
    order = np.argpartition(-key, k - 1, axis=1)[:, :k] if key.shape[1] > k else np.argsort(-key, axis=1)
    order = np.take_along_axis(order, np.argsort(-np.take_along_axis(key, order, axis=1), axis=1), axis=1)
    columns = (cand, score, uncertainty, bucket, prob, decision)
    picked = {
        name: np.take_along_axis(a, order, axis=1) for name, a in zip(RESULT_COLUMNS, columns, strict=True)
    }
    return picked, np.take_along_axis(key, order[:, -1:], axis=1)[:, 0]


def _bucket_variances(
    var_lo: np.ndarray, var_hi: np.ndarray, calibration: BucketCalibration
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per bucket, the logit-variance range [lo, hi] of a product in it (empty: lo > hi)."""
    edges = np.maximum(np.asarray(calibration.edges, dtype=np.float64), 0.0) ** 2
    lows, highs = np.concatenate([[0.0], edges]), np.concatenate([edges, [np.inf]])
    return [(np.maximum(lows[b], var_lo), np.minimum(highs[b], var_hi)) for b in range(calibration.n_buckets)]


def key_bound(
    m_last: np.ndarray,
    var_lo: np.ndarray,
    var_hi: np.ndarray,
    calibration: BucketCalibration,
    thresholds: Thresholds,
) -> np.ndarray:
    """Upper bound [m] of the ranking key of any product whose mean logit is at most
    ``m_last`` and whose logit variance lies in [var_lo, var_hi], over every bucket."""
    m = m_last + BOUND_SLACK * (1.0 + np.abs(m_last))
    bound = np.full(m.shape, -np.inf)
    for b, (lo, hi) in enumerate(_bucket_variances(var_lo, var_hi, calibration)):
        # Score rises with the mean; with the variance it falls for m >= 0 and rises for m < 0.
        z = m / np.sqrt(1.0 + np.pi / 8.0 * np.where(m >= 0, lo, hi))
        s = 0.5 * (1.0 + np.tanh(0.5 * z))
        envelope = np.maximum.accumulate(calibration.knots_y[b])  # monotone: bounds any calibration
        key = (s >= thresholds.thresholds[b]) * 4.0 + np.interp(s, calibration.knots_x[b], envelope) * 2.0
        bound = np.where(lo <= hi, np.maximum(bound, key + s * 1e-6), bound)
    return bound


def _score(
    ci: CandidateIndex,
    s_mean: np.ndarray,
    weights: np.ndarray,
    cand: np.ndarray,
    valid: np.ndarray,
    k: int,
    calibration: BucketCalibration,
    thresholds: Thresholds,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Score candidates [m, c] exactly and rank them: the result columns [m, k], each row's
    k-th key, and the candidates' mean logits."""
    f = np.take(ci.features, cand, axis=0)  # [m, c, 3d]
    d = ci.dim
    mean = np.matmul(f[..., :d], s_mean[:, :, None])[..., 0] + np.float32(ci.bias)
    var = np.matmul(f[..., d:], weights[:, :, None])[..., 0]
    score, uncertainty = serving_score(mean, var)
    bucket = assign_buckets(uncertainty, calibration.edges)
    picked, kth = rank(cand, score, uncertainty, bucket, valid, k, calibration, thresholds)
    return picked, kth, mean


def retrieve(
    ci: CandidateIndex,
    s_mean: np.ndarray,
    weights: np.ndarray,
    exclude: np.ndarray,
    k: int,
    c: int,
    calibration: BucketCalibration,
    thresholds: Thresholds,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Retrieve c candidates per source and rank them exactly: the result columns [m, k],
    each row's k-th key, and which rows are proven complete (:func:`key_bound`)."""
    ids = search(ci, s_mean, c)
    found = ids >= 0
    cand = np.where(found, ids, 0)
    valid = found & (cand != exclude[:, None])
    picked, kth, mean = _score(ci, s_mean, weights, cand, valid, k, calibration, thresholds)
    lo, hi = weights @ ci.var_lo, weights @ ci.var_hi
    bound = key_bound(np.where(found, mean, np.inf).min(axis=1), lo, hi, calibration, thresholds)
    proven = (found.sum(axis=1) == ci.n_products) | (found.all(axis=1) & (kth > bound))
    return picked, kth, proven


def _key_curve(
    b: int, calibration: BucketCalibration, thresholds: Thresholds
) -> tuple[np.ndarray, np.ndarray]:
    """Bucket b's ranking key (calibration made monotone) as a function of the score, at its
    breakpoints: (keys, scores), both nondecreasing; the acceptance step is a vertical jump."""
    x = np.asarray(calibration.knots_x[b], dtype=np.float64)
    y = np.maximum.accumulate(np.asarray(calibration.knots_y[b], dtype=np.float64))
    cut = float(thresholds.thresholds[b])
    s = np.unique(np.clip(np.concatenate([[0.0, 1.0], x, [cut] if np.isfinite(cut) else []]), 0.0, 1.0))
    base = 2.0 * np.interp(s, x, y) + 1e-6 * s
    keys = base + 4.0 * (s >= cut)
    at = np.flatnonzero(s == cut)  # the jump: not yet accepted just below the cut
    return np.insert(keys, at, base[at]), np.insert(s, at, s[at])


def entry_threshold(
    kth: np.ndarray,
    var_lo: np.ndarray,
    var_hi: np.ndarray,
    calibration: BucketCalibration,
    thresholds: Thresholds,
) -> np.ndarray:
    """Per source, a mean logit below which no product (variance in [var_lo, var_hi]) can
    reach the key ``kth``: per bucket, the least score whose key reaches it, turned into a
    mean logit at the end of the bucket's variance range that favours it (the inverse of
    :func:`key_bound`); the lowest over the buckets."""
    entry = np.full(kth.shape, np.inf)
    for b, (lo, hi) in enumerate(_bucket_variances(var_lo, var_hi, calibration)):
        keys, scores = _key_curve(b, calibration, thresholds)
        s = np.interp(kth, keys, scores)
        with np.errstate(divide="ignore", invalid="ignore"):  # s = 0 or 1: m = -inf or inf
            z = np.log(s) - np.log1p(-s)
            m = z * np.sqrt(1.0 + np.pi / 8.0 * np.where(z >= 0, lo, hi))
            m = np.where(np.isfinite(m), m - BOUND_SLACK * (2.0 + np.abs(m)), m)
        m = np.where(kth > keys[-1], np.inf, np.where(kth <= keys[0], -np.inf, m))
        entry = np.where(lo <= hi, np.minimum(entry, m), entry)
    return entry


class Ranking(NamedTuple):
    """What the exact scan ranks by: the list's length ``k`` and what turns a pair's logit moments
    into its key (the bucket calibration and the per-bucket thresholds)."""

    k: int
    calibration: BucketCalibration
    thresholds: Thresholds


def _scan_row(
    ci: CandidateIndex,
    s_mean: np.ndarray,
    weights: np.ndarray,
    exclude: int,
    mean: np.ndarray,
    best: np.ndarray,
    kth: np.ndarray,
    ranking: Ranking,
) -> dict[str, np.ndarray]:
    """Exact top-k of one source (s_mean, weights [1, ·]) from the mean logits [n] of every
    product, and its best candidates and k-th key [1] so far: re-rank, by blocks of highest
    mean logit, the products that could still enter (at or above the entry threshold of the
    k-th key, which rises as the list improves), until none is left."""
    lo, hi = weights @ ci.var_lo, weights @ ci.var_hi
    best = np.setdiff1d(best, [exclude])  # unique; a short list may hold the excluded product
    pool = np.flatnonzero(mean >= entry_threshold(kth, lo, hi, ranking.calibration, ranking.thresholds)[0])
    pool = pool[(pool != exclude) & ~np.isin(pool, best)]
    block = SCAN_BLOCK
    while True:
        taken = np.ones(pool.size, dtype=bool)
        if pool.size > block:
            taken[:] = False
            taken[np.argpartition(-mean[pool], block - 1)[:block]] = True
        cand = np.concatenate([best, pool[taken]])[None, :]
        picked, kth, _ = _score(ci, s_mean, weights, cand, np.ones(cand.shape, dtype=bool), *ranking)
        best, pool = picked["candidate_id"][0], pool[~taken]
        pool = pool[mean[pool] >= entry_threshold(kth, lo, hi, ranking.calibration, ranking.thresholds)[0]]
        if pool.size == 0:
            return picked
        block = min(4 * block, SCAN_MAX_BLOCK)


def _scan(
    ci: CandidateIndex,
    s_mean: np.ndarray,
    weights: np.ndarray,
    exclude: np.ndarray,
    best: np.ndarray,
    kth: np.ndarray,
    ranking: Ranking,
) -> dict[str, np.ndarray]:
    """Exact top-k of sources whose retrieved list is unproven (``best`` [m, k]: its ids,
    ``kth`` [m] its k-th key): the mean logit of every product (matrix products, chunked),
    then :func:`_scan_row` per source."""
    n, d = ci.n_products, ci.dim
    rows = []
    step = max(1, SCAN_CELLS // n)
    for a in range(0, s_mean.shape[0], step):
        mean = s_mean[a : a + step] @ ci.features[:, :d].T + np.float32(ci.bias)
        for r in range(mean.shape[0]):
            i = a + r
            one = slice(i, i + 1)
            rows.append(
                _scan_row(
                    ci,
                    s_mean[one],
                    weights[one],
                    exclude[i],
                    mean[r],
                    best[i],
                    kth[one],
                    ranking,
                )
            )
    return {name: np.concatenate([row[name] for row in rows]) for name in RESULT_COLUMNS}


def top_k(
    ci: CandidateIndex,
    s_mean: np.ndarray,
    s_var: np.ndarray,
    head_w: np.ndarray,
    exclude: np.ndarray,
    k: int,
    calibration: BucketCalibration,
    thresholds: Thresholds,
) -> dict[str, np.ndarray]:
    """Top-k of each source (its moments s_mean, s_var [m, d]; ``exclude`` [m]: a product
    id left out of its candidates, e.g. itself, or -1): the result columns [m, k]. Rows
    the retrieval cannot prove complete are completed by an exact scan of the catalogue
    when the settings say so (:func:`scans_unproven`)."""
    n = ci.n_products
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    s_mean = np.ascontiguousarray(s_mean, dtype=np.float32)
    weights = source_weights(s_mean, np.asarray(s_var, dtype=np.float32), head_w)
    exclude = np.asarray(exclude, dtype=np.int64)
    c = min(n, max(ci.settings.candidates, k) + 1)  # + 1: room for the excluded product
    step = max(1, GATHER_FLOATS // (c * ci.features.shape[1]))
    parts = [
        retrieve(
            ci,
            s_mean[a : a + step],
            weights[a : a + step],
            exclude[a : a + step],
            k,
            c,
            calibration,
            thresholds,
        )
        for a in range(0, s_mean.shape[0], step)
    ]
    picked = {name: np.concatenate([p[0][name] for p in parts]) for name in RESULT_COLUMNS}
    kth = np.concatenate([p[1] for p in parts])
    redo = np.flatnonzero(~np.concatenate([p[2] for p in parts]))
    if redo.size and scans_unproven(ci.settings, ci.kind):
        best = picked["candidate_id"][redo]
        done = _scan(
            ci,
            s_mean[redo],
            weights[redo],
            exclude[redo],
            best,
            kth[redo],
            Ranking(k, calibration, thresholds),
        )
        for name in RESULT_COLUMNS:
            picked[name][redo] = done[name]
    return picked
