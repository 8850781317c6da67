"""What the delay model reads: the signals observed of each impression at a time (label,
elapsed days, engagement) and the pair features of a (source, shown) pair from the catalogue and
the co-purchase graph (see nextbuy.domain.delay)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nextbuy.constants import DELAY_PAIR_FEATURES
from nextbuy.domain.timeunits import DAY

ENGAGEMENT = ("clicked", "carted", "engagement_lag")


FEATURES = DELAY_PAIR_FEATURES


SIGNALS = ENGAGEMENT + FEATURES


def observed_signals(impressions: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """What is known of each impression at time ``at`` (a snapshot, or "now" for new
    traffic), from its event timestamps, on ``impressions``' index:

    * ``elapsed_days`` since shown (>= 0) and the observed ``label`` (converted so far);
    * ``delay_days`` from shown to an observed conversion (NaN otherwise);
    * the ``clicked`` / ``carted`` flags;
    * ``engaged_days``: from shown to the last click or cart seen by ``at`` (and not after the
      conversion), 0 without one: where the delay clock starts (:func:`waited_days`);
    * ``engagement_lag``: log(1 + that time in hours), the signal the delay model sees.

    Events are taken as recorded: a log censored at ``at`` has no later event.
    """
    shown = impressions["shown_at"]
    converted = impressions["converted_at"]
    clicked, carted = impressions["clicked_at"], impressions["carted_at"]
    cutoff = converted.fillna(pd.Timestamp(at)).clip(upper=pd.Timestamp(at))
    engaged_at = pd.concat(
        [shown, clicked.where(clicked <= cutoff), carted.where(carted <= cutoff)], axis=1
    ).max(axis=1)
    engaged_days = ((engaged_at - shown) / DAY).clip(lower=0.0).to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "elapsed_days": ((at - shown) / DAY).clip(lower=0.0).to_numpy(dtype=float),
            "label": converted.notna().to_numpy().astype(np.int8),
            "delay_days": ((converted - shown) / DAY).to_numpy(dtype=float),
            "clicked": clicked.notna().to_numpy().astype(np.int8),
            "carted": carted.notna().to_numpy().astype(np.int8),
            "engaged_days": engaged_days,
            "engagement_lag": np.log1p(24.0 * engaged_days),
        },
        index=impressions.index,
    )


def _engaged_offset(signals: pd.DataFrame) -> np.ndarray:
    # Signals without engagement times (a log of clicks only) start the clock when shown.
    if "engaged_days" not in signals:
        return np.zeros(len(signals))
    offset = signals["engaged_days"].to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(offset)) or np.any(offset < 0):
        raise ValueError("engaged_days must be finite and >= 0")
    return offset


def waited_days(signals: pd.DataFrame) -> np.ndarray:
    """Days on the delay clock by the time the signals were read: ``elapsed_days`` less
    ``engaged_days`` (since the last engagement; since shown where the column is absent)."""
    return np.maximum(signals["elapsed_days"].to_numpy(dtype=np.float64) - _engaged_offset(signals), 0.0)


def _weight_by(ids: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(ids, weights=weight, minlength=n)[:n]


def pair_features(
    source_id: np.ndarray,
    shown_id: np.ndarray,
    products: pd.DataFrame,
    edges: pd.DataFrame,
    exposure: np.ndarray | None = None,
) -> pd.DataFrame:
    """The delay model's view of a (source, shown) pair, from the catalogue and the
    co-purchase graph only (no labels, so no leak between splits):

    * ``log_price`` of the shown product (the catalogue median where unknown);
    * ``shown_popularity``: log(1 + co-purchases into the shown product / its
      ``exposure`` share): a rate, so that a product launched last week is not mistaken
      for an unpopular one (without ``exposure``, every product counts as seen throughout);
    * ``source_activity``: log(1 + co-purchases out of the source product);
    * ``pair_copurchases``: log(1 + co-purchases source -> shown);
    * ``category_lift``: log of how much more often the source's category leads to the
      shown one's than the shown category's share of all co-purchases (+1 smoothing;
      unknown categories form one group).
    """
    return PairContext.build(products, edges, exposure).features(source_id, shown_id)


@dataclass(frozen=True, eq=False)
class PairContext:
    """What :func:`pair_features` needs of the catalogue and the graph, per product and per
    pair, computed once: any batch of (source, shown) pairs is then looked up in it (an
    executor holds one per job and applies it to its partitions)."""

    log_price: np.ndarray
    popularity: np.ndarray  # log1p(co-purchases in / exposure share), per product
    activity: np.ndarray  # log1p(co-purchases out), per product
    pair_keys: np.ndarray  # src * n + dst of every pair the graph holds, sorted
    pair_weight: np.ndarray  # co-purchases of each of those pairs
    groups: np.ndarray  # category group of each product
    lift: np.ndarray  # (groups x groups) log lift

    @classmethod
    def build(
        cls, products: pd.DataFrame, edges: pd.DataFrame, exposure: np.ndarray | None = None
    ) -> PairContext:
        n = len(products)
        by_id = products.sort_values("product_id")
        price = by_id["price"].to_numpy(dtype=float)
        log_price = np.log(np.where(np.isfinite(price) & (price > 0), price, np.nan))
        fill = np.nanmedian(log_price) if np.isfinite(log_price).any() else 0.0
        log_price = np.where(np.isfinite(log_price), log_price, fill)
        eu, ev = edges["src"].to_numpy(np.int64), edges["dst"].to_numpy(np.int64)
        ew = edges["weight"].to_numpy(np.float64) if "weight" in edges else np.ones(len(edges))
        into, out_of = _weight_by(ev, ew, n), _weight_by(eu, ew, n)
        pair_weight = pd.Series(ew).groupby(eu * n + ev).sum()  # edge lists may repeat a pair
        category = by_id["category"].to_numpy(np.int64)
        codes, groups = np.unique(category, return_inverse=True)
        k = len(codes)
        flows = np.ones((k, k)) + np.bincount(
            groups[eu] * k + groups[ev], weights=ew, minlength=k * k
        ).reshape(k, k)
        share_in = flows.sum(axis=0) / flows.sum()
        return cls(
            log_price=log_price,
            popularity=np.log1p(into / (1.0 if exposure is None else exposure)),
            activity=np.log1p(out_of),
            pair_keys=pair_weight.index.to_numpy(np.int64),
            pair_weight=pair_weight.to_numpy(np.float64),
            groups=groups,
            lift=np.log(flows / flows.sum(axis=1, keepdims=True) / share_in[None, :]),
        )

    def features(self, source_id: np.ndarray, shown_id: np.ndarray) -> pd.DataFrame:
        src = np.asarray(source_id, dtype=np.int64)
        dst = np.asarray(shown_id, dtype=np.int64)
        key = src * len(self.log_price) + dst
        at = np.minimum(np.searchsorted(self.pair_keys, key), max(len(self.pair_keys) - 1, 0))
        found = (self.pair_keys[at] == key) if len(self.pair_keys) else np.zeros(len(key), bool)
        pair = np.where(found, self.pair_weight[at] if len(self.pair_keys) else 0.0, 0.0)
        return pd.DataFrame(
            {
                "log_price": self.log_price[dst],
                "shown_popularity": self.popularity[dst],
                "source_activity": self.activity[src],
                "pair_copurchases": np.log1p(pair),
                "category_lift": self.lift[self.groups[src], self.groups[dst]],
            }
        )


def _labelled(signals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Validated (days on the delay clock, observed label): the clock of :func:`waited_days`."""
    for column in ("elapsed_days", "label"):
        if column not in signals:
            raise ValueError(f"signals lack the {column!r} column")
    e = signals["elapsed_days"].to_numpy(dtype=np.float64)
    y = signals["label"].to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(e)) or np.any(e < 0):
        raise ValueError("elapsed_days must be finite and >= 0")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("label must be 0/1")
    return waited_days(signals), y


# A product seen for less than a day counts as seen for one (its rate stays bounded).
_MIN_EXPOSURE_DAYS = 1.0


def first_seen(impressions: pd.DataFrame, n_products: int) -> np.ndarray:
    """Per product, its first impression (shown or as the source) in ns since the epoch;
    int64 max where the log never shows it. A minimum: logs split in parts combine by
    ``np.minimum``."""
    first = np.full(n_products, NEVER, dtype=np.int64)
    shown_ns = impressions["shown_at"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    for column in ("source_id", "shown_id"):
        earliest = pd.Series(shown_ns).groupby(impressions[column].to_numpy(np.int64)).min()
        at_ids = earliest.index.to_numpy(np.int64)
        first[at_ids] = np.minimum(first[at_ids], earliest.to_numpy())
    return first


NEVER = np.iinfo(np.int64).max


def exposure_share(impressions: pd.DataFrame, n_products: int, at: pd.Timestamp) -> np.ndarray:
    """Per product, the share of the impression log up to ``at`` it was on sale for:
    (at - its first impression, shown or as the source) / (at - the log's first), in
    (0, 1]; at least a day, so a rate over it stays bounded. Impressions, far denser than
    co-purchases, date a launch closely; a product the log never shows counts as on sale
    throughout.
    """
    return exposure_from_first(first_seen(impressions, n_products), at)


def exposure_from_first(first: np.ndarray, at: pd.Timestamp) -> np.ndarray:
    """:func:`exposure_share` from each product's :func:`first_seen`."""
    end = pd.Timestamp(at).value
    seen = first < NEVER
    if not seen.any() or not first[seen].min() < end:
        return np.ones(len(first))
    on_sale = np.maximum((end - np.minimum(first, end)).astype(np.float64), _MIN_EXPOSURE_DAYS * DAY.value)
    return np.where(seen, np.clip(on_sale / float(end - first[seen].min()), 0.0, 1.0), 1.0)


def impression_signals(
    impressions: pd.DataFrame,
    at: pd.Timestamp,
    products: pd.DataFrame | None = None,
    edges: pd.DataFrame | None = None,
    context: PairContext | None = None,
) -> pd.DataFrame:
    """:func:`observed_signals` at ``at`` plus, given the catalogue and graph (or their
    ``context``, built once over the whole log), the :func:`pair_features` of each
    impression (the delay model's whole input)."""
    signals = observed_signals(impressions, at)
    if context is None:
        if products is None or edges is None:
            return signals
        context = PairContext.build(products, edges, exposure_share(impressions, len(products), at))
    features = context.features(impressions["source_id"].to_numpy(), impressions["shown_id"].to_numpy())
    return pd.concat([signals, features.set_index(signals.index)], axis=1)
