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

from nextbuy.domain.decisions.crossfit import cross_fitted_bucket_thresholds
from nextbuy.domain.decisions.curves import pr_curve_table, precision_recall
from nextbuy.domain.decisions.fit import cut_points, fit_bucket_thresholds, fit_global_threshold
from nextbuy.domain.decisions.policy import BucketFit, CrossFit, GlobalThreshold, Thresholds

__all__ = [
    "BucketFit",
    "CrossFit",
    "GlobalThreshold",
    "Thresholds",
    "cross_fitted_bucket_thresholds",
    "cut_points",
    "fit_bucket_thresholds",
    "fit_global_threshold",
    "pr_curve_table",
    "precision_recall",
]
