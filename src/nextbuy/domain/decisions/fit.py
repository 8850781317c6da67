"""Fitting the thresholds: the single threshold and the per-bucket thresholds fitted jointly by an
exact DP over total true positives, on one shared grid of cut points (see ``nextbuy.domain.decisions``)."""

from __future__ import annotations

import numpy as np

from nextbuy.domain.decisions.policy import BucketFit, GlobalThreshold, Thresholds

# Slack tolerance (per row) so that exact-precision ties like 3 TP / 10 at p=0.3
# are not lost to float rounding in (1-p)*TP - p*FP.
_EPS = 1e-9
# Upper bound on DP scratch cells (options x TP axis) processed at once.
_DP_CHUNK_CELLS = 1 << 22


def cut_points(score: np.ndarray, n_candidates: int | None) -> np.ndarray:
    """The cut points both policies choose among, ascending: every distinct score,
    or ``n_candidates`` score quantiles when there are more distinct scores than that."""
    s = np.asarray(score, dtype=np.float64)
    distinct = np.unique(s)
    if n_candidates is None or distinct.size <= n_candidates:
        return distinct
    # Data values (inverted_cdf), so each cut point is a real cut between rows.
    return np.unique(np.quantile(s, np.linspace(0.0, 1.0, n_candidates), method="inverted_cdf"))


def _counts_at(score: np.ndarray, label: np.ndarray, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP of ``score >= c`` for every candidate c (vectorised via sort + cumsum)."""
    order = np.argsort(score, kind="stable")
    s, y = score[order], label[order]
    cum = np.concatenate([[0], np.cumsum(y)])
    first = np.searchsorted(s, cands, side="left")  # rows [first:] are accepted
    tp = cum[-1] - cum[first]
    fp = (s.size - first) - tp
    return tp.astype(np.int64), fp.astype(np.int64)


def _check_inputs(
    score: np.ndarray, label: np.ndarray, target_precision: float
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("score and label must be 1-d arrays of equal length")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("label must be binary 0/1 (the DP runs on integer true-positive counts)")
    if not 0.0 < target_precision < 1.0:
        raise ValueError("target_precision must be in (0, 1)")
    if not np.all(np.isfinite(s)):
        raise ValueError("score must be finite")
    return s, y.astype(np.int64)


def _most_precise(cands: np.ndarray, tp: np.ndarray, fp: np.ndarray, min_support: int) -> float:
    """Highest-precision cut accepting >= min_support rows (ties: more TP); +inf without any TP."""
    accepted = tp + fp
    if accepted.size == 0 or accepted.max() == 0:
        return float("inf")
    ok = accepted >= min(max(1, min_support), int(accepted.max()))
    precision = tp[ok] / accepted[ok]
    i = np.lexsort((-tp[ok], -precision))[0]  # last key is primary
    return float(cands[ok][i]) if tp[ok][i] > 0 else float("inf")


def fit_global_threshold(
    score: np.ndarray, label: np.ndarray, target_precision: float, n_candidates: int | None, min_support: int
) -> GlobalThreshold:
    """Best single threshold over ``cut_points``: max recall at precision >= target
    (ties: fewest FP) and at least max(1, ``min_support``) true positives. Infeasible: the most
    precise cut accepting >= ``min_support`` rows, ``feasible`` False."""
    s, y = _check_inputs(score, label, target_precision)
    p = float(target_precision)
    cands = cut_points(s, n_candidates)
    if cands.size == 0:
        return GlobalThreshold(float("inf"), feasible=False)
    tp, fp = _counts_at(s, y, cands)
    ok = ((1.0 - p) * tp - p * fp >= -_EPS * max(1, s.size)) & (tp >= max(1, min_support))
    if not ok.any():
        return GlobalThreshold(_most_precise(cands, tp, fp, min_support), feasible=False)
    # Most TP; among equals the fewest FP (lexsort: last key is primary).
    i = np.lexsort((fp[ok], -tp[ok]))[0]
    return GlobalThreshold(float(cands[ok][i]), feasible=True)


def _options(
    score: np.ndarray, label: np.ndarray, cands: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates (descending) with their TP/FP, keeping per TP count only the
    strictest one (fewest FP): the others can never be optimal."""
    tp, fp = _counts_at(score, label, cands)
    keep = np.concatenate([[True], tp[1:] != tp[:-1]])  # TP is non-decreasing as the cut falls
    return cands[keep], tp[keep], fp[keep]


def fit_bucket_thresholds(
    score: np.ndarray,
    bucket: np.ndarray,
    label: np.ndarray,
    n_buckets: int,
    target_precision: float,
    n_candidates: int | None,
    min_bucket_positives: int,
) -> BucketFit:
    """Jointly fitted per-bucket thresholds: max total TP s.t. overall precision >= target.

    Exact DP over the total-TP axis: V_b[t] = best slack sum_{b' <= b}
    [(1-p) TP - p FP] reaching exactly t true positives. The answer is the
    largest t >= max(1, ``min_bucket_positives``) with V_B[t] >= 0 (ties on t
    go to the larger slack, i.e. fewer false positives). Buckets with fewer
    than ``min_bucket_positives`` positives have one choice: the single
    threshold (fitted here on the same cut points). Infeasible: the single
    threshold's most precise point everywhere, ``feasible`` False (see the
    ``nextbuy.domain.decisions`` docstring).
    """
    s, y = _check_inputs(score, label, target_precision)
    b = _checked_buckets(bucket, s.shape, n_buckets, min_bucket_positives)
    p = float(target_precision)
    eps = _EPS * max(1, s.size)
    single = fit_global_threshold(s, y, p, n_candidates, min_bucket_positives)
    grid = np.concatenate([[np.inf], cut_points(s, n_candidates)[::-1]])  # shared by every bucket
    rows = np.bincount(b, minlength=n_buckets)
    positives = np.bincount(b, weights=y, minlength=n_buckets).astype(np.int64)
    fallback = positives < min_bucket_positives

    n_pos = int(y.sum())
    value = np.full(n_pos + 1, -np.inf)
    value[0] = 0.0
    choice = np.zeros((n_buckets, n_pos + 1), dtype=np.int64)
    options = []
    for k in range(n_buckets):
        m = b == k
        cands, tp, fp = _options(s[m], y[m], np.array([single.threshold]) if fallback[k] else grid)
        options.append((cands, tp))
        value, choice[k] = _dp_step(value, tp, (1.0 - p) * tp - p * fp)

    floor = max(1, min_bucket_positives)
    reach = np.flatnonzero(value[floor:] >= -eps) + floor
    feasible = reach.size > 0
    thresholds = np.full(n_buckets, single.threshold)
    if feasible:
        t = int(reach.max())
        for k in range(n_buckets - 1, -1, -1):
            cands, tp = options[k]
            c = choice[k, t]
            thresholds[k] = cands[c]
            t -= int(tp[c])
    return BucketFit(
        thresholds=Thresholds(thresholds=thresholds, target_precision=p),
        feasible=feasible,
        single=single,
        rows=rows,
        positives=positives,
        fallback=fallback,
    )


def _checked_buckets(
    bucket: np.ndarray, shape: tuple[int, ...], n_buckets: int, min_bucket_positives: int
) -> np.ndarray:
    b = np.asarray(bucket, dtype=np.int64)
    if b.shape != shape:
        raise ValueError("bucket must match score")
    if b.size and (b.min() < 0 or b.max() >= n_buckets):
        raise ValueError(f"bucket index out of range [0, {n_buckets})")
    if min_bucket_positives < 0:
        raise ValueError("min_bucket_positives must be >= 0")
    return b


def _dp_step(value: np.ndarray, tp: np.ndarray, slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One bucket of the DP: for each total TP ``t``, the best ``value[t - tp[c]] + slack[c]``
    over the bucket's options ``c`` and the option that gives it (the first, i.e. the stricter,
    on ties). Vectorised over options, chunked so scratch memory stays bounded."""
    axis = np.arange(value.size)
    best = np.full(value.size, -np.inf)
    best_c = np.zeros(value.size, dtype=np.int64)
    chunk = max(1, _DP_CHUNK_CELLS // value.size)
    for lo in range(0, tp.size, chunk):
        src = axis[None, :] - tp[lo : lo + chunk, None]
        cand = np.where(src >= 0, value[np.maximum(src, 0)], -np.inf) + slack[lo : lo + chunk, None]
        arg = np.argmax(cand, axis=0)
        got = cand[arg, axis]
        better = got > best
        best[better] = got[better]
        best_c[better] = arg[better] + lo
    return best, best_c
