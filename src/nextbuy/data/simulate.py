"""The built-in simulated store, with a ground truth only evaluation may read.

A store is a ``StoreWorld`` (products, their hidden latent vectors and
popularity, and the directed co-purchase graph) plus ``Traffic`` drawn from it
(recommendation impressions with click, cart and conversion times, and the
true conversion probability behind each). Everything is pure and vectorised;
the same seed gives the same store.

Stores launch products continuously (``launch_rate``): a random share of the
catalogue launches during the impression history, and nobody buys or is shown
a product before its launch (``truth_products.launched_at``, NaT = there from
before the purchase history). So the freshest days hold products with no
matured history: waiting for their labels loses them, and training naively on
the censored labels under-scores them.

Affinity of "bought u, shown v" is ``src_u · tgt_v``. Its scale is fixed by
the constants below, so a world built from a real graph (``world_from_graph``)
converts at rates comparable to a simulated one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.special import expit, ndtri

from nextbuy.config import SimulatorConfig

NS_PER_HOUR = 3_600 * 10**9
NS_PER_DAY = 24 * NS_PER_HOUR

# Category-level affinity targets: complement relation c->c', unrelated pair,
# and the reverse of a one-way relation (case -> phone). They enter the logit
# as affinity_scale * affinity; the negative offset keeps the default store's
# conversion rate at a few percent while complements still convert ~3x better.
AFFINITY_COMPLEMENT = -0.3
AFFINITY_UNRELATED = -1.4
AFFINITY_REVERSE = -2.6
# Mean product-level affinity over simulated co-purchase edges (measured on the
# default config); world_from_graph scales real graphs to it.
AFFINITY_EDGE_MEAN = -0.5
CATEGORY_SKEW = 0.9  # Zipf exponent of category sizes
POPULARITY_LOGIT = 0.08  # conversion logit per unit of log(popularity * n_products)
PAIR_NOISE = 0.3  # std of the fixed per-pair conversion logit noise

# Funnel times (the funnel's rates are params).
CLICK_MEDIAN_MIN, CART_MEDIAN_MIN = 2.0, 15.0
MAX_DELAY_DAYS = 3_650.0  # keeps nanosecond times far from int64 overflow

CHUNK = 1 << 18  # draws per chunk: bounds the (chunk, candidates) arrays

# Independent random streams per seed. Launch draws have their own streams, so
# launch_rate 0 leaves every other draw (and the whole store) unchanged.
_WORLD, _TRAFFIC, _LAUNCH, _TRAFFIC_LAUNCH = 0, 1, 2, 3
# Days outside the world's base window draw from streams of their own, one per day, so a
# day's purchases and impressions are the same whichever snapshot looks at them.
_PURCHASE_DAY, _IMPRESSION_DAY = 4, 5
DAY_SEED_OFFSET = 1 << 31  # seed entries must be non-negative: days before the origin too
# Impressions drawn day by day get ids DAY_ID_BASE + day * per_day + j: stable, unique,
# and far from the base window's 0..n_impressions-1 and from the traffic stage's ids.
DAY_ID_BASE = 1 << 48
NAT_NS = np.iinfo(np.int64).min  # NaT as int64: a product there from before the purchase history


@dataclass(frozen=True, eq=False)
class StoreWorld:
    """The hidden truth of a store: enough to simulate more traffic later."""

    products: pd.DataFrame  # schemas.PRODUCTS
    truth_products: pd.DataFrame  # schemas.TRUTH_PRODUCTS, with launched_at (NaT = always there)
    edges: pd.DataFrame  # schemas.EDGES, u->v = "bought u, then v"
    start: pd.Timestamp  # start of impression history
    snapshot: pd.Timestamp  # start + history_days; later events are censored


@dataclass(frozen=True, eq=False)
class Traffic:
    impressions: pd.DataFrame  # schemas.IMPRESSIONS_LOG columns, NaT = not (yet) observed
    truth: pd.DataFrame  # schemas.TRUTH_IMPRESSIONS; delay_days = converted_at - shown_at


def _rng(seed: int | tuple[int, ...], stream: int) -> np.random.Generator:
    """The generator of one stream; ``seed`` may be a tuple (a day's own stream, say)."""
    return np.random.default_rng([*np.atleast_1d(seed).tolist(), stream])


def _draw(rng: np.random.Generator, cumulative: np.ndarray, size: int | tuple) -> np.ndarray:
    """Indices drawn proportional to the weights whose cumulative sum is given."""
    idx = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(idx, len(cumulative) - 1)


# --------------------------------------------------------------------------- categories


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


# --------------------------------------------------------------------------- world


def _truth_products_frame(
    popularity: np.ndarray, src: np.ndarray, tgt: np.ndarray, launch_ns: np.ndarray | None = None
) -> pd.DataFrame:
    if launch_ns is None:
        launch_ns = np.full(len(popularity), NAT_NS, dtype=np.int64)
    cols = {
        "product_id": np.arange(len(popularity), dtype=np.int64),
        "popularity": popularity,
        "launched_at": pd.to_datetime(launch_ns.view("datetime64[ns]")),
    }
    cols.update({f"src_{j}": src[:, j].astype(np.float64) for j in range(src.shape[1])})
    cols.update({f"tgt_{j}": tgt[:, j].astype(np.float64) for j in range(tgt.shape[1])})
    return pd.DataFrame(cols)


def _latents(truth_products: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = truth_products.sort_values("product_id")
    src = tp.filter(regex=r"^src_\d+$").to_numpy(np.float64)
    tgt = tp.filter(regex=r"^tgt_\d+$").to_numpy(np.float64)
    return tp["popularity"].to_numpy(np.float64), src, tgt


def _launch_ns(world: StoreWorld) -> np.ndarray:
    """Launch time per product id in ns; NAT_NS (below any time) for products always there."""
    tp = world.truth_products.sort_values("product_id")
    if "launched_at" not in tp:
        return np.full(len(tp), NAT_NS, dtype=np.int64)
    return pd.to_datetime(tp["launched_at"]).to_numpy("datetime64[ns]").view(np.int64)


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


def _not_before(
    rng: np.random.Generator, t_ns: np.ndarray, earliest_ns: np.ndarray, end_ns: int
) -> np.ndarray:
    """``t_ns`` with every time before ``earliest_ns`` redrawn uniformly in [earliest_ns, end_ns).

    Needs earliest_ns < end_ns wherever a time is redrawn; draws nothing when none is early.
    """
    early = np.flatnonzero(t_ns < earliest_ns)
    if not len(early):
        return t_ns
    lo = earliest_ns[early]
    t_ns = t_ns.copy()
    t_ns[early] = lo + (rng.random(len(early)) * (end_ns - lo)).astype(np.int64)
    return t_ns


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


def _aggregate_edges(u: np.ndarray, v: np.ndarray, t_ns: np.ndarray) -> pd.DataFrame:
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


def _base_world(cfg: SimulatorConfig, seed: int) -> tuple[StoreWorld, _Catalogue, np.ndarray]:
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
    world = StoreWorld(products, truth_products, _aggregate_edges(u, v, t_ns), start, snapshot)
    return world, catalogue, np.stack([u, v, t_ns])


def store_world(
    products: pd.DataFrame,
    truth_products: pd.DataFrame,
    edges: pd.DataFrame,
    snapshot: pd.Timestamp,
    history_days: float,
) -> StoreWorld:
    """The world an ingested store stands for (its tables at ``snapshot``), to draw more
    traffic from: what the traffic stage, benchmarks and tests rebuild from ingest's outputs."""
    snapshot = pd.Timestamp(snapshot)
    return StoreWorld(products, truth_products, edges, snapshot - pd.Timedelta(days=history_days), snapshot)


def simulate_world(cfg: SimulatorConfig, seed: int) -> StoreWorld:
    """Products, hidden latent vectors and popularity, and the co-purchase graph, at the
    world's origin snapshot (``start_date + history_days``)."""
    return _base_world(cfg, seed)[0]


def world_from_graph(
    products: pd.DataFrame, edges: pd.DataFrame, cfg: SimulatorConfig, seed: int
) -> StoreWorld:
    """A hidden truth for a real graph, so impressions can be simulated over it.

    Source/target vectors come from a truncated SVD of the degree-normalised
    weighted adjacency (left = source role, right = target role, rows scaled
    to unit length), then scaled so that edges and random pairs get the
    simulator's mean affinities; the last latent dimension carries the
    unrelated-pair offset. Popularity is in+out weighted degree + 1. Every
    product exists from the start (launched_at NaT).
    """
    products = products.sort_values("product_id").reset_index(drop=True)
    n = len(products)
    if not np.array_equal(products["product_id"].to_numpy(), np.arange(n)):
        raise ValueError("world_from_graph needs product_id = 0..N-1")
    rng = _rng(seed, _WORLD)
    u = edges["src"].to_numpy(np.int64)
    v = edges["dst"].to_numpy(np.int64)
    w = edges["weight"].to_numpy(np.float64)
    out_w = np.bincount(u, weights=w, minlength=n)
    in_w = np.bincount(v, weights=w, minlength=n)
    popularity = out_w + in_w + 1.0
    popularity /= popularity.sum()

    # Degree normalisation keeps hubs from taking every singular vector.
    norm_w = w / np.sqrt((out_w[u] + 1.0) * (in_w[v] + 1.0))
    adj = sp.csr_matrix((norm_w, (u, v)), shape=(n, n))
    k = cfg.latent_dim - 1
    if n <= max(64, 3 * k):
        left, sing, right_t = np.linalg.svd(adj.toarray())
    else:
        left, sing, right_t = spla.svds(adj, k=min(k, n - 2), v0=rng.uniform(-1.0, 1.0, n))
    left, sing, right = left[:, :k], sing[:k], right_t[:k].T
    s = np.zeros((n, k))
    t = np.zeros((n, k))
    s[:, : len(sing)] = left * np.sqrt(sing)
    t[:, : len(sing)] = right * np.sqrt(sing)
    # Raw SVD affinities are heavy-tailed (a few hub pairs dominate); unit rows
    # bound them like the simulator's, keeping only the direction of each role.
    s /= np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)

    edge_mean = float(np.mean(np.einsum("ij,ij->i", s[u], t[v]))) if len(u) else 0.0
    all_mean = float(s.mean(axis=0) @ t.mean(axis=0))
    gap = edge_mean - all_mean
    scale = (AFFINITY_EDGE_MEAN - AFFINITY_UNRELATED) / gap if gap > 1e-12 else 0.0
    src = np.hstack([np.sqrt(scale) * s, np.ones((n, 1))])
    tgt = np.hstack([np.sqrt(scale) * t, np.full((n, 1), AFFINITY_UNRELATED - scale * all_mean)])

    times = pd.to_datetime(edges["time"])
    if times.notna().any():
        snapshot = times.max().ceil("D")
        start = snapshot - pd.Timedelta(days=cfg.history_days)
    else:
        start = pd.Timestamp(cfg.start_date)
        snapshot = start + pd.Timedelta(days=cfg.history_days)
    return StoreWorld(
        products, _truth_products_frame(popularity, src, tgt), edges.reset_index(drop=True), start, snapshot
    )


# --------------------------------------------------------------------------- traffic


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
    seed: int,
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
    seed: int,
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


def _days(world: StoreWorld, lo: pd.Timestamp, hi: pd.Timestamp) -> range:
    """Indices k of the world's days [start + k days, start + k + 1 days) that meet [lo, hi)."""
    first = int(np.floor((lo.value - world.start.value) / NS_PER_DAY))
    last = int(np.ceil((hi.value - world.start.value) / NS_PER_DAY))
    return range(first, last)


def _day_seed(seed: int, day: int) -> tuple[int, int]:
    return (seed, day + DAY_SEED_OFFSET)


def _purchases_on_days(
    world: StoreWorld, catalogue: _Catalogue, cfg: SimulatorConfig, seed: int, days: range
) -> np.ndarray:
    """(u, v, t_ns) of the purchases on ``days`` after the world's base window, each day
    from its own stream at the base window's daily rate (n_purchases / (2 history_days))."""
    per_day = round(cfg.n_purchases / (2 * cfg.history_days))
    parts = [np.zeros((3, 0), np.int64)]
    c = catalogue
    for day in days:
        rng = _rng(_day_seed(seed, day), _PURCHASE_DAY)
        u, v = _co_purchases(rng, cfg, per_day, c.category, c.popularity, c.src, c.tgt, c.rel)
        t0 = world.start.value + day * NS_PER_DAY
        parts.append(np.stack([u, v, t0 + (rng.random(len(u)) * NS_PER_DAY).astype(np.int64)]))
    return np.concatenate(parts, axis=1)


def simulate_history(world: StoreWorld, cfg: SimulatorConfig, seed: int, snapshot: pd.Timestamp) -> Traffic:
    """Impressions shown in the ``history_days`` before ``snapshot``, observed at it.

    One timeline: the world's base window [world.start, world.snapshot) is one batch of
    ``n_impressions`` (seed), every other day is a batch of its own (n_impressions /
    history_days, from that day's stream). So a later snapshot is the same store with more
    days: an impression keeps its id, time and outcome, only what the snapshot censors
    differs. The logging policy recommends from the world's (base) co-purchase graph.
    """
    snapshot = pd.Timestamp(snapshot)
    lo = snapshot - pd.Timedelta(days=cfg.history_days)
    never = pd.Timestamp.max  # draw every event; censor at the snapshot below
    parts = []
    if lo < world.snapshot and snapshot > world.start:
        parts.append(
            simulate_traffic(world, cfg, seed, cfg.n_impressions, Window(world.start, world.snapshot, never))
        )
    per_day = round(cfg.n_impressions / cfg.history_days)
    for day in _days(world, lo, snapshot):
        day_start = world.start + pd.Timedelta(days=day)
        if world.start <= day_start < world.snapshot:
            continue  # in the base batch
        window = Window(day_start, day_start + pd.Timedelta(days=1), never)
        offset = DAY_ID_BASE + day * per_day
        parts.append(simulate_traffic(world, cfg, _day_seed(seed, day), per_day, window, id_offset=offset))
    impressions = pd.concat([p.impressions for p in parts], ignore_index=True)
    truth = pd.concat([p.truth for p in parts], ignore_index=True)
    keep = ((impressions["shown_at"] >= lo) & (impressions["shown_at"] < snapshot)).to_numpy()
    impressions = impressions[keep].copy()
    for col in ("clicked_at", "carted_at", "converted_at"):
        impressions[col] = impressions[col].where(impressions[col] <= snapshot)
    order = np.argsort(impressions["shown_at"].to_numpy(), kind="stable")
    return Traffic(
        impressions.iloc[order].reset_index(drop=True), truth[keep].iloc[order].reset_index(drop=True)
    )


def simulate_store(
    cfg: SimulatorConfig, seed: int, snapshot: pd.Timestamp | str | None = None
) -> tuple[StoreWorld, Traffic]:
    """The store as it stands at ``snapshot`` (None: the world's origin snapshot,
    ``start_date + history_days``): the co-purchase graph of every purchase before it, and
    the impressions of the ``history_days`` before it, observed at it.

    The world and its timeline do not depend on the snapshot: purchases after the origin
    continue day by day at the base window's rate, impressions likewise (see
    :func:`simulate_history`); a snapshot before the origin sees the store as it was then.
    """
    world, catalogue, bought = _base_world(cfg, seed)
    snapshot = world.snapshot if snapshot is None else pd.Timestamp(snapshot)
    if snapshot != world.snapshot:
        later = _purchases_on_days(world, catalogue, cfg, seed, _days(world, world.snapshot, snapshot))
        bought = np.concatenate([bought, later], axis=1)
        bought = bought[:, bought[2] < snapshot.value]
        edges = _aggregate_edges(bought[0], bought[1], bought[2])
    else:
        edges = world.edges
    history = simulate_history(world, cfg, seed, snapshot)
    start = snapshot - pd.Timedelta(days=cfg.history_days)
    return StoreWorld(world.products, world.truth_products, edges, start, snapshot), history
