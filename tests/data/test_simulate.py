"""The simulated store: valid tables, a directed graph with heavy tails, and
conversions that arrive late and are censored at the snapshot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.special import logit

from nextbuy.config import with_changes
from nextbuy.data.simulator import (
    PAIR_NOISE,
    StoreWorld,
    Window,
    complement_relations,
    conversion_probability,
    simulate_store,
    simulate_traffic,
    simulate_world,
    world_from_graph,
)
from nextbuy.data.simulator import purchases as sim_purchases
from nextbuy.data.simulator import traffic as sim_traffic
from nextbuy.data.simulator.traffic import _pair_noise
from nextbuy.mlops import io, schemas
from tests.helpers import config

SMALL = config(
    "ingest.simulator",
    n_products=600,
    n_categories=12,
    n_purchases=15_000,
    n_impressions=20_000,
    history_days=28,
)


@pytest.fixture(scope="module")
def small_store():
    return simulate_store(SMALL, seed=11)


@pytest.fixture(scope="module")
def default_store():
    """The store a user gets with no configuration at all."""
    return simulate_store(config("ingest.simulator"), seed=7)


def latents(world: StoreWorld) -> tuple[np.ndarray, np.ndarray]:
    tp = world.truth_products
    return tp.filter(regex=r"^src_").to_numpy(), tp.filter(regex=r"^tgt_").to_numpy()


def affinity(world: StoreWorld, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    src, tgt = latents(world)
    return np.einsum("ij,ij->i", src[u], tgt[v])


def assert_valid(world: StoreWorld, traffic) -> None:
    io.validate(world.products, schemas.PRODUCTS, "products")
    io.validate(world.truth_products, schemas.TRUTH_PRODUCTS, "truth_products")
    io.validate(world.edges, schemas.EDGES, "edges")
    io.validate(traffic.impressions, schemas.IMPRESSIONS_LOG, "impressions")
    io.validate(traffic.truth, schemas.TRUTH_IMPRESSIONS, "truth")
    assert list(traffic.impressions.columns) == list(schemas.IMPRESSIONS_LOG.columns)
    assert (
        traffic.impressions["impression_id"].to_numpy() == traffic.truth["impression_id"].to_numpy()
    ).all()
    assert not schemas.check_event_order(traffic.impressions)
    assert (traffic.impressions["source_id"] != traffic.impressions["shown_id"]).all()
    assert_nothing_before_launch(world, traffic)


def launched_at(world: StoreWorld) -> pd.Series:
    return world.truth_products.set_index("product_id")["launched_at"]


def latest_launch(world: StoreWorld, u: pd.Series, v: pd.Series) -> pd.Series:
    """max(launch of u, launch of v); NaT when both were there from the start."""
    launch = launched_at(world)
    both = pd.DataFrame({"u": launch[u].to_numpy(), "v": launch[v].to_numpy()})
    return both.max(axis=1)


def assert_nothing_before_launch(world: StoreWorld, traffic) -> None:
    """Nobody buys or is shown a product before its launch."""
    edges, imp = world.edges, traffic.impressions
    bought = latest_launch(world, edges["src"], edges["dst"])
    assert (bought.isna() | (edges["time"].to_numpy() >= bought)).all()
    shown = latest_launch(world, imp["source_id"], imp["shown_id"])
    assert (shown.isna() | (imp["shown_at"].to_numpy() >= shown)).all()


def test_tables_validate_with_exact_dtypes(small_store):
    world, traffic = small_store
    assert_valid(world, traffic)
    assert world.products.dtypes.to_dict() == {
        "product_id": np.int64,
        "product_key": object,
        "category": np.int64,
        "price": np.float64,
    }
    assert (world.products["product_key"] == world.products["product_id"].astype(str)).all()
    assert traffic.truth["label_eventual"].dtype == np.int8
    assert all(
        traffic.impressions[c].dtype == "datetime64[ns]"
        for c in ("shown_at", "clicked_at", "carted_at", "converted_at")
    )
    popularity = world.truth_products["popularity"]
    assert (popularity > 0).all()
    assert popularity.sum() == pytest.approx(1.0)
    assert world.truth_products.filter(regex="^src_").shape[1] == SMALL.latent_dim
    assert world.snapshot - world.start == pd.Timedelta(days=SMALL.history_days)


def test_same_seed_same_store_other_seed_other_store(small_store):
    world, traffic = small_store
    again_world, again_traffic = simulate_store(SMALL, seed=11)
    pd.testing.assert_frame_equal(world.edges, again_world.edges)
    pd.testing.assert_frame_equal(world.truth_products, again_world.truth_products)
    pd.testing.assert_frame_equal(traffic.impressions, again_traffic.impressions)
    pd.testing.assert_frame_equal(traffic.truth, again_traffic.truth)
    # The world alone is the same world: traffic draws do not disturb it.
    pd.testing.assert_frame_equal(simulate_world(SMALL, seed=11).edges, world.edges)
    other_world, other_traffic = simulate_store(SMALL, seed=12)
    assert not world.edges.equals(other_world.edges)
    assert not traffic.impressions.equals(other_traffic.impressions)


def test_default_store_is_believable(default_store):
    world, traffic = default_store
    truth, imp = traffic.truth, traffic.impressions
    assert 0.01 <= truth["label_eventual"].mean() <= 0.08  # a few percent convert
    assert imp["clicked_at"].notna().mean() > imp["converted_at"].notna().mean()
    # A sizeable share of last week's eventual conversions is not yet seen at the snapshot.
    last_week = (imp["shown_at"] >= world.snapshot - pd.Timedelta(days=7)).to_numpy()
    eventual = truth["label_eventual"].to_numpy() == 1
    censored = imp["converted_at"].isna().to_numpy()[last_week & eventual].mean()
    # Delays of days to weeks (median 168 h) and launches that push traffic late: ~0.81 of the
    # last week's eventual conversions are not yet seen at the snapshot (yet some are).
    assert 0.10 <= censored <= 0.95
    # The graph predates the impression log, and nothing is later than the snapshot.
    assert world.edges["time"].min() < world.start - pd.Timedelta(
        days=config("ingest.simulator").history_days * 0.9
    )
    assert world.edges["time"].max() < world.snapshot


def test_graph_is_directed_complements_one_way(default_store):
    world, _ = default_store
    u, v = world.edges["src"].to_numpy(), world.edges["dst"].to_numpy()
    # "bought u then v" is far more affine than "bought v then u".
    assert affinity(world, u, v).mean() > affinity(world, v, u).mean() + 0.8
    # Few co-purchases are reciprocated.
    n = len(world.products)
    assert np.isin(v * n + u, u * n + v).mean() < 0.3
    # Category relations recovered from the hidden truth are mostly one-way.
    cfg = config("ingest.simulator")
    category = world.products["category"].to_numpy()
    src, tgt = latents(world)
    cat_src = np.stack([src[category == c].mean(axis=0) for c in range(cfg.n_categories)])
    cat_tgt = np.stack([tgt[category == c].mean(axis=0) for c in range(cfg.n_categories)])
    scores = cat_src @ cat_tgt.T
    top = np.argsort(-scores, axis=1)[:, : cfg.complements_per_category]
    recovered = np.zeros_like(scores, dtype=bool)
    recovered[np.arange(cfg.n_categories)[:, None], top] = True
    assert (recovered & recovered.T).sum() / recovered.sum() < 0.35


def test_complement_relations_have_the_configured_reciprocal_share():
    for share in (0.0, 0.15, 0.5, 1.0):
        rel = complement_relations(40, 3, share, np.random.default_rng(0))
        assert (rel.sum(axis=1) == 3).all()
        assert not rel.diagonal().any()
        assert (rel & rel.T).sum() / rel.sum() == pytest.approx(share, abs=0.05)


def test_degree_is_heavy_tailed_with_many_low_degree_products(default_store):
    world, _ = default_store
    n = len(world.products)
    out_deg = np.bincount(world.edges["src"], minlength=n)
    in_deg = np.bincount(world.edges["dst"], minlength=n)
    degree = out_deg + in_deg
    assert degree.max() > 50 * np.median(degree)
    assert out_deg.max() > 50 * max(np.median(out_deg), 1)
    assert in_deg.max() > 50 * max(np.median(in_deg), 1)
    assert (degree <= 1).mean() > 0.04
    assert (degree == 0).any()
    assert world.edges["weight"].max() > 10
    assert (world.edges["weight"] == 1).mean() > 0.3


def test_censoring_hides_late_events_but_truth_keeps_them(small_store):
    world, traffic = small_store
    imp, truth = traffic.impressions, traffic.truth
    events = imp[["clicked_at", "carted_at", "converted_at"]]
    assert (events.max() <= world.snapshot).all()
    eventual = truth["label_eventual"] == 1
    # Only conversions have a delay; 0 elsewhere keeps NaN out of to_timedelta's float-to-ns
    # multiply (numpy warned there now and then). Those rows are masked by ``eventual`` below.
    due = imp["shown_at"] + pd.to_timedelta(truth["delay_days"].where(eventual, 0.0), unit="D")
    # Observed exactly when it converts by the snapshot; the rest is censored, not lost.
    assert (imp["converted_at"].notna() == (eventual & (due <= world.snapshot))).all()
    assert (eventual & imp["converted_at"].isna()).sum() > 0
    assert truth.loc[~eventual, "delay_days"].isna().all()
    # Conversions come through the funnel: a seen conversion was clicked first.
    seen = imp["converted_at"].notna()
    assert imp.loc[seen, "clicked_at"].notna().all()
    assert (imp.loc[seen, "clicked_at"] <= imp.loc[seen, "converted_at"]).all()
    carted = imp["carted_at"].notna()
    assert (imp.loc[carted, "clicked_at"] <= imp.loc[carted, "carted_at"]).all()
    # Carted impressions convert far more often than clicked-only ones (a pre-conversion signal).
    clicked_only = imp["clicked_at"].notna() & ~carted
    assert truth.loc[carted, "label_eventual"].mean() > 3 * truth.loc[clicked_only, "label_eventual"].mean()


def test_conversion_delay_is_heavy_tailed_and_slower_for_expensive_products(default_store):
    world, traffic = default_store
    delay = traffic.truth["delay_days"]
    q50, q99 = delay.quantile([0.5, 0.99])
    assert q99 > 10 * q50
    assert delay.max() > 14
    price = world.products["price"].to_numpy()[traffic.impressions["shown_id"]]
    cheap, dear = np.quantile(world.products["price"], [0.25, 0.75])
    assert delay[price >= dear].median() > 1.5 * delay[price <= cheap].median()


def test_delay_price_elasticity_sets_how_much_price_slows_a_conversion(small_store):
    world, traffic = small_store

    def dear_over_cheap(elasticity: float) -> float:
        cfg = with_changes(SMALL, delay_price_elasticity=elasticity)
        truth = simulate_store(cfg, seed=11)[1].truth
        price = world.products["price"].to_numpy()[traffic.impressions["shown_id"]]
        cheap, dear = np.quantile(world.products["price"], [0.25, 0.75])
        delay = truth["delay_days"]
        return delay[price >= dear].median() / delay[price <= cheap].median()

    # Same draws, only the delays move: 0 is price-blind, a larger elasticity slows dear products more.
    blind, default, steep = (dear_over_cheap(e) for e in (0.0, SMALL.delay_price_elasticity, 1.0))
    assert blind == pytest.approx(1.0, abs=0.35)
    assert blind < default < steep
    assert steep > 3.0


def test_the_funnel_params_set_what_a_cart_says_about_the_item():
    def carts(**funnel) -> tuple[float, float, float]:
        """Share of carts abandoned, and conversion after a cart in the lowest and highest
        fifth of true conversion probability."""
        cfg = with_changes(SMALL, **funnel)
        traffic = simulate_store(cfg, seed=11)[1]
        carted = traffic.impressions["carted_at"].notna().to_numpy()
        # Events after the snapshot are censored in the log; the truth has every conversion.
        converted = traffic.truth["label_eventual"].to_numpy()[carted] == 1
        p = traffic.truth["p_convert"].to_numpy()[carted]
        low, high = np.quantile(p, [0.2, 0.8])
        return 1 - converted.mean(), converted[p <= low].mean(), converted[p >= high].mean()

    # Browsing proportional to relevance: a cart says "buyer" whatever the item.
    proportional = carts(browse_click_rate=0.02, click_relevance=2.0, cart_if_browse=0.15)
    # The default: browsing has a base rate, many more carts are abandoned (~70% in real
    # stores; fewer in this small, high-converting store) and a relevant item's cart converts
    # far more often.
    default = carts()
    assert default[0] > proportional[0] + 0.25
    assert default[2] - default[1] > 0.3 > proportional[2] - proportional[1]


def test_true_conversion_follows_affinity_and_the_policy_prefers_neighbours(default_store):
    world, traffic = default_store
    imp, truth = traffic.impressions, traffic.truth
    aff = affinity(world, imp["source_id"].to_numpy(), imp["shown_id"].to_numpy())
    high = aff > np.quantile(aff, 0.8)
    low = aff < np.quantile(aff, 0.2)
    assert truth.loc[high, "label_eventual"].mean() > 2 * truth.loc[low, "label_eventual"].mean()
    n = len(world.products)
    is_edge = np.isin(
        imp["source_id"].to_numpy() * n + imp["shown_id"].to_numpy(),
        world.edges["src"].to_numpy() * n + world.edges["dst"].to_numpy(),
    )
    assert 0.5 < is_edge.mean() < 0.9  # mostly co-purchase neighbours, some exploration
    assert truth.loc[is_edge, "p_convert"].mean() > truth.loc[~is_edge, "p_convert"].mean()


def test_more_traffic_after_the_snapshot_for_monitoring(small_store):
    world, history = small_store
    end = world.snapshot + pd.Timedelta(days=7)
    offset = int(history.impressions["impression_id"].max()) + 1
    later = simulate_traffic(
        world, SMALL, 5, 3000, Window(world.snapshot, end, end + pd.Timedelta(days=30)), id_offset=offset
    )
    assert_valid(world, later)
    imp = later.impressions
    assert imp["impression_id"].min() == offset
    assert imp["impression_id"].is_monotonic_increasing
    assert imp["shown_at"].min() >= world.snapshot
    assert imp["shown_at"].max() < end
    # The truth is a property of the pair, the same in every traffic draw.
    u, v = imp["source_id"].to_numpy(), imp["shown_id"].to_numpy()
    truth = world.truth_products
    np.testing.assert_allclose(later.truth["p_convert"], conversion_probability(truth, SMALL, u, v))
    # Without the pair noise the log-odds move by exactly that pair's fixed draw.
    smooth = conversion_probability(truth, SMALL, u, v, pair_noise=False)
    np.testing.assert_allclose(
        logit(later.truth["p_convert"]) - logit(smooth), PAIR_NOISE * _pair_noise(u, v), atol=1e-9
    )
    with pytest.raises(ValueError, match="observe_at"):
        simulate_traffic(world, SMALL, 5, 100, Window(world.snapshot, end, end - pd.Timedelta(days=1)))


def test_launched_products_are_never_bought_or_shown_before_their_launch(small_store):
    world, traffic = small_store
    launch = launched_at(world)
    assert launch.dtype == "datetime64[ns]"
    n_new = round(SMALL.launch_rate * SMALL.history_days * SMALL.n_products)
    assert n_new > 50
    assert launch.notna().sum() == n_new
    assert (launch.dropna() >= world.start).all()
    assert (launch.dropna() < world.snapshot).all()
    assert_nothing_before_launch(world, traffic)  # first-occurrence edge times included
    imp = traffic.impressions
    assert len(imp) == SMALL.n_impressions
    assert imp["shown_at"].is_monotonic_increasing
    assert imp["impression_id"].is_monotonic_increasing  # ids still follow time
    # New products are still bought and shown: their history is only younger.
    new = launch.index[launch.notna()].to_numpy()
    assert np.isin(new, world.edges["dst"]).mean() > 0.5
    assert np.isin(new, imp["shown_id"]).mean() > 0.5


def test_dropped_prelaunch_purchases_leave_late_launches_thin_in_the_graph():
    moved, dropped = (
        simulate_world(with_changes(SMALL, prelaunch_purchases=how), 11) for how in ("move", "drop")
    )
    launch = launched_at(moved)
    # The same products, latents and launches; only purchases before a launch are gone.
    pd.testing.assert_frame_equal(dropped.truth_products, moved.truth_products)
    assert_nothing_before_launch(
        dropped,
        simulate_traffic(dropped, SMALL, 3, 100, Window(dropped.start, dropped.snapshot, dropped.snapshot)),
    )
    kept = dropped.edges.merge(moved.edges, on=["src", "dst"], suffixes=("", "_moved"), validate="1:1")
    assert len(kept) == len(dropped.edges)
    assert (kept["weight"] <= kept["weight_moved"]).all()
    purchases = lambda w: w.edges.groupby("dst")["weight"].sum().reindex(launch.index, fill_value=0)  # noqa: E731
    late = launch.index[launch >= moved.snapshot - pd.Timedelta(days=7)]
    always = launch.index[launch.isna()]
    # Moved: a late launch has as many purchases as any product. Dropped: a fraction of them.
    assert purchases(moved)[late].mean() > 0.5 * purchases(moved)[always].mean()
    assert purchases(dropped)[late].mean() < 0.4 * purchases(dropped)[always].mean()
    # Purchases between two products that were always there are untouched.
    between = lambda w: w.edges[w.edges["src"].isin(always) & w.edges["dst"].isin(always)]  # noqa: E731
    pd.testing.assert_frame_equal(
        between(dropped).reset_index(drop=True), between(moved).reset_index(drop=True)
    )


def test_recently_launched_products_have_only_recent_history(small_store):
    world, traffic = small_store
    launch = launched_at(world)
    imp = traffic.impressions
    last_week = world.snapshot - pd.Timedelta(days=7)
    recent = np.isin(imp["shown_id"], launch.index[launch >= last_week])
    old = latest_launch(world, imp["source_id"], imp["shown_id"]).isna().to_numpy()  # both always there
    assert recent.sum() > 100
    in_last_week = (imp["shown_at"] >= last_week).to_numpy()
    assert in_last_week[recent].all()  # nothing of theirs has had more than a week to mature
    assert in_last_week[old].mean() == pytest.approx(7 / SMALL.history_days, abs=0.05)
    # So at the snapshot most of their eventual conversions are still unseen, far more than of
    # products that were always there.
    eventual = traffic.truth["label_eventual"].to_numpy() == 1
    unseen = imp["converted_at"].isna().to_numpy()
    assert unseen[recent & eventual].mean() > max(0.5, unseen[old & eventual].mean() + 0.15)


def test_moved_launches_change_when_things_happen_not_what_happens():
    moved = with_changes(SMALL, prelaunch_purchases="move")
    world, traffic = simulate_store(moved, seed=11)
    still = with_changes(moved, launch_rate=0.0)
    base_world, base_traffic = simulate_store(still, seed=11)
    assert launched_at(base_world).isna().all()
    # Same catalogue, latents and co-purchase pairs; only the times of new products' events move.
    pd.testing.assert_frame_equal(world.products, base_world.products)
    latent_cols = world.truth_products.columns.drop("launched_at")
    pd.testing.assert_frame_equal(world.truth_products[latent_cols], base_world.truth_products[latent_cols])
    pd.testing.assert_frame_equal(
        world.edges[["src", "dst", "weight"]], base_world.edges[["src", "dst", "weight"]]
    )
    old_pair = latest_launch(world, world.edges["src"], world.edges["dst"]).isna().to_numpy()
    assert 0.3 < old_pair.mean() < 1
    pd.testing.assert_series_equal(world.edges["time"][old_pair], base_world.edges["time"][old_pair])
    # Impressions of pairs there from the start keep their times (ids follow time, so compare sorted).
    key = ["source_id", "shown_id", "shown_at"]

    def old_impressions(imp: pd.DataFrame) -> pd.DataFrame:
        old = latest_launch(world, imp["source_id"], imp["shown_id"]).isna().to_numpy()
        return imp.loc[old, key].sort_values(key, ignore_index=True)

    pd.testing.assert_frame_equal(
        old_impressions(traffic.impressions), old_impressions(base_traffic.impressions)
    )
    assert len(old_impressions(traffic.impressions)) > 0.3 * SMALL.n_impressions


def test_launch_rate_zero_is_the_store_without_launches(monkeypatch):
    still = with_changes(SMALL, launch_rate=0.0, n_impressions=3000)
    world, traffic = simulate_store(still, seed=3)
    assert launched_at(world).isna().all()
    # The launch machinery is inert: switching it off entirely changes no table bit for bit.
    for module in (sim_purchases, sim_traffic):  # where the purchases and the impressions look it up
        monkeypatch.setattr(module, "_not_before", lambda rng, t_ns, earliest_ns, end_ns: t_ns)
    again_world, again_traffic = simulate_store(still, seed=3)
    pd.testing.assert_frame_equal(world.truth_products, again_world.truth_products)
    pd.testing.assert_frame_equal(world.edges, again_world.edges)
    pd.testing.assert_frame_equal(traffic.impressions, again_traffic.impressions)
    pd.testing.assert_frame_equal(traffic.truth, again_traffic.truth)


def test_traffic_before_a_launch_never_shows_the_product(small_store):
    world, _ = small_store
    end = world.start + pd.Timedelta(days=SMALL.history_days / 2)
    early = simulate_traffic(world, SMALL, 5, 3000, Window(world.start, end, world.snapshot))
    assert_valid(world, early)
    imp = early.impressions
    later = launched_at(world).index[launched_at(world) >= end]
    assert not np.isin(imp[["source_id", "shown_id"]], later).any()
    assert 0.5 * 3000 < len(imp) < 3000  # impressions of not-yet-launched products are left out
    assert imp["shown_at"].min() >= world.start
    assert imp["shown_at"].max() < end


def test_launches_must_fit_in_the_catalogue():
    config("ingest.simulator", history_days=50, launch_rate=0.02)  # the whole catalogue: allowed
    with pytest.raises(ValidationError, match="launch_rate"):
        config("ingest.simulator", history_days=56, launch_rate=0.02)


def test_world_from_a_small_real_graph():
    rng = np.random.default_rng(0)
    n = 200
    # Two blocks with one-way flow: 0..99 -> 100..199 dominates the reverse.
    src = np.concatenate([rng.integers(0, 100, 1500), rng.integers(100, 200, 150)])
    dst = np.concatenate([rng.integers(100, 200, 1500), rng.integers(0, 100, 150)])
    edges = (
        pd.DataFrame({"src": src, "dst": dst})
        .value_counts()
        .rename("weight")
        .astype(float)
        .reset_index()
        .assign(time=pd.Timestamp("2025-03-01"))
    )
    products = pd.DataFrame(
        {
            "product_id": np.arange(n),
            "product_key": np.arange(n).astype(str).astype(object),
            "category": -1,
            "price": np.nan,
        }
    )
    cfg = config("ingest.simulator", latent_dim=4)
    world = world_from_graph(products, edges, cfg, seed=0)
    assert world.snapshot == pd.Timestamp("2025-03-01")
    assert world.snapshot - world.start == pd.Timedelta(days=56)
    traffic = simulate_traffic(world, cfg, 0, 2000, Window(world.start, world.snapshot, world.snapshot))
    assert_valid(world, traffic)
    assert launched_at(world).isna().all()
    assert len(traffic.impressions) == 2000
    u, v = edges["src"].to_numpy(), edges["dst"].to_numpy()
    assert affinity(world, u, v).mean() > affinity(world, v, u).mean() + 0.3
    popularity = world.truth_products["popularity"].to_numpy()
    degree = np.bincount(u, weights=edges["weight"], minlength=n) + np.bincount(
        v, weights=edges["weight"], minlength=n
    )
    np.testing.assert_allclose(popularity, (degree + 1) / (degree + 1).sum())
    with pytest.raises(ValueError, match="product_id"):
        world_from_graph(products.assign(product_id=products["product_id"] + 5), edges, cfg, seed=0)


@settings(max_examples=30, deadline=None)
@given(
    knobs=st.fixed_dictionaries(
        {
            "n_products": st.integers(10, 80),
            "n_categories": st.integers(2, 12),
            "latent_dim": st.integers(2, 5),
            "complements_per_category": st.integers(1, 5),
            "reciprocal_share": st.floats(0.0, 1.0),
            "zipf_exponent": st.floats(0.3, 2.5),
            "complement_share": st.floats(0.0, 1.0),
            "candidates_per_draw": st.integers(1, 6),
            "policy_explore_share": st.floats(0.0, 1.0),
            "delay_sigma": st.floats(0.1, 4.0),
            "launch_rate": st.floats(0.0, 0.1),
        }
    ),
    seed=st.integers(0, 2**31),
)
def test_any_small_config_gives_valid_consistent_tables(knobs, seed):
    cfg = config("ingest.simulator", **knobs, n_purchases=300, n_impressions=200, history_days=10)
    n_products, launch_rate = knobs["n_products"], knobs["launch_rate"]
    world, traffic = simulate_store(cfg, seed)
    assert_valid(world, traffic)  # includes: no self-loops, no event before shown_at or launch
    assert launched_at(world).notna().sum() == round(launch_rate * 10 * n_products)
    assert len(world.products) == n_products
    events = traffic.impressions[["clicked_at", "carted_at", "converted_at"]]
    assert (events.max().dropna() <= world.snapshot).all()


def _by_id(traffic) -> pd.DataFrame:
    return traffic.impressions.merge(traffic.truth, on="impression_id").set_index("impression_id")


def test_a_later_snapshot_is_the_same_store_with_more_days(small_store):
    world, today = small_store
    day = pd.Timedelta(days=1)
    later_world, tomorrow = simulate_store(SMALL, seed=11, snapshot=world.snapshot + day)
    assert later_world.snapshot == world.snapshot + day
    assert later_world.start == world.start + day
    assert_valid(later_world, tomorrow)
    a, b = _by_id(today), _by_id(tomorrow)
    # The window moved one day: the first day left it, one new day came in.
    shared = a.index.intersection(b.index)
    assert (a.drop(shared)["shown_at"] < world.start + day).all()
    new = b.drop(shared)
    assert (new["shown_at"] >= world.snapshot).all()
    assert abs(len(new) - SMALL.n_impressions / SMALL.history_days) < 1
    # A shared impression keeps its pair, time and outcome; only censoring differs.
    for col in ("source_id", "shown_id", "shown_at", "p_convert", "label_eventual"):
        pd.testing.assert_series_equal(a.loc[shared, col], b.loc[shared, col])
    seen_then = a.loc[shared, "converted_at"].notna()
    assert (b.loc[shared, "converted_at"][seen_then] == a.loc[shared, "converted_at"][seen_then]).all()
    assert b.loc[shared, "converted_at"].notna().sum() > seen_then.sum()  # labels matured a day
    # The graph keeps every earlier purchase and gains the new day's.
    old = world.edges.set_index(["src", "dst"])
    grown = later_world.edges.set_index(["src", "dst"])
    assert old.index.isin(grown.index).all()
    assert len(grown) > len(old)
    assert (grown.loc[old.index, "weight"] >= old["weight"]).all()
    assert (grown.loc[old.index, "time"] == old["time"]).all()


def test_the_origin_snapshot_is_the_store_itself_and_a_backfill_sees_the_past(small_store):
    world, today = small_store
    same_world, same = simulate_store(SMALL, seed=11, snapshot=world.snapshot)
    pd.testing.assert_frame_equal(same.impressions, today.impressions)
    pd.testing.assert_frame_equal(same_world.edges, world.edges)
    back = world.snapshot - pd.Timedelta(days=3)
    past_world, past = simulate_store(SMALL, seed=11, snapshot=back)
    assert_valid(past_world, past)
    assert (past_world.edges["time"] < back).all()
    for col in ("clicked_at", "carted_at", "converted_at"):
        assert (past.impressions[col].dropna() <= back).all()
    a, b = _by_id(today), _by_id(past)
    shared = a.index.intersection(b.index)
    base = b.index[b.index < SMALL.n_impressions]
    assert shared.equals(base)  # the base days it shares keep their ids
    assert (b.drop(shared)["shown_at"] < world.start).all()  # days before the origin: their own
