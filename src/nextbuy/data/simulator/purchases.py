"""The simulated store's catalogue and purchases: complement relations between categories, latent
vectors, launches, and the co-purchase graph drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nextbuy.config import SimulatorConfig
from nextbuy.data.simulator.world import (
    _LAUNCH,
    _PURCHASE_DAY,
    _WORLD,
    AFFINITY_COMPLEMENT,
    AFFINITY_REVERSE,
    AFFINITY_UNRELATED,
    NAT_NS,
    NS_PER_DAY,
    StoreWorld,
    _draw,
    _not_before,
    _rng,
    _truth_products_frame,
    day_seed,
)

CATEGORY_SKEW = 0.9  # Zipf exponent of category sizes
CHUNK = 1 << 18  # draws per chunk: bounds the (chunk, candidates) arrays


def complement_relations(
    n_categories: int, per_category: int, reciprocal_share: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean (C, C) matrix R, R[c, c'] = c' is a complement target of c.

    Every category gets ``per_category`` targets (at most C-1); about
    ``reciprocal_share`` of all relations are reciprocated, the rest one-way.
    """
    c_count = n_categories
    k = min(per_category, c_count - 1)
    rel = np.zeros((c_count, c_count), dtype=bool)
    out_deg = np.zeros(c_count, dtype=int)
    n_pairs = round(reciprocal_share * c_count * k / 2)
    made, stalled = 0, False
    # Reciprocal pairs first, round-robin so they spread over categories.
    while made < n_pairs and not stalled:
        stalled = True
        for c in rng.permutation(c_count):
            if made >= n_pairs:
                break
            if out_deg[c] >= k:
                continue
            free = (out_deg < k) & ~rel[c] & ~rel[:, c]
            free[c] = False
            if not free.any():
                continue
            other = rng.choice(np.flatnonzero(free))
            rel[c, other] = rel[other, c] = True
            out_deg[c] += 1
            out_deg[other] += 1
            made += 1
            stalled = False
    # Then one-way targets; reciprocate only when nothing else is left.
    for c in rng.permutation(c_count):
        need = k - out_deg[c]
        if need <= 0:
            continue
        one_way = ~rel[c] & ~rel[:, c]
        one_way[c] = False
        pick = rng.permutation(np.flatnonzero(one_way))[:need]
        if len(pick) < need:
            rest = ~rel[c] & rel[:, c]
            rest[c] = False
            pick = np.concatenate([pick, rng.permutation(np.flatnonzero(rest))[: need - len(pick)]])
        rel[c, pick] = True
        out_deg[c] += len(pick)
    return rel


def _category_vectors(
    rel: np.ndarray, dim: int, rng: np.random.Generator, iterations: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """A (C, d), B (C, d) with A_c·B_c' ≈ the target affinity of c -> c'.

    Weighted alternating least squares: relations and reversed one-way
    relations must fit closely, unrelated pairs only loosely.
    """
    one_way_reverse = rel.T & ~rel
    target = np.full(rel.shape, AFFINITY_UNRELATED)
    target[rel] = AFFINITY_COMPLEMENT
    target[one_way_reverse] = AFFINITY_REVERSE
    weight = np.where(rel | one_way_reverse, 1.0, 0.1)
    a = rng.normal(0.0, 0.5, (rel.shape[0], dim))
    b = rng.normal(0.0, 0.5, (rel.shape[0], dim))
    ridge = 1e-3 * np.eye(dim)

    def solve(fixed: np.ndarray, w: np.ndarray, t: np.ndarray) -> np.ndarray:
        gram = np.einsum("ck,kd,ke->cde", w, fixed, fixed) + ridge
        rhs = np.einsum("ck,kd->cd", w * t, fixed)
        return np.linalg.solve(gram, rhs[..., None])[..., 0]

    for _ in range(iterations):
        a = solve(b, weight, target)
        b = solve(a, weight.T, target.T)
    return a, b


def _launches(
    rng: np.random.Generator, cfg: SimulatorConfig, start: pd.Timestamp, snapshot: pd.Timestamp
) -> np.ndarray:
    """round(launch_rate * history_days * n) random products launch uniformly in [start, snapshot)."""
    n = cfg.n_products
    launch = np.full(n, NAT_NS, dtype=np.int64)
    n_new = min(round(cfg.launch_rate * cfg.history_days * n), n)
    if n_new:
        new = rng.permutation(n)[:n_new]
        launch[new] = start.value + (rng.random(n_new) * (snapshot.value - start.value)).astype(np.int64)
    return launch


def _co_purchases(
    rng: np.random.Generator,
    cfg: SimulatorConfig,
    n_purchases: int,
    category: np.ndarray,
    popularity: np.ndarray,
    src: np.ndarray,
    tgt: np.ndarray,
    rel: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of ``n_purchases`` "bought u, then v" transitions, self-loops removed."""
    pop_cum = np.cumsum(popularity)
    # Products sorted by category, so one category is one slice of a cumulative sum.
    by_cat = np.argsort(category, kind="stable")
    cum_by_cat = np.cumsum(popularity[by_cat])
    n_cat = rel.shape[0]
    cat_lo = np.searchsorted(category[by_cat], np.arange(n_cat), side="left")
    cat_hi = np.searchsorted(category[by_cat], np.arange(n_cat), side="right")
    mass_before = np.concatenate([[0.0], cum_by_cat])[cat_lo]
    cat_mass = np.concatenate([[0.0], cum_by_cat])[cat_hi] - mass_before
    targets = [np.flatnonzero(rel[c]) for c in range(n_cat)]
    n_targets = np.array([len(t) for t in targets])
    target_table = np.zeros((n_cat, max(1, n_targets.max())), dtype=np.int64)
    for c, t in enumerate(targets):
        target_table[c, : len(t)] = t
    tgt_t = np.ascontiguousarray(tgt.T)  # (d, n): one gather per dimension, no (chunk, K, d) array
    k = cfg.candidates_per_draw

    us, vs = [], []
    for lo in range(0, n_purchases, CHUNK):
        size = min(CHUNK, n_purchases - lo)
        u = _draw(rng, pop_cum, size)
        cu = category[u]
        complement = (rng.random(size) < cfg.complement_share) & (n_targets[cu] > 0)
        slot = np.floor(rng.random(size) * np.maximum(n_targets[cu], 1)).astype(np.int64)
        target_cat = np.where(complement, target_table[cu, slot], category[_draw(rng, pop_cum, size)])
        r = mass_before[target_cat, None] + rng.random((size, k)) * cat_mass[target_cat, None]
        pos = np.searchsorted(cum_by_cat, r, side="right")
        pos = np.clip(pos, cat_lo[target_cat, None], cat_hi[target_cat, None] - 1)
        cand = by_cat[pos]
        affinity = np.zeros((size, k))
        for j in range(tgt_t.shape[0]):
            affinity += src[u, j][:, None] * tgt_t[j][cand]
        score = cfg.affinity_scale * affinity + rng.gumbel(size=(size, k))
        score[cand == u[:, None]] = -np.inf
        best = np.argmax(score, axis=1)
        v = cand[np.arange(size), best]
        keep = v != u
        us.append(u[keep])
        vs.append(v[keep])
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(us), np.concatenate(vs)


def aggregate_edges(u: np.ndarray, v: np.ndarray, t_ns: np.ndarray) -> pd.DataFrame:
    """Merge repeated u->v into one edge: weight = count, time = first occurrence."""
    key = (u.astype(np.int64) << 32) | v.astype(np.int64)
    order = np.lexsort((t_ns, key))
    key, t_ns = key[order], t_ns[order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    counts = np.diff(np.concatenate([first, [len(key)]]))
    ukey = key[first]
    return pd.DataFrame(
        {
            "src": (ukey >> 32).astype(np.int64),
            "dst": (ukey & 0xFFFFFFFF).astype(np.int64),
            "weight": counts.astype(np.float64),
            "time": pd.to_datetime(t_ns[first], unit="ns"),
        }
    )


@dataclass(frozen=True, eq=False)
class _Catalogue:
    """What draws purchases: the hidden category structure behind a world."""

    category: np.ndarray
    popularity: np.ndarray
    src: np.ndarray
    tgt: np.ndarray
    rel: np.ndarray


def base_world(cfg: SimulatorConfig, seed: int) -> tuple[StoreWorld, _Catalogue, np.ndarray]:
    """The world at its origin snapshot, its catalogue, and the raw purchases (u, v, t_ns)
    behind its graph (purchases span [start - history_days, snapshot))."""
    rng = _rng(seed, _WORLD)
    n = cfg.n_products
    n_cat = min(cfg.n_categories, n)  # a category needs at least one product

    cat_share = (np.arange(n_cat) + 1.0) ** -CATEGORY_SKEW
    category = rng.choice(n_cat, size=n, p=cat_share / cat_share.sum())
    category[rng.permutation(n)[:n_cat]] = np.arange(n_cat)

    log_price_level = np.log(25.0) + rng.normal(0.0, 1.0, n_cat)
    price = np.maximum(np.round(np.exp(log_price_level[category] + rng.normal(0.0, 0.6, n)), 2), 0.5)

    rank = rng.permutation(n)
    popularity = (rank + 1.0) ** -cfg.zipf_exponent
    popularity /= popularity.sum()

    rel = complement_relations(n_cat, cfg.complements_per_category, cfg.reciprocal_share, rng)
    cat_src, cat_tgt = _category_vectors(rel, cfg.latent_dim, rng)
    src = cat_src[category] + rng.normal(0.0, cfg.product_noise, (n, cfg.latent_dim))
    tgt = cat_tgt[category] + rng.normal(0.0, cfg.product_noise, (n, cfg.latent_dim))
    catalogue = _Catalogue(category, popularity, src, tgt, rel)

    start = pd.Timestamp(cfg.start_date)
    snapshot = start + pd.Timedelta(days=cfg.history_days)
    u, v = _co_purchases(rng, cfg, cfg.n_purchases, category, popularity, src, tgt, rel)
    # Purchases span [start - history_days, snapshot): the graph predates the impression log.
    span = snapshot.value - (start.value - int(cfg.history_days * NS_PER_DAY))
    t_ns = snapshot.value - span + (rng.random(len(u)) * span).astype(np.int64)
    # Nobody buys a product before its launch: such purchases move to after it (the
    # pairs stay, so the graph's structure does not depend on launch_rate), or are lost
    # ("drop": a late launch then has a thin co-purchase history, not a compressed one).
    launch_rng = _rng(seed, _LAUNCH)
    launch = _launches(launch_rng, cfg, start, snapshot)
    earliest = np.maximum(launch[u], launch[v])
    before_launch = t_ns < earliest
    t_ns = _not_before(launch_rng, t_ns, earliest, snapshot.value)  # the same draws either way
    if cfg.prelaunch_purchases == "drop":
        u, v, t_ns = u[~before_launch], v[~before_launch], t_ns[~before_launch]

    products = pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": np.arange(n).astype(str).astype(object),
            "category": category.astype(np.int64),
            "price": price.astype(np.float64),
        }
    )
    truth_products = _truth_products_frame(popularity, src, tgt, launch)
    world = StoreWorld(products, truth_products, aggregate_edges(u, v, t_ns), start, snapshot)
    return world, catalogue, np.stack([u, v, t_ns])


def simulate_world(cfg: SimulatorConfig, seed: int) -> StoreWorld:
    """Products, hidden latent vectors and popularity, and the co-purchase graph, at the
    world's origin snapshot (``start_date + history_days``)."""
    return base_world(cfg, seed)[0]


def purchases_on_days(
    world: StoreWorld, catalogue: _Catalogue, cfg: SimulatorConfig, seed: int, days: range
) -> np.ndarray:
    """(u, v, t_ns) of the purchases on ``days`` after the world's base window, each day
    from its own stream at the base window's daily rate (n_purchases / (2 history_days))."""
    per_day = round(cfg.n_purchases / (2 * cfg.history_days))
    parts = [np.zeros((3, 0), np.int64)]
    c = catalogue
    for day in days:
        rng = _rng(day_seed(seed, day), _PURCHASE_DAY)
        u, v = _co_purchases(rng, cfg, per_day, c.category, c.popularity, c.src, c.tgt, c.rel)
        t0 = world.start.value + day * NS_PER_DAY
        parts.append(np.stack([u, v, t0 + (rng.random(len(u)) * NS_PER_DAY).astype(np.int64)]))
    return np.concatenate(parts, axis=1)
