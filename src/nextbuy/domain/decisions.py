"""Accept/reject decisions: one score threshold per uncertainty bucket.

The thresholds are fitted jointly: maximise total true positives (recall)
subject to the OVERALL precision target. Precision >= p is linear in counts,

    sum_b [(1 - p) TP_b - p FP_b] >= 0,

so the problem is a multiple-choice knapsack over the integer total-TP axis,
solved exactly by dynamic programming (one row of choices per bucket, then
backtracking). A bucket that converts worse at equal score can be made
stricter while a better bucket is loosened, which is where the extra recall
over one global threshold comes from.

Cut points. Both policies choose among ONE shared grid of cut points
(``cut_points``): every distinct score of the fit rows (``n_candidates`` None,
exact), or, as a cap for very large inputs, ``n_candidates`` score quantiles
when there are more distinct scores than that. The single threshold is the
DP's policy restricted to equal thresholds over that same grid, so it never
gets a coarser grid than the per-bucket policy (a finer grid for one policy
alone would inflate the measured gain).

Complexity. Per bucket, among cut points with equal TP only the strictest
(fewest FP) can be optimal, so each bucket keeps at most
min(#cut points, P_b) + 1 options (P_b: its positives; +1 for "accept
nothing"). The DP then costs O(sum_b options_b * (P + 1)) time, i.e.
O((P + B) * (P + 1)) exact and O(B * (G + 1) * (P + 1)) with a grid of G
points, where P is the number of positives -- independent of the number of
negatives -- plus O(B n log n) to count TP/FP by sort + cumsum. It is
vectorised over options and chunked so scratch memory stays below
``_DP_CHUNK_CELLS`` cells; the backtracking table is B x (P + 1) integers.

Out of sample. A threshold fitted on a handful of positives lands exactly at
the target in sample and below it on fresh traffic. One support floor,
``min_bucket_positives`` (m), guards against that: a bucket with fewer than m
positives among the fit rows gets the single threshold (fixed in the DP, whose
other buckets are still fitted jointly around it), and a policy counts as
reaching the target only with at least max(1, m) true positives in all (so a
cut that accepts two lucky rows is not "feasible"). Minimum support was chosen
over shrinkage toward the single threshold: shrinkage interpolates on the
score axis, which keeps neither the exact DP nor the in-sample precision
guarantee, and needs a strength to tune; a support floor is one integer,
keeps the DP exact under the constraint, and is what the metrics report
(``support``).

Cross-fitting. Even with that floor, a joint fit on a few hundred positives
trades TP between buckets on noise: on fresh traffic it then buys recall with
precision below the target, or recalls less than the single threshold
(out of sample). With ``cross_fit_folds`` k >= 2,
:func:`cross_fitted_bucket_thresholds` fits the DP on k - 1 folds of the fit
rows (stratified by bucket and label) and turns its thresholds into offsets
from that fit's single threshold, applied to the held-out fold as a shifted
score (accept iff score - offset_b >= cut). Pooled over the folds, the shifted
and the raw score each get their best single cut at the target, so the two
policies are compared at equal precision. The per-bucket thresholds (fitted
on all rows) are kept only when the shifted score's TP exceeds the raw score's
by more than one standard error (the square root of the positives only one of
them accepts, as in McNemar's test); otherwise every bucket gets the single
threshold. It costs k + 1 DP fits and keeps each exact; the out-of-fold
figures are reported (``CrossFit``).

Infeasible targets. When no policy reaches the target on the fit rows with that
support, the fit says so (``feasible`` False) and returns the most precise
operating point of the single threshold that accepts at least max(1, m) rows
(ties: more TP), in every bucket; +inf ("accept nothing") when even that has
no true positive. Inside a feasible DP a bucket may still get +inf, "accept
nothing", when that is its best choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

if TYPE_CHECKING:
    from nextbuy.config import ThresholdsConfig

# Slack tolerance (per row) so that exact-precision ties like 3 TP / 10 at p=0.3
# are not lost to float rounding in (1-p)*TP - p*FP.
_EPS = 1e-9
# Upper bound on DP scratch cells (options x TP axis) processed at once.
_DP_CHUNK_CELLS = 1 << 22
# Below every finite score: a bucket whose threshold is +inf accepts nothing out of fold.
_NEVER = 1e300


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


@dataclass(frozen=True)
class GlobalThreshold:
    """The single threshold; ``feasible`` False: the most precise point, below the target."""

    threshold: float
    feasible: bool


@dataclass(frozen=True, eq=False)
class BucketFit:
    """Per-bucket thresholds with the single threshold fitted on the same cut points."""

    thresholds: Thresholds
    feasible: bool  # the per-bucket policy reaches the target on the fit rows
    single: GlobalThreshold
    rows: np.ndarray  # fit rows per bucket
    positives: np.ndarray  # positives among them
    fallback: np.ndarray  # True: below min support, the bucket got the single threshold
    cross_fit: CrossFit | None = None  # out-of-fold check that kept (or replaced) the per-bucket policy

    @property
    def baseline(self) -> Thresholds:
        """The single threshold as a per-bucket policy (the same cut in every bucket)."""
        return Thresholds(
            thresholds=np.full(self.thresholds.n_buckets, self.single.threshold),
            target_precision=self.thresholds.target_precision,
        )

    def support(self) -> list[dict[str, Any]]:
        return [
            {"rows": int(n), "positives": int(p), "single_threshold_fallback": bool(f)}
            for n, p, f in zip(self.rows, self.positives, self.fallback, strict=True)
        ]


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold decisions of both policies over ``folds`` folds of the fit rows, and the verdict."""

    folds: int
    bucket_tp: int
    bucket_accepted: int
    single_tp: int
    single_accepted: int
    kept_per_bucket: bool  # False: every bucket got the single threshold
    per_bucket: Thresholds  # the joint fit on every row, kept or not

    @property
    def bucket_precision(self) -> float:
        return self.bucket_tp / self.bucket_accepted if self.bucket_accepted else 0.0

    @property
    def single_precision(self) -> float:
        return self.single_tp / self.single_accepted if self.single_accepted else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "kept_per_bucket": self.kept_per_bucket,
            "per_bucket_tp": self.bucket_tp,
            "per_bucket_precision": self.bucket_precision,
            "single_tp": self.single_tp,
            "single_precision": self.single_precision,
        }


def cut_points(score: np.ndarray, n_candidates: int | None) -> np.ndarray:
    """The cut points both policies choose among, ascending: every distinct score,
    or ``n_candidates`` score quantiles when there are more distinct scores than that."""
    s = np.asarray(score, dtype=np.float64)
    distinct = np.unique(s)
    if n_candidates is None or distinct.size <= n_candidates:
        return distinct
    # Data values (inverted_cdf), so each cut point is a real cut between rows.
    return np.unique(np.quantile(s, np.linspace(0.0, 1.0, n_candidates), method="inverted_cdf"))


def candidate_thresholds(
    score: np.ndarray, bucket: np.ndarray, n_buckets: int, n_candidates: int | None
) -> list[np.ndarray]:
    """Per bucket: +inf ("accept none") then, descending, the shared cut points.

    Every bucket gets the same grid as the single threshold, so "the single
    threshold in every bucket" is always a DP choice and neither policy sees a
    finer grid than the other.
    """
    grid = np.concatenate([[np.inf], cut_points(score, n_candidates)[::-1]])
    return [grid.copy() for _ in range(n_buckets)]


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


def _options(score: np.ndarray, label: np.ndarray, cands: np.ndarray):
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
    module docstring).
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


def _checked_buckets(bucket, shape: tuple[int, ...], n_buckets: int, min_bucket_positives: int) -> np.ndarray:
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
    (module docstring, "Cross-fitting"); otherwise every bucket gets the single threshold
    (``feasible`` then the single threshold's).  ``cross_fit_folds`` < 2, or a per-bucket fit that
    misses the target: the plain joint fit."""
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
