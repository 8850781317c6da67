"""Accept/reject decisions: one score threshold per uncertainty bucket.

The thresholds are fitted jointly: maximise total true positives (recall)
subject to the OVERALL precision target. Precision >= p is linear in counts,

    sum_b [(1 - p) TP_b - p FP_b] >= 0,

so the problem is a multiple-choice knapsack over the integer total-TP axis,
solved exactly by dynamic programming (one row of choices per bucket, then
backtracking). A bucket that converts worse at equal score can be made
stricter while a better bucket is loosened, which is where the extra recall
over one global threshold comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

# Slack tolerance (per row) so that exact-precision ties like 3 TP / 10 at p=0.3
# are not lost to float rounding in (1-p)*TP - p*FP.
_EPS = 1e-9
# Upper bound on DP scratch cells (candidates x TP axis) processed at once.
_DP_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True, eq=False)  # eq=False: array fields make field-wise == ambiguous
class Thresholds:
    """Per-bucket thresholds; +inf means the bucket accepts nothing."""

    thresholds: np.ndarray
    target_precision: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", np.asarray(self.thresholds, dtype=np.float64).ravel())
        object.__setattr__(self, "target_precision", float(self.target_precision))

    @property
    def n_buckets(self) -> int:
        return self.thresholds.size

    def decide(self, score: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Accept where score >= the threshold of the row's bucket."""
        b = np.asarray(bucket, dtype=np.int64)
        if b.size and (b.min() < 0 or b.max() >= self.n_buckets):
            raise ValueError(f"bucket index out of range [0, {self.n_buckets})")
        return np.asarray(score, dtype=np.float64) >= self.thresholds[b]

    def to_dict(self) -> dict[str, Any]:
        # JSON has no infinity: +inf ("accept nothing") is written as null.
        return {
            "thresholds": [None if np.isposinf(t) else float(t) for t in self.thresholds],
            "target_precision": self.target_precision,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        def parse(t: Any) -> float:
            if t is None or (isinstance(t, str) and t.strip().lower() in ("inf", "+inf", "infinity")):
                return float("inf")
            return float(t)

        return cls(
            thresholds=np.array([parse(t) for t in d["thresholds"]]), target_precision=d["target_precision"]
        )


def _quantile_candidates(score: np.ndarray, n_candidates: int) -> np.ndarray:
    if score.size == 0:
        return np.empty(0, dtype=np.float64)
    # Data values (inverted_cdf), so each candidate is a real cut between rows.
    return np.unique(np.quantile(score, np.linspace(0.0, 1.0, n_candidates), method="inverted_cdf"))


def candidate_thresholds(
    score: np.ndarray, bucket: np.ndarray, n_buckets: int, n_candidates: int
) -> list[np.ndarray]:
    """Per bucket: +inf ("accept none") then, descending, the global score
    quantiles united with the bucket's own score quantiles.

    Every bucket gets the global candidates, so "the same global threshold in
    every bucket" is always a feasible DP choice.
    """
    s = np.asarray(score, dtype=np.float64)
    b = np.asarray(bucket, dtype=np.int64)
    glob = _quantile_candidates(s, n_candidates)
    out = []
    for k in range(n_buckets):  # loop over buckets, not rows
        c = np.union1d(glob, _quantile_candidates(s[b == k], n_candidates))
        out.append(np.concatenate([[np.inf], c[::-1]]))
    return out


def _counts_at(score: np.ndarray, label: np.ndarray, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP of ``score >= c`` for every candidate c (vectorised via sort + cumsum)."""
    order = np.argsort(score, kind="stable")
    s, y = score[order], label[order]
    cum = np.concatenate([[0], np.cumsum(y)])
    first = np.searchsorted(s, cands, side="left")  # rows [first:] are accepted
    tp = cum[-1] - cum[first]
    fp = (s.size - first) - tp
    return tp.astype(np.int64), fp.astype(np.int64)


def _check_inputs(score, label, target_precision) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("score and label must be 1-d arrays of equal length")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("label must be binary 0/1 (the DP runs on integer true-positive counts)")
    if not 0.0 < target_precision < 1.0:
        raise ValueError("target_precision must be in (0, 1)")
    if np.any(np.isnan(s)):
        raise ValueError("score must not be NaN")
    return s, y.astype(np.int64)


def fit_bucket_thresholds(
    score: np.ndarray,
    bucket: np.ndarray,
    label: np.ndarray,
    n_buckets: int,
    target_precision: float,
    n_candidates: int,
) -> Thresholds:
    """Jointly fitted per-bucket thresholds: max total TP s.t. overall precision >= target.

    Exact DP over the total-TP axis: V_b[t] = best slack sum_{b' <= b}
    [(1-p) TP - p FP] reaching exactly t true positives. The answer is the
    largest t with V_B[t] >= 0 (ties on t go to the larger slack, i.e. fewer
    false positives). Infeasible targets yield +inf everywhere (accept nothing).
    """
    s, y = _check_inputs(score, label, target_precision)
    b = np.asarray(bucket, dtype=np.int64)
    if b.shape != s.shape:
        raise ValueError("bucket must match score")
    if b.size and (b.min() < 0 or b.max() >= n_buckets):
        raise ValueError(f"bucket index out of range [0, {n_buckets})")
    p = float(target_precision)
    eps = _EPS * max(1, s.size)
    cands = candidate_thresholds(s, b, n_buckets, n_candidates)

    n_pos = int(y.sum())
    axis = np.arange(n_pos + 1)
    value = np.full(n_pos + 1, -np.inf)
    value[0] = 0.0
    choice = np.zeros((n_buckets, n_pos + 1), dtype=np.int64)
    tps = []
    for k in range(n_buckets):
        m = b == k
        tp, fp = _counts_at(s[m], y[m], cands[k])
        slack = (1.0 - p) * tp - p * fp
        tps.append(tp)
        best = np.full(n_pos + 1, -np.inf)
        best_c = np.zeros(n_pos + 1, dtype=np.int64)
        # Vectorised over candidates, chunked so scratch memory stays bounded.
        chunk = max(1, _DP_CHUNK_CELLS // (n_pos + 1))
        for lo in range(0, tp.size, chunk):
            src = axis[None, :] - tp[lo : lo + chunk, None]
            cand = np.where(src >= 0, value[np.maximum(src, 0)], -np.inf) + slack[lo : lo + chunk, None]
            arg = np.argmax(cand, axis=0)  # first max: earlier (stricter) candidate wins ties
            got = cand[arg, axis]
            better = got > best
            best[better] = got[better]
            best_c[better] = arg[better] + lo
        value, choice[k] = best, best_c

    feasible = np.flatnonzero(value >= -eps)
    t = int(feasible.max())  # t = 0 (accept nothing) is always feasible
    thresholds = np.full(n_buckets, np.inf)
    if t > 0:
        for k in range(n_buckets - 1, -1, -1):
            c = choice[k, t]
            thresholds[k] = cands[k][c]
            t -= int(tps[k][c])
    return Thresholds(thresholds=thresholds, target_precision=p)


def fit_global_threshold(
    score: np.ndarray, label: np.ndarray, target_precision: float, n_candidates: int
) -> float:
    """Best single threshold: max recall at precision >= target; +inf if infeasible."""
    s, y = _check_inputs(score, label, target_precision)
    p = float(target_precision)
    cands = _quantile_candidates(s, n_candidates)
    if cands.size == 0:
        return float("inf")
    tp, fp = _counts_at(s, y, cands)
    ok = ((1.0 - p) * tp - p * fp >= -_EPS * max(1, s.size)) & (tp > 0)
    if not ok.any():
        return float("inf")
    # Most TP; among equals the fewest FP (lexsort: last key is primary).
    i = np.lexsort((fp[ok], -tp[ok]))[0]
    return float(cands[ok][i])


def precision_recall(
    decisions: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None
) -> dict[str, float]:
    """Precision / recall of boolean decisions, optionally weighted.

    ``label`` may be fractional in [0, 1] (expected eventual labels, for
    delay-corrected evaluation) and ``weight`` a per-row weight. Precision is
    0.0 when nothing is accepted, recall 0.0 when there are no positives.
    """
    d = np.asarray(decisions, dtype=bool)
    y = np.asarray(label, dtype=np.float64)
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
    if not (d.shape == y.shape == w.shape):
        raise ValueError("decisions, label and weight must have equal shapes")
    tp = float(np.sum(w * y * d))
    accepted = float(np.sum(w * d))
    positives = float(np.sum(w * y))
    return {
        "precision": tp / accepted if accepted > 0 else 0.0,
        "recall": tp / positives if positives > 0 else 0.0,
        "accepted": accepted,
        "positives": positives,
        "true_positives": tp,
    }


def pr_curve_table(score: np.ndarray, label: np.ndarray, max_points: int = 200) -> pd.DataFrame:
    """Precision-recall curve (columns precision, recall, threshold), evenly
    downsampled to at most ``max_points`` rows for DVC plots."""
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label)
    if s.size == 0 or not np.any(y == 1):
        return pd.DataFrame({"precision": [], "recall": [], "threshold": []}, dtype=np.float64)
    precision, recall, thr = precision_recall_curve(y, s)
    # The last (precision=1, recall=0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    if thr.size > max_points:
        idx = np.unique(np.round(np.linspace(0, thr.size - 1, max_points)).astype(np.int64))
        precision, recall, thr = precision[idx], recall[idx], thr[idx]
    return pd.DataFrame({"precision": precision, "recall": recall, "threshold": thr})
