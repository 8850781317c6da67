"""A store's raw logs to the directed co-purchase graph and labelled impressions (pure).

This is the whole of what ``ingest.source: events`` decides; the reader
(``nextbuy.data.sources.events``) only parses, validates and codes the files. The one
entry point, :func:`build_from_logs`, takes plain frames and returns plain frames; the two rules
that go over every row (2 and 3, both per customer) are :class:`Builders` it is given, so another
engine runs them (``nextbuy.engines.spark.events``: these functions per bucket of customers) and
is tested against these.

Inputs (ids are already coded as non-negative integers; times are naive UTC
``datetime64[ns]``; row order does not matter):

- ``orders``: ``customer`` (int64), ``product`` (int64, a product_id), ``ordered_at``;
  one row per order line (returns and duplicates already cleaned by the reader);
- ``impressions``: ``impression_id`` (int64, unique), ``customer`` (int64), ``source_id`` (the
  product the recommendation was shown for), ``shown_id`` (the product shown), ``shown_at``;
- ``interactions``: ``customer``, ``product``, ``kind`` (``"click"`` or ``"cart"``), ``at``;
  may be empty (a store that logs neither);
- ``cfg``: ``ingest.events`` (the rule knobs below), ``snapshot``: the end of what is known.

The rules (each a knob of ``ingest.events``):

1. **Snapshot.** Rows after ``snapshot`` do not exist yet: later orders, interactions and
   impressions are dropped (``impressions_after_snapshot_dropped`` counts the last), so an
   impression whose conversion comes after the snapshot stays unlabelled (censored) for
   ``label_delay`` to correct.
2. **Graph.** ``u -> v`` when a customer orders ``v`` strictly after ``u`` and within
   ``graph_window_days``, among the customer's ``graph_lookback_orders`` previous order lines
   (order lines of the same moment, one basket, are not "after" each other; a product bought
   again is no edge). ``weight`` = the number of such pairs over all customers, ``time`` =
   when the first was seen (the later order of the first pair).
3. **Attribution.** An impression's ``converted_at`` is the first order of the shown product
   by the same customer at or after ``shown_at`` and within ``attribution_days``;
   ``clicked_at`` and ``carted_at`` likewise the first click and cart, counted only up to the
   conversion (a conversion ends the funnel). Each impression is attributed on its own: one
   order may convert two impressions of the same product to the same customer.

Outputs: ``edges`` (``schemas.EDGES``: src, dst, weight, time; sorted by src, dst),
``impressions`` (``schemas.IMPRESSIONS_LOG`` columns, in the input's order, NaT = no event)
and ``counts`` (sizes and what the snapshot dropped, for ``metrics/ingest.json``).
Everything is vectorised: sorts, shifted comparisons and one running minimum per event kind.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from nextbuy.config import EventsConfig, ReplayConfig
from nextbuy.domain import replay as exposures

NS_PER_DAY = 86_400 * 10**9
NAT = np.iinfo(np.int64).min  # NaT as int64
INTERACTION_KINDS = ("click", "cart")
ORDER_COLUMNS = ("customer", "product", "ordered_at")
IMPRESSION_COLUMNS = ("impression_id", "customer", "source_id", "shown_id", "shown_at")
INTERACTION_COLUMNS = ("customer", "product", "kind", "at")
LOG_COLUMNS = (
    "impression_id",
    "source_id",
    "shown_id",
    "shown_at",
    "clicked_at",
    "carted_at",
    "converted_at",
)


@dataclass(frozen=True, eq=False)
class BuiltLogs:
    edges: pd.DataFrame  # src, dst, weight, time (schemas.EDGES)
    impressions: pd.DataFrame  # LOG_COLUMNS (schemas.IMPRESSIONS_LOG)
    counts: dict[str, int]
    # replayed exposures (no impression log): each one's slot, exploration and propensity
    policy: pd.DataFrame | None = None


def _ns(times: pd.Series) -> np.ndarray:
    return times.to_numpy("datetime64[ns]").view(np.int64)


def _times(ns: np.ndarray) -> np.ndarray:
    return ns.view("datetime64[ns]")


def co_purchase_edges(
    customer: np.ndarray, product: np.ndarray, ordered_ns: np.ndarray, window_ns: int, lookback: int
) -> tuple[pd.DataFrame, int]:
    """The directed graph of rule 2 from order lines, and how many pairs made it."""
    u, v, first_ns = co_purchase_pairs(customer, product, ordered_ns, window_ns, lookback)
    return _merged_pairs(u, v, first_ns), len(u)


def co_purchase_pairs(
    customer: np.ndarray, product: np.ndarray, ordered_ns: np.ndarray, window_ns: int, lookback: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rule 2: (u, v, the later order's time in ns), one per pair of lines."""
    pairs = timed_pairs(customer, product, ordered_ns, window_ns, lookback)
    return pairs.u, pairs.v, pairs.later_ns


class PairLines(NamedTuple):
    """Pairs of rule 2, one per pair of order lines."""

    customer: np.ndarray
    u: np.ndarray
    v: np.ndarray
    earlier_ns: np.ndarray  # u's order time
    later_ns: np.ndarray  # v's order time


def timed_pairs(
    customer: np.ndarray, product: np.ndarray, ordered_ns: np.ndarray, window_ns: int, lookback: int
) -> PairLines:
    """Every pair of rule 2 with its customer and both order times (ns)."""
    order = np.lexsort((ordered_ns, customer))
    c, p, t = customer[order], product[order], ordered_ns[order]
    parts: list[tuple[np.ndarray, ...]] = []
    for lag in range(1, min(lookback, max(len(c) - 1, 0)) + 1):
        gap = t[lag:] - t[:-lag]
        pair = (c[lag:] == c[:-lag]) & (gap > 0) & (gap <= window_ns) & (p[lag:] != p[:-lag])
        parts.append((c[lag:][pair], p[:-lag][pair], p[lag:][pair], t[:-lag][pair], t[lag:][pair]))
    if not parts:
        return PairLines(*(np.zeros(0, np.int64) for _ in range(5)))
    return PairLines(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def rule2_arguments(orders: pd.DataFrame, cfg: EventsConfig) -> tuple:
    """(customer, product, order time ns, window ns, lookback): what rule 2 reads of ``orders``."""
    return (
        orders["customer"].to_numpy(np.int64),
        orders["product"].to_numpy(np.int64),
        _ns(orders["ordered_at"]),
        round(cfg.graph_window_days * NS_PER_DAY),
        cfg.graph_lookback_orders,
    )


def next_purchases(orders: pd.DataFrame, cfg: EventsConfig) -> pd.DataFrame:
    """The next purchases u -> v of rule 2 in ``orders`` (one row per pair of lines), with the
    customer and u's order time (the session (u, its day) they belong to)."""
    pairs = timed_pairs(*rule2_arguments(orders, cfg))
    return pd.DataFrame(
        {
            "customer": pairs.customer,
            "source_id": pairs.u,
            "next_id": pairs.v,
            "ordered_at": _times(pairs.earlier_ns),
        }
    )


def _merged_pairs(u: np.ndarray, v: np.ndarray, t_ns: np.ndarray) -> pd.DataFrame:
    """One edge per (u, v): weight = pairs, time = the first one's."""
    key = (u.astype(np.int64) << 32) | v.astype(np.int64)
    order = np.lexsort((t_ns, key))
    key, t_ns = key[order], t_ns[order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else key
    counts = np.diff(np.concatenate([first, [len(key)]]))
    unique = key[first]
    return pd.DataFrame(
        {
            "src": (unique >> 32).astype(np.int64),
            "dst": (unique & 0xFFFFFFFF).astype(np.int64),
            "weight": counts.astype(np.float64),
            "time": _times(t_ns[first].astype(np.int64)),
        }
    )


CHUNK_KEYS = 8_000_000  # impressions per pass of first_event_after: bounds its sort's memory


def first_event_after(
    imp_key: np.ndarray,
    imp_ns: np.ndarray,
    ev_key: np.ndarray,
    ev_ns: np.ndarray,
    window_ns: int,
    chunk: int = CHUNK_KEYS,
) -> np.ndarray:
    """Per impression, the time (ns) of the first event with its key at or after its time and
    within ``window_ns``; ``NAT`` where there is none.

    More than ``chunk`` impressions are split into key ranges of about that many, each
    joined with the events of its range alone, so memory follows the chunk, not the log.
    """
    if len(imp_key) <= chunk or not len(ev_key):
        return _first_event_after(imp_key, imp_ns, ev_key, ev_ns, window_ns)
    parts = -(-len(imp_key) // chunk)
    inner = np.quantile(imp_key, np.linspace(0, 1, parts + 1)[1:-1]).astype(np.int64)
    bounds = [np.iinfo(np.int64).min, *np.unique(inner).tolist(), np.iinfo(np.int64).max]
    out = np.full(len(imp_key), NAT, np.int64)
    for lo, hi in itertools.pairwise(bounds):  # keys in [lo, hi), the last hi included
        last = hi == bounds[-1]
        rows = np.flatnonzero((imp_key >= lo) & ((imp_key <= hi) if last else (imp_key < hi)))
        events = np.flatnonzero((ev_key >= lo) & ((ev_key <= hi) if last else (ev_key < hi)))
        out[rows] = _first_event_after(imp_key[rows], imp_ns[rows], ev_key[events], ev_ns[events], window_ns)
    return out


def _first_event_after(
    imp_key: np.ndarray, imp_ns: np.ndarray, ev_key: np.ndarray, ev_ns: np.ndarray, window_ns: int
) -> np.ndarray:
    """:func:`first_event_after` in one pass: one sort of impressions and events together by
    (key, time), impressions first at equal time, then a running minimum from the end gives
    each position the next event's position."""
    if not len(imp_key):
        return np.zeros(0, np.int64)
    if not len(ev_key):
        return np.full(len(imp_key), NAT, np.int64)
    n_imp = len(imp_key)
    base = min(int(imp_ns.min()), int(ev_ns.min()))
    # time relative to the earliest, doubled, + 1 for an event: impressions sort first at a tie
    rank = np.concatenate([(imp_ns - base) * 2, (ev_ns - base) * 2 + 1])
    keys = np.concatenate([imp_key, ev_key])
    order = np.lexsort((rank, keys))
    del rank
    keys = keys[order]
    is_event = order >= n_imp
    position = np.where(is_event, np.arange(len(order)), len(order))
    following = np.minimum.accumulate(position[::-1])[::-1]
    del position
    at = np.flatnonzero(~is_event)  # sorted positions of the impressions
    nxt = following[at]
    del following, is_event
    found = nxt < len(order)
    nxt = np.where(found, nxt, 0)
    found &= keys[nxt] == keys[at]
    del keys
    imp_row = order[at]
    event_ns = ev_ns[np.where(found, order[nxt] - n_imp, 0)]
    del order, nxt, at
    found &= event_ns - imp_ns[imp_row] <= window_ns
    out = np.full(n_imp, NAT, np.int64)
    out[imp_row] = np.where(found, event_ns, NAT)
    return out


def _before(times: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """``times`` kept where no later than ``limit`` (NAT limit: no limit)."""
    keep = (times == NAT) | (limit == NAT) | (times <= limit)
    return np.where(keep, times, NAT)


def attribute(
    impressions: pd.DataFrame,
    orders: pd.DataFrame,
    interactions: pd.DataFrame,
    n_products: int,
    window_ns: int,
) -> pd.DataFrame:
    """Rule 3: the impressions with their clicked_at, carted_at and converted_at."""
    n = max(int(n_products), 1)
    imp_key = impressions["customer"].to_numpy(np.int64) * n + impressions["shown_id"].to_numpy(np.int64)
    imp_ns = _ns(impressions["shown_at"])

    def first(events: pd.DataFrame, time_column: str) -> np.ndarray:
        key = events["customer"].to_numpy(np.int64) * n + events["product"].to_numpy(np.int64)
        return first_event_after(imp_key, imp_ns, key, _ns(events[time_column]), window_ns)

    converted = first(orders, "ordered_at")
    kind = interactions["kind"]
    clicked = _before(first(interactions[(kind == "click").to_numpy()], "at"), converted)
    carted = _before(first(interactions[(kind == "cart").to_numpy()], "at"), converted)
    return pd.DataFrame(
        {
            "impression_id": impressions["impression_id"].to_numpy(np.int64),
            "source_id": impressions["source_id"].to_numpy(np.int64),
            "shown_id": impressions["shown_id"].to_numpy(np.int64),
            "shown_at": _times(imp_ns),
            "clicked_at": _times(clicked),
            "carted_at": _times(carted),
            "converted_at": _times(converted),
        },
        copy=False,
    )


def replayed_exposures(
    orders: pd.DataFrame, n_products: int, cfg: EventsConfig, replay: ReplayConfig
) -> exposures.Replayed:
    """The exposures ``domain.replay`` replays at the order lines of ``orders``, from the
    co-purchase pairs of rule 2 over them."""
    every_pair = co_purchase_pairs(*rule2_arguments(orders, cfg))
    return exposures.replay(orders, every_pair, n_products, replay)


@dataclass(frozen=True)
class Builders:
    """What computes rules 2 and 3 (both per customer): :func:`co_purchase_edges` and
    :func:`attribute` here, or another engine's functions with their signatures and answers
    (``nextbuy.engines.spark.events``)."""

    edges: Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], tuple[pd.DataFrame, int]] = (
        co_purchase_edges
    )
    attribute: Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, int, int], pd.DataFrame] = attribute


def build_from_logs(
    orders: pd.DataFrame,
    impressions: pd.DataFrame,
    interactions: pd.DataFrame,
    n_products: int,
    cfg: EventsConfig,
    snapshot: pd.Timestamp,
    builders: Builders = Builders(),  # frozen: one shared default is safe
    replay: ReplayConfig | None = None,
) -> BuiltLogs:
    """The graph and the labelled impressions of a store's coded logs (see the module's rules),
    rules 2 and 3 computed by ``builders``. ``replay``: the store logs no impressions; its
    exposures are replayed from its orders up to the snapshot (``domain.replay``)."""
    end = pd.Timestamp(snapshot).value
    seen = _ns(orders["ordered_at"]) <= end
    orders = orders if seen.all() else orders[seen]
    seen = _ns(interactions["at"]) <= end
    interactions = interactions if seen.all() else interactions[seen]
    later = _ns(impressions["shown_at"]) > end
    if later.any():  # a copy of the log only when the snapshot cuts it
        impressions = impressions[~later]
    edges, pairs = builders.edges(
        orders["customer"].to_numpy(np.int64),
        orders["product"].to_numpy(np.int64),
        _ns(orders["ordered_at"]),
        round(cfg.graph_window_days * NS_PER_DAY),
        cfg.graph_lookback_orders,
    )
    policy = None
    replay_counts: dict[str, int] = {}
    if replay is not None:
        replayed = replayed_exposures(orders, n_products, cfg, replay)
        impressions, policy, replay_counts = replayed.impressions, replayed.policy, replayed.counts
    labelled = builders.attribute(
        impressions, orders, interactions, n_products, round(cfg.attribution_days * NS_PER_DAY)
    )
    counts = {
        "orders": len(orders),
        "co_purchase_pairs": pairs,
        "edges_kept": len(edges),
        "impressions_after_snapshot_dropped": int(later.sum()),
        "conversions_attributed": int(labelled["converted_at"].notna().sum()),
    } | replay_counts
    return BuiltLogs(edges, labelled, counts, policy)
