"""Exposures replayed from a store's orders, for a store that logs no impressions (pure).

Most stores export orders only. The conversion task is then *next purchase*: at each order
line of product u by customer c (time t), the products a logging policy would have shown c
for u are replayed as exposures, and an exposure of v converts when c orders v within
``attribution_days`` after it (``domain.events`` rule 3: real conversions with their real
delays, censored at the snapshot exactly as logged impressions are).

The policy (``ingest.events.replay``), declared so that every exposure has a known propensity:

- it refreshes every ``policy_refresh_days`` (a daily batch recommender): at a line of period
  p it knows the co-purchase pairs (``domain.events`` rule 2) completed before p began, so
  never the line's own moment or anything after it;
- each of ``shown_per_order`` slots shows, with probability 1 - ``explore_share``, the
  slot's rank among u's top co-purchases by count (ties: lower product id), and otherwise a
  product drawn uniformly from the products ordered before p; a slot whose rank u does not
  have is always drawn uniformly. The slot's propensity is the probability that it showed
  what it showed: (1 - e)·[v is the rank's product] + e/n, or 1/n when u has no such rank;
- an exposure of u itself, or of a product already shown at the line, is dropped;
- it is shown one second after the order (on the order's confirmation), so a line of the
  same basket is no conversion of it;
- ``order_line_share`` of the baskets (a customer's lines of one moment) are replayed, chosen
  by a seeded hash of customer and moment: a large store's exposures stay bounded.

What it means for the figures: a replayed exposure was never shown. Its "conversion" is a
purchase the customer made anyway, so the conversion model learns what customers buy next,
not the effect of showing it, and a policy that shows popular co-purchases is judged on
purchases that popularity drove. Figures on replayed exposures say so (``REPLAYED_NOTE``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.config import ReplayConfig

SHOWN_AFTER_ORDER_NS = 10**9  # one second: on the order's confirmation, after its basket
NS_PER_DAY = 86_400 * 10**9
REPLAYED_NOTE = (
    "exposures replayed from the store's orders (no impression log): each is what the declared "
    "logging policy would have shown at an order line, and its conversion is the customer's real "
    "later purchase, so figures measure next-purchase prediction, not the effect of showing"
)


@dataclass(frozen=True, eq=False)
class Replayed:
    """Replayed exposures: the impressions log (``impression_id, customer, source_id, shown_id,
    shown_at``) and, row for row, each one's slot, whether the slot explored, and its
    propensity."""

    impressions: pd.DataFrame
    policy: pd.DataFrame  # impression_id, slot, explored, propensity
    counts: dict[str, int]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each value."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _unit(key: np.ndarray) -> np.ndarray:
    """A hash as a uniform number in [0, 1)."""
    return (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def line_uniform(
    customer: np.ndarray, t_ns: np.ndarray, product: np.ndarray, k: int, seed: int, stream: int
) -> np.ndarray:
    """(lines, k) uniform numbers in [0, 1), one per line and slot, from a hash of the line
    (customer, moment, product), the slot, the seed and ``stream``: a line's exposures are the
    same whichever span is replayed (the training history or the traffic after it)."""
    with np.errstate(over="ignore"):
        line = _mix(customer.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + t_ns.astype(np.uint64))
        line = _mix(line ^ (product.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
        line = _mix(line ^ np.uint64((seed * 2 + stream) & 0xFFFFFFFFFFFFFFFF))
        slots = _mix(line[:, None] + np.arange(1, k + 1, dtype=np.uint64)[None, :])
    return _unit(slots)


def sampled_baskets(customer: np.ndarray, ordered_ns: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Which lines are replayed: whole baskets (customer x moment), ``share`` of them."""
    if share >= 1.0:
        return np.ones(len(customer), bool)
    with np.errstate(over="ignore"):
        key = _mix(customer.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + ordered_ns.astype(np.uint64))
        key = _mix(key ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    return _unit(key) < share


def top_ranked(counts: sp.csr_matrix, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k): each row's k columns of highest count (ties: lower column), -1 past the
    row's nonzeros."""
    out = np.full((len(rows), k), -1, np.int64)
    sub = counts[rows]
    if not sub.nnz:
        return out
    row = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    order = np.lexsort((sub.indices, -sub.data, row))
    row, col = row[order], sub.indices[order]
    starts = np.concatenate([[0], np.cumsum(np.diff(sub.indptr))])[:-1]
    rank = np.arange(len(row)) - starts[row]
    keep = rank < k
    out[row[keep], rank[keep]] = col[keep]
    return out


def replay(
    orders: pd.DataFrame,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_products: int,
    cfg: ReplayConfig,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    first_id: int = 0,
) -> Replayed:
    """The exposures the policy would have shown at the order lines of ``orders`` (``customer``,
    ``product``, ``ordered_at``; coded) ordered after ``since`` and up to ``until`` (None: all),
    from the co-purchase ``pairs`` (u, v, time ns: ``domain.events.co_purchase_pairs`` over all
    of ``orders``). Impression ids count from ``first_id`` in time order."""
    customer = orders["customer"].to_numpy(np.int64)
    product = orders["product"].to_numpy(np.int64)
    t_ns = orders["ordered_at"].to_numpy("datetime64[ns]").view(np.int64)
    k, explore = cfg.shown_per_order, cfg.explore_share
    empty = Replayed(
        pd.DataFrame(
            {
                "impression_id": np.zeros(0, np.int64),
                "customer": np.zeros(0, np.int64),
                "source_id": np.zeros(0, np.int64),
                "shown_id": np.zeros(0, np.int64),
                "shown_at": np.zeros(0, "datetime64[ns]"),
            }
        ),
        pd.DataFrame(
            {
                "impression_id": np.zeros(0, np.int64),
                "slot": np.zeros(0, np.int64),
                "explored": np.zeros(0, bool),
                "propensity": np.zeros(0, np.float64),
            }
        ),
        {"replayed_order_lines": 0, "replayed_exposures": 0},
    )
    if not len(t_ns):
        return empty
    period_ns = round(cfg.policy_refresh_days * NS_PER_DAY)
    origin = (int(t_ns.min()) // NS_PER_DAY) * NS_PER_DAY
    # the products ordered before each moment, in order of their first order
    first = pd.Series(t_ns).groupby(product).min()
    by_first = first.sort_values(kind="stable")
    known_ids, known_ns = by_first.index.to_numpy(np.int64), by_first.to_numpy(np.int64)

    lines = sampled_baskets(customer, t_ns, cfg.order_line_share, cfg.seed)
    if since is not None:
        lines &= t_ns > pd.Timestamp(since).value
    if until is not None:
        lines &= t_ns <= pd.Timestamp(until).value
    at = np.flatnonzero(lines)
    at = at[np.lexsort((product[at], customer[at], t_ns[at]))]
    if not len(at):
        return empty
    line_period = (t_ns[at] - origin) // period_ns

    u, v, pair_ns = pairs
    pair_order = np.argsort(pair_ns, kind="stable")
    u, v, pair_ns = u[pair_order], v[pair_order], pair_ns[pair_order]
    counts = sp.csr_matrix((n_products, n_products), dtype=np.float64)
    added = 0
    shown = np.full((len(at), k), -1, np.int64)
    propensity = np.zeros((len(at), k))
    explored = np.zeros((len(at), k), bool)
    bounds = np.flatnonzero(np.concatenate([[True], line_period[1:] != line_period[:-1], [True]]))
    for lo, hi in itertools.pairwise(bounds.tolist()):
        start = origin + int(line_period[lo]) * period_ns
        upto = int(np.searchsorted(pair_ns, start, side="left"))
        if upto > added:  # pairs completed since the last refresh join the counts
            chunk = sp.csr_matrix(
                (np.ones(upto - added), (u[added:upto], v[added:upto])), shape=(n_products, n_products)
            )
            counts = counts + chunk
            added = upto
        n_known = int(np.searchsorted(known_ns, start, side="left"))
        if n_known == 0:
            continue  # nothing ordered before: the policy has nothing to show
        top = top_ranked(counts, product[at[lo:hi]], k)
        rows = at[lo:hi]
        draws = line_uniform(customer[rows], t_ns[rows], product[rows], k, cfg.seed, 0) < explore
        pick = line_uniform(customer[rows], t_ns[rows], product[rows], k, cfg.seed, 1)
        uniform = known_ids[np.minimum((pick * n_known).astype(np.int64), n_known - 1)]
        has_top = top >= 0
        use_top = has_top & ~draws
        shown[lo:hi] = np.where(use_top, top, uniform)
        explored[lo:hi] = ~use_top
        hit_top = has_top & (shown[lo:hi] == top)
        propensity[lo:hi] = np.where(has_top, (1.0 - explore) * hit_top + explore / n_known, 1.0 / n_known)

    line = np.repeat(np.arange(len(at)), k)
    slot = np.tile(np.arange(k), len(at))
    shown_flat = shown.ravel()
    keep = (shown_flat >= 0) & (shown_flat != product[at][line])
    frame = pd.DataFrame({"line": line[keep], "shown": shown_flat[keep], "slot": slot[keep]})
    keep_rows = ~frame.duplicated(["line", "shown"], keep="first").to_numpy()
    rows = np.flatnonzero(keep)[keep_rows]
    line, slot = line[rows], slot[rows]
    ids = first_id + np.arange(len(rows), dtype=np.int64)
    impressions = pd.DataFrame(
        {
            "impression_id": ids,
            "customer": customer[at][line],
            "source_id": product[at][line],
            "shown_id": shown_flat[rows],
            "shown_at": (t_ns[at][line] + SHOWN_AFTER_ORDER_NS).view("datetime64[ns]"),
        }
    )
    policy = pd.DataFrame(
        {
            "impression_id": ids,
            "slot": slot.astype(np.int64),
            "explored": explored.ravel()[rows],
            "propensity": propensity.ravel()[rows],
        }
    )
    counts_out = {"replayed_order_lines": len(at), "replayed_exposures": len(rows)}
    return Replayed(impressions, policy, counts_out)
