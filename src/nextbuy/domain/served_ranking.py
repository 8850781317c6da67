"""Which order the served top-K follows, chosen out of fold: the model's own (calibrated
probability, as served) or a count ranking of what the store bought (co-purchase counts
u -> v, or popularity).

On a real store the model's embedding does not always beat counting (on grocery-like
baskets popularity is hard to beat). The calibrate stage therefore ranks every product for
the source u of held-out purchases u -> v by each ranking and measures Hits@k of v. The
purchases are the next purchases of the calibration split's sessions (u's key, the day of
u's order), rows the model's head never trained on; a store ingested without order lines
offers only its bought exposures, which lean towards what its logging policy showed. A count
ranking is served only when it beats the model's by more than its paired confidence
interval; the choice, the hit rates and the gaps go to the calibrate metrics and the model
card.

Leave-one-out: the counts at the snapshot hold each evaluated purchase itself (its pair
u -> v and v's line), so v's own count is lowered by one when v is ranked; the other
products keep theirs. The model's graph holds the same pairs as edges and is not refitted,
so the comparison leans towards the model: a count ranking is served only where it wins
beyond that.

Co-purchase counts are smoothed towards popularity: v scores c(u, v) + a * p(v), where p is
popularity as a share and a (``prior``, in pseudo-counts) is chosen from a declared grid on the
same purchases, cross-fitted (each fold's hits come from the prior best on the other folds), so
the gap that decides is measured out of fold. a = 0 is plain item-to-item counting; a large a
ranks by popularity wherever u's counts are few: a source with many co-purchases is ranked by
them, one with few falls back to what sells.

The count tables (:class:`CountTables`) are served with the model, so the top-K of a model
whose ranking is a count ranking is ranked by those counts (the pair columns still come
from the model: score, uncertainty, bucket, calibrated probability, decision).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from nextbuy.domain.graph.scoring import all_targets_logit_moments, serving_score
from nextbuy.domain.uncertainty import BucketCalibration, assign_buckets

Ranker = Literal["model", "co_purchase", "popularity"]
RANKERS: tuple[Ranker, ...] = ("model", "co_purchase", "popularity")
COUNT_RANKERS: tuple[Ranker, ...] = ("co_purchase", "popularity")
# Weight of popularity when it breaks ties between equal co-purchase counts: below any count step.
TIEBREAK = 1e-3
RANK_CELLS = 1 << 22  # sources x products ranked at once: bounds memory (~40 B a cell)


@dataclass(frozen=True, eq=False)  # eq=False: array fields
class CountTables:
    """What the store bought, known at the snapshot: pairs u -> v counted (CSR rows by u),
    each product's popularity (the pairs it is part of, either side), and the popularity
    prior that smooths co-purchase scores (pseudo-counts; 0: none)."""

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [pairs]: v, by u
    counts: np.ndarray  # float32 [pairs]
    popularity: np.ndarray  # float64 [n]
    prior: float = 0.0

    @property
    def n_products(self) -> int:
        return len(self.popularity)

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_products: int) -> CountTables:
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        weight = np.asarray(weight, dtype=np.float64)
        order = np.lexsort((dst, src))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n_products))]).astype(np.int64)
        popularity = np.bincount(src, weight, n_products) + np.bincount(dst, weight, n_products)
        return cls(indptr, dst[order].astype(np.int32), weight[order].astype(np.float32), popularity)

    def with_prior(self, prior: float) -> CountTables:
        return dataclasses.replace(self, prior=float(prior))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "indptr": self.indptr,
            "indices": self.indices,
            "counts": self.counts,
            "popularity": self.popularity,
            "prior": np.asarray(self.prior, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> CountTables:
        return cls(
            indptr=np.asarray(arrays["indptr"]),
            indices=np.asarray(arrays["indices"]),
            counts=np.asarray(arrays["counts"]),
            popularity=np.asarray(arrays["popularity"]),
            prior=float(np.asarray(arrays["prior"])),
        )

    def check(self) -> str | None:
        """What is inconsistent in the tables (None: nothing)."""
        n = len(self.popularity)
        if len(self.indptr) != n + 1 or self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
            return f"indptr is not a row pointer of {n} products"
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.counts):
            return "indptr, indices and counts disagree in length"
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            return f"a product id outside [0, {n})"
        if not (np.isfinite(self.counts).all() and np.isfinite(self.popularity).all()):
            return "a count is not finite"
        if not (np.isfinite(self.prior) and self.prior >= 0):
            return f"prior {self.prior} is not a count >= 0"
        return None

    def popularity_weight(self) -> float:
        """What one unit of popularity adds to a co-purchase score: ``prior`` pseudo-counts
        spread by popularity share, plus a tie-break below one count step."""
        total = self.popularity.sum()
        share = self.prior / total if total > 0 else 0.0
        return share + TIEBREAK / (self.popularity.max(initial=0.0) + 1.0)

    def popularity_term(self) -> np.ndarray:
        """Each product's popularity term in its co-purchase score."""
        return self.popularity * self.popularity_weight()

    def scores(self, ranker: Ranker, sources: np.ndarray) -> np.ndarray:
        """Scores [len(sources), n] of every product for each source by ``ranker`` (a source
        id >= n, one the tables never saw, gets popularity alone)."""
        sources = np.asarray(sources, dtype=np.int64)
        n = self.n_products
        if ranker == "popularity":
            return np.broadcast_to(self.popularity, (len(sources), n)).copy()
        out = np.broadcast_to(self.popularity_term(), (len(sources), n)).copy()
        known = np.flatnonzero(sources < n)
        starts, ends = self.indptr[sources[known]], self.indptr[sources[known] + 1]
        lengths = ends - starts
        rows = np.repeat(known, lengths)
        at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        out[rows, self.indices[at]] += self.counts[at]
        return out

    @functools.cached_property
    def pair_keys(self) -> np.ndarray:
        """Each stored pair as one key u * n + v, sorted (rows by u, then v): built once,
        searched by every :meth:`pair_count`."""
        n = self.n_products
        return np.repeat(np.arange(n, dtype=np.int64), np.diff(self.indptr)) * n + self.indices

    def pair_count(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The count of each pair u -> v (0 where never bought)."""
        u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
        keys = self.pair_keys
        wanted = u * self.n_products + v
        at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = (at < len(keys)) & (keys[at] == wanted) if len(keys) else np.zeros(len(u), dtype=bool)
        return np.where(found, self.counts[at] if len(keys) else 0.0, 0.0).astype(np.float64)

    def pair_scores(self, ranker: Ranker, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The score of each v for its source u by ``ranker``: the cell (u, v) of :meth:`scores`
        without building the rows."""
        v = np.asarray(v, dtype=np.int64)
        if ranker == "popularity":
            return self.popularity[v].astype(np.float64)
        return self.pair_count(u, v) + self.popularity_term()[v]

    def top_k(self, ranker: Ranker, sources: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
        """The k best product ids [len(sources), k] for each source by ``ranker``."""
        sources = np.asarray(sources, dtype=np.int64)
        n = self.n_products
        step = max(1, RANK_CELLS // max(n, 1))
        parts = []
        for a in range(0, len(sources), step):
            src = sources[a : a + step]
            s = self.scores(ranker, src)
            if exclude_self:
                known = np.flatnonzero(src < n)
                s[known, src[known]] = -np.inf
            top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(src), 1))
            order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
            parts.append(np.take_along_axis(top, order, axis=1))
        return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


PairRows = Callable[[np.ndarray, np.ndarray], np.ndarray]


def ranks_by(score_rows: PairRows, u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """The rank (1 = first) of v among every product but u for source u, by ``score_rows``
    ((sources, targets) -> scores [len, n]; the targets let a leave-one-out scorer lower the
    evaluated purchase's own count); ties count half."""
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    ranks = np.empty(len(u))
    step = max(1, RANK_CELLS // max(n, 1))
    for a in range(0, len(u), step):
        su, sv = u[a : a + step], v[a : a + step]
        s = np.asarray(score_rows(su, sv), dtype=np.float64)
        rows = np.arange(len(su))
        s[rows, su] = -np.inf  # never recommend u for u
        target = s[rows, sv][:, None]
        above = (s > target).sum(axis=1)
        tied = (s == target).sum(axis=1) - 1
        ranks[a : a + step] = above + 1 + tied / 2
    return ranks


def leave_one_out(tables: CountTables, ranker: Ranker) -> PairRows:
    """Count scores for (u, v) purchases with v's own count lowered by one: the purchase being
    ranked takes no part in the counts it is ranked by."""

    def rows(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        s = tables.scores(ranker, u)
        i = np.arange(len(u))
        own = np.maximum(tables.popularity[v] - 1.0, 0.0)
        if ranker == "popularity":
            s[i, v] = own
        else:  # as CountTables.popularity_term computes it, so equal popularity ties exactly
            s[i, v] = np.maximum(tables.pair_count(u, v) - 1.0, 0.0) + own * tables.popularity_weight()
        return s

    return rows


def model_rows(moments: Mapping[str, np.ndarray], calibration: BucketCalibration) -> PairRows:
    """The model's served order of every product for each source: calibrated probability,
    score breaking ties between isotonic steps (``retrieval.ranking_key`` without the
    decision, whose thresholds are fitted after calibration; ``domain.retrieval`` holds the
    served key)."""
    n = moments["t_mean"].shape[0]

    def rows(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        score, uncertainty = serving_score(*all_targets_logit_moments(moments, u, n))
        prob = calibration.predict_in_bucket(score, assign_buckets(uncertainty, calibration.edges))
        return prob * 2.0 + score * 1e-6

    return rows


@dataclass(frozen=True)
class Gap:
    """Paired Hits@k of a count ranking minus the model's, with its normal CI."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class RankingChoice:
    """The served ranking and the evidence for it."""

    served: Ranker
    k: int
    rows: int  # next purchases ranked
    hits: dict[str, float]  # Hits@k of each ranking on them (co-purchase: cross-fitted prior)
    gaps: dict[str, Gap]  # each count ranking minus the model's
    confidence: float
    reason: str
    judged_on: str  # what the held-out purchases are
    prior: float = 0.0  # popularity pseudo-counts of co-purchase scores (best on every row)
    prior_hits: dict[str, float] = dataclasses.field(default_factory=dict)  # Hits@k by prior

    def to_dict(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "k": self.k,
            "rows": self.rows,
            "hits": self.hits,
            "gaps": {name: vars(gap) for name, gap in self.gaps.items()},
            "confidence": self.confidence,
            "reason": self.reason,
            "judged_on": self.judged_on,
            "prior": self.prior,
            "prior_hits": self.prior_hits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankingChoice:
        return cls(
            served=d["served"],
            k=int(d["k"]),
            rows=int(d["rows"]),
            hits={k: float(v) for k, v in d["hits"].items()},
            gaps={k: Gap(**v) for k, v in d["gaps"].items()},
            confidence=float(d["confidence"]),
            reason=str(d["reason"]),
            judged_on=str(d["judged_on"]),
            prior=float(d["prior"]),
            prior_hits={k: float(v) for k, v in d["prior_hits"].items()},
        )


def choose(
    hits: dict[str, np.ndarray],
    k: int,
    confidence: float,
    judged_on: str,
    prior: float = 0.0,
    prior_hits: dict[str, float] | None = None,
) -> RankingChoice:
    """The served ranking from per-row hits (0/1 for each ranking, same rows): the model's,
    unless a count ranking's paired gap over it has its whole CI above zero; of several such,
    the one with the most hits. ``prior`` is co-purchase's popularity prior (its hits were
    measured with priors chosen out of fold), ``prior_hits`` each prior's Hits@k."""
    model = np.asarray(hits["model"], dtype=np.float64)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    gaps: dict[str, Gap] = {}
    for name in COUNT_RANKERS:
        if name not in hits:
            continue
        d = np.asarray(hits[name], dtype=np.float64) - model
        half = z * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
        gaps[name] = Gap(float(d.mean()), float(d.mean() - half), float(d.mean() + half))
    means = {name: float(np.mean(h)) if len(h) else 0.0 for name, h in hits.items()}
    winners = [name for name in COUNT_RANKERS if name in gaps and gaps[name].low > 0]
    served: Ranker
    if winners:
        served = max(winners, key=lambda name: means[name])
        g = gaps[served]
        smoothed = (
            f" smoothed by {prior:g} popularity pseudo-counts" if served == "co_purchase" and prior else ""
        )
        reason = (
            f"{served.replace('_', '-')}{smoothed} ranked the held-out purchases better than the model: "
            f"Hits@{k} {means[served]:.4f} vs {means['model']:.4f}, gap {g.mean:+.4f} "
            f"({confidence:.0%} CI [{g.low:+.4f}, {g.high:+.4f}]) over {len(model)} purchases"
        )
    else:
        served = "model"
        reason = f"no count ranking beat the model beyond its CI on {len(model)} held-out purchases"
        if gaps:
            best = max(gaps, key=lambda name: gaps[name].mean)
            g = gaps[best]
            reason += (
                f" (best: {best.replace('_', '-')}, gap {g.mean:+.4f}, CI [{g.low:+.4f}, {g.high:+.4f}])"
            )
    return RankingChoice(
        served,
        k,
        len(model),
        means,
        gaps,
        confidence,
        reason,
        judged_on,
        float(prior),
        dict(prior_hits or {}),
    )


def cross_fit_prior(
    hits_by_prior: Mapping[float, np.ndarray], folds: int, seed: int
) -> tuple[float, np.ndarray]:
    """The prior with the most hits over every row (ties: the smaller), and each row's hit
    under the prior chosen on the other folds: an out-of-fold measure of choosing the prior
    from the grid, so that choosing among many priors does not flatter the gap to the model."""
    priors = sorted(hits_by_prior)
    table = np.vstack([np.asarray(hits_by_prior[p], dtype=np.float64) for p in priors])
    rows = table.shape[1]
    best = priors[int(np.argmax(table.sum(axis=1)))]
    if folds < 2 or rows < folds:
        return best, table[priors.index(best)]
    fold = np.random.default_rng(seed).permutation(rows) % folds
    out = np.empty(rows)
    for f in range(folds):
        held = fold == f
        out[held] = table[int(np.argmax(table[:, ~held].sum(axis=1))), held]
    return best, out


@dataclass(frozen=True)
class ChoiceSettings:
    """How the served order is chosen (``calibrate.served_ranking`` in params.yaml)."""

    k: int  # Hits@k decides
    confidence: float  # a count ranking is served when its gap's CI is above zero
    priors: tuple[float, ...] = (0.0,)  # co-purchase's popularity pseudo-counts tried
    folds: int = 5  # the prior's choice cross-fitted over these
    seed: int = 0


def choose_served(
    u: np.ndarray,
    v: np.ndarray,
    moments: Mapping[str, np.ndarray],
    calibration: BucketCalibration,
    tables: CountTables,
    settings: ChoiceSettings,
    judged_on: str,
) -> RankingChoice:
    """Rank v among every product for source u by the model and by each count ranking
    (leave-one-out; co-purchase with each prior, cross-fitted), and :func:`choose` on their
    Hits@k; ``judged_on`` says what the purchases (u, v) are."""
    k, confidence = settings.k, settings.confidence
    if len(u) < 2:
        reason = f"{len(u)} held-out purchase(s): too few to judge, the model's order is served"
        return RankingChoice("model", k, len(u), {}, {}, confidence, reason, judged_on)
    n = tables.n_products
    hits = {"model": ranks_by(model_rows(moments, calibration), u, v, n) <= k}
    hits["popularity"] = ranks_by(leave_one_out(tables, "popularity"), u, v, n) <= k
    by_prior = {
        float(p): ranks_by(leave_one_out(tables.with_prior(p), "co_purchase"), u, v, n) <= k
        for p in settings.priors
    }
    prior, hits["co_purchase"] = cross_fit_prior(by_prior, settings.folds, settings.seed)
    prior_hits = {f"{p:g}": float(np.mean(h)) for p, h in sorted(by_prior.items())}
    return choose(hits, k, confidence, judged_on, prior, prior_hits)
