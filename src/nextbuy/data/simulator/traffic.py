"""The simulated store's traffic: the logging policy's impressions, the true conversion
probability behind each, and the click, cart and conversion funnel with its delays."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import expit, ndtri

from nextbuy.config import SimulatorConfig
from nextbuy.data.simulator.world import (
    _TRAFFIC,
    _TRAFFIC_LAUNCH,
    NS_PER_DAY,
    NS_PER_HOUR,
    StoreWorld,
    Traffic,
    _draw,
    _latents,
    _launch_ns,
    _not_before,
    _rng,
)

POPULARITY_LOGIT = 0.08  # conversion logit per unit of log(popularity * n_products)
PAIR_NOISE = 0.3  # std of the fixed per-pair conversion logit noise

# Funnel times (the funnel's rates are params).
CLICK_MEDIAN_MIN, CART_MEDIAN_MIN = 2.0, 15.0
MAX_DELAY_DAYS = 3_650.0  # keeps nanosecond times far from int64 overflow


def _pair_noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Standard normal noise fixed per (u, v) pair (splitmix64 hash), same in every traffic draw."""
    x = (u.astype(np.uint64) << np.uint64(32)) ^ v.astype(np.uint64)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    uniform = ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    return ndtri(uniform)


def conversion_probability(
    truth_products: pd.DataFrame,
    cfg: SimulatorConfig,
    source_id: np.ndarray,
    shown_id: np.ndarray,
    pair_noise: bool = True,
) -> np.ndarray:
    """True P(eventual conversion) of showing ``shown_id`` to a buyer of ``source_id`` (the
    store's ``truth_products``).  ``pair_noise=False`` leaves out the fixed per-pair noise: the
    ceiling of a model that learns products, not each pair by heart (benchmarks only)."""
    popularity, src, tgt = _latents(truth_products)
    affinity = np.einsum("ij,ij->i", src[source_id], tgt[shown_id])
    logit = (
        cfg.base_conversion_logit
        + cfg.affinity_scale * affinity
        + POPULARITY_LOGIT * np.log(popularity[shown_id] * len(popularity))
    )
    if pair_noise:
        logit = logit + PAIR_NOISE * _pair_noise(source_id, shown_id)
    return expit(logit)


def _policy(
    rng: np.random.Generator, world: StoreWorld, cfg: SimulatorConfig, popularity: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logging policy: (source, shown) pairs. Shows co-purchase neighbours, sometimes explores."""
    n = len(popularity)
    pop_cum = np.cumsum(popularity)
    u = _draw(rng, pop_cum, size)
    e_src = world.edges["src"].to_numpy(np.int64)
    order = np.argsort(e_src, kind="stable")
    e_dst = world.edges["dst"].to_numpy(np.int64)[order]
    e_w = world.edges["weight"].to_numpy(np.float64)[order]
    ptr = np.searchsorted(e_src[order], np.arange(n + 1))
    w_cum = np.cumsum(e_w)
    w_before = np.concatenate([[0.0], w_cum])
    out_w = w_before[ptr[1:]] - w_before[ptr[:-1]]

    neighbour = (rng.random(size) >= cfg.policy_explore_share) & (ptr[u + 1] > ptr[u])
    v = _draw(rng, pop_cum, size)
    nu = u[neighbour]
    pos = np.searchsorted(w_cum, w_before[ptr[nu]] + rng.random(len(nu)) * out_w[nu], side="right")
    v[neighbour] = e_dst[np.clip(pos, ptr[nu], ptr[nu + 1] - 1)]
    # Popularity draws can hit u itself: redraw a few times, then step to the next product.
    for _ in range(5):
        same = np.flatnonzero(v == u)
        if not len(same):
            break
        v[same] = _draw(rng, pop_cum, len(same))
    same = v == u
    v[same] = (v[same] + 1) % n
    return u, v


def _lognormal_ns(
    rng: np.random.Generator, median_hours: np.ndarray | float, sigma: float, size: int
) -> np.ndarray:
    hours = np.minimum(median_hours * np.exp(sigma * rng.standard_normal(size)), MAX_DELAY_DAYS * 24)
    return (hours * NS_PER_HOUR).astype(np.int64)


def _funnel(
    rng: np.random.Generator, cfg: SimulatorConfig, p: np.ndarray, converted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Who clicks and who adds to cart. Every buyer clicks; a browser who will not buy clicks
    with ``browse_click_rate + click_relevance * p`` (relevant items draw more browsing) and
    adds to cart with ``cart_if_browse``; a buyer adds to cart with ``cart_if_convert``.
    How fast browsing grows with p against its base sets how much a click or a cart says
    about the item: with browsing proportional to p, conversion after a cart is the same
    for every item; with a large base it grows with the item's relevance, as in real logs.
    """
    size = len(p)
    p_browse_click = np.clip(cfg.browse_click_rate + cfg.click_relevance * p, 0.0, 0.9)
    clicked = converted | (rng.random(size) < p_browse_click)
    carted = clicked & (rng.random(size) < np.where(converted, cfg.cart_if_convert, cfg.cart_if_browse))
    return clicked, carted


class Window(NamedTuple):
    """When traffic is shown, [start, end), and when it is observed (later events are censored)."""

    start: pd.Timestamp
    end: pd.Timestamp
    observe_at: pd.Timestamp


def simulate_traffic(
    world: StoreWorld,
    cfg: SimulatorConfig,
    seed: int | tuple[int, ...],
    n_impressions: int,
    window: Window,
    id_offset: int = 0,
    odds_multiplier: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Traffic:
    """Impressions shown uniformly in the window's [start, end), events after its ``observe_at``
    censored to NaT.

    Use a different ``seed`` (and ``id_offset``) for each batch of traffic
    from the same world: the same seed repeats the same draws.
    ``odds_multiplier(source, shown, shown_at_ns)`` injects drift: the true
    conversion odds of each impression are multiplied by what it returns.
    Nothing is shown before its source and shown product launched: such an
    impression is redrawn uniformly in [max(launches, start), end), and dropped
    when a launch is at or after ``end`` (only a window ending before some
    launches gets fewer than ``n_impressions``).
    """
    start, end, observe_at = (pd.Timestamp(t) for t in window)
    if not start < end <= observe_at:
        raise ValueError(f"need start < end <= observe_at, got {start}, {end}, {observe_at}")
    rng = _rng(seed, _TRAFFIC)
    u, v, shown = _shown_pairs(rng, world, cfg, seed, int(n_impressions), start, end)
    size = len(u)
    p = conversion_probability(world.truth_products, cfg, u, v)
    if odds_multiplier is not None:
        m = np.asarray(odds_multiplier(u, v, shown), dtype=np.float64)
        p = p * m / (1.0 - p + p * m)
    converted = rng.random(size) < p
    clicked, carted = _funnel(rng, cfg, p, converted)
    clicked_ns = shown + _lognormal_ns(rng, CLICK_MEDIAN_MIN / 60, 1.0, size)
    carted_ns = clicked_ns + _lognormal_ns(rng, CART_MEDIAN_MIN / 60, 0.8, size)
    converted_ns = np.where(carted, carted_ns, clicked_ns) + _lognormal_ns(
        rng, _delay_median_hours(world, cfg)[v], cfg.delay_sigma, size
    )

    def observed(happened: np.ndarray, t_ns: np.ndarray) -> pd.Series:
        t = pd.to_datetime(t_ns, unit="ns")
        return pd.Series(t.where(happened & (t_ns <= observe_at.value)))

    ids = np.arange(id_offset, id_offset + size, dtype=np.int64)
    impressions = pd.DataFrame(
        {
            "impression_id": ids,
            "source_id": u.astype(np.int64),
            "shown_id": v.astype(np.int64),
            "shown_at": pd.to_datetime(shown, unit="ns"),
            "clicked_at": observed(clicked, clicked_ns),
            "carted_at": observed(carted, carted_ns),
            "converted_at": observed(converted, converted_ns),
        }
    )
    truth = pd.DataFrame(
        {
            "impression_id": ids,
            "p_convert": p.astype(np.float64),
            "label_eventual": converted.astype(np.int8),
            "delay_days": np.where(converted, (converted_ns - shown) / NS_PER_DAY, np.nan),
        }
    )
    return Traffic(impressions, truth)


def _shown_pairs(
    rng: np.random.Generator,
    world: StoreWorld,
    cfg: SimulatorConfig,
    seed: int | tuple[int, ...],
    size: int,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The logging policy's (source, shown) pairs and their times in [start, end), in time
    order, none before both products launched (see :func:`simulate_traffic`)."""
    popularity, _, _ = _latents(world.truth_products)
    u, v = _policy(rng, world, cfg, popularity, size)
    shown = start.value + (rng.random(size) * (end.value - start.value)).astype(np.int64)
    launch = _launch_ns(world)
    earliest = np.maximum(launch[u], launch[v])
    exists = earliest < end.value
    if not exists.all():
        u, v, shown, earliest = u[exists], v[exists], shown[exists], earliest[exists]
    shown = _not_before(_rng(seed, _TRAFFIC_LAUNCH), shown, np.maximum(earliest, start.value), end.value)
    order = np.argsort(shown, kind="stable")  # impression ids follow time
    return u[order], v[order], shown[order]


def _delay_median_hours(world: StoreWorld, cfg: SimulatorConfig) -> np.ndarray:
    """Each product's conversion-delay median: expensive products take longer to decide on."""
    price = world.products.sort_values("product_id")["price"].to_numpy(np.float64)
    ref = np.nanmedian(price) if np.isfinite(price).any() else np.nan
    factor = np.where(np.isfinite(price), (price / ref) ** cfg.delay_price_elasticity, 1.0)
    return cfg.delay_median_hours * np.clip(factor, 0.2, 10.0)
