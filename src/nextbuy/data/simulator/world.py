"""The simulated store's world: its constants and random streams, the ``StoreWorld`` and
``Traffic`` records, launch times, and the world a real graph stands for (``world_from_graph``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla

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


def day_seed(seed: int, day: int) -> tuple[int, int]:
    return (seed, day + DAY_SEED_OFFSET)


def _draw(rng: np.random.Generator, cumulative: np.ndarray, size: int | tuple) -> np.ndarray:
    """Indices drawn proportional to the weights whose cumulative sum is given."""
    idx = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(idx, len(cumulative) - 1)


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
