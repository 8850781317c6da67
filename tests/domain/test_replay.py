"""Exposures replayed from orders: the policy shows only what it could know before each order
line, records the probability of what it showed, and a line's exposures do not depend on the
span replayed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.config import ReplayConfig
from nextbuy.domain import events, replay

T0 = pd.Timestamp("2026-03-02")
DAY = pd.Timedelta(days=1)


def cfg(**changes) -> ReplayConfig:
    return ReplayConfig.model_validate(
        {
            "shown_per_order": 2,
            "explore_share": 0.0,
            "policy_refresh_days": 1.0,
            "order_line_share": 1.0,
            "seed": 0,
        }
        | changes
    )


def orders(rows: list[tuple[int, int, pd.Timestamp]]) -> pd.DataFrame:
    customer, product, at = zip(*rows, strict=True)
    return pd.DataFrame({"customer": customer, "product": product, "ordered_at": pd.to_datetime(list(at))})


def random_orders(seed: int, customers: int, products: int, days: int, lines: int) -> pd.DataFrame:
    """Order lines at random hours of ``days`` days, each line once (as the reader leaves them)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer": rng.integers(0, customers, lines),
            "product": rng.integers(0, products, lines),
            "ordered_at": T0 + pd.to_timedelta(rng.integers(0, 24 * days, lines), unit="h"),
        }
    ).drop_duplicates(ignore_index=True)


def replayed(frame: pd.DataFrame, n: int, settings: ReplayConfig, **kwargs) -> replay.Replayed:
    pairs = events.co_purchase_pairs(
        frame["customer"].to_numpy(np.int64),
        frame["product"].to_numpy(np.int64),
        frame["ordered_at"].to_numpy("datetime64[ns]").view(np.int64),
        30 * events.NS_PER_DAY,
        5,
    )
    return replay.replay(frame, pairs, n, settings, **kwargs)


def test_the_policy_shows_only_co_purchases_completed_before_the_day_began():
    # day 0: customers 0 and 1 buy 0 then 1 (two pairs 0 -> 1), customer 2 buys 0 then 2
    # (one pair 0 -> 2); on day 0 itself nobody has been seen buying again yet
    frame = orders(
        [
            (0, 0, T0 + pd.Timedelta(hours=1)),
            (0, 1, T0 + pd.Timedelta(hours=2)),
            (1, 0, T0 + pd.Timedelta(hours=1)),
            (1, 1, T0 + pd.Timedelta(hours=3)),
            (2, 0, T0 + pd.Timedelta(hours=1)),
            (2, 2, T0 + pd.Timedelta(hours=4)),
            (3, 0, T0 + DAY + pd.Timedelta(hours=1)),  # day 1: the policy knows day 0's pairs
            (4, 0, T0 + pd.Timedelta(hours=5)),  # day 0 again: it knows nothing yet
        ]
    )
    out = replayed(frame, 3, cfg())
    shown = out.impressions
    day1 = shown[shown["customer"] == 3]
    assert day1["shown_id"].tolist() == [1, 2]  # the top co-purchases of 0, most pairs first
    assert (day1["shown_at"] == T0 + DAY + pd.Timedelta(hours=1, seconds=1)).all()
    # on day 0 the policy has no co-purchase: what it shows is drawn from products ordered
    # before that day, and there are none
    assert not (shown["shown_at"] < T0 + DAY).any()
    policy = out.policy.set_index("impression_id").loc[day1["impression_id"]]
    assert policy["propensity"].tolist() == [1.0, 1.0]  # no exploration: the top list for certain
    assert not policy["explored"].any()


def test_exploration_draws_uniformly_from_products_ordered_before_and_records_its_propensity():
    frame = random_orders(seed=0, customers=300, products=40, days=20, lines=4000)
    out = replayed(frame, 40, cfg(shown_per_order=3, explore_share=0.3))
    policy = out.policy
    explored = policy["explored"]
    # a slot explores with probability 0.3 (a slot whose rank the source lacks always does)
    assert 0.25 < explored.mean() < 0.5
    imp = out.impressions.set_index("impression_id").loc[policy["impression_id"]]
    assert (imp["shown_id"].to_numpy() != imp["source_id"].to_numpy()).all()
    assert not out.impressions.duplicated(["customer", "shown_at", "source_id", "shown_id"]).any()
    # n = the products ordered before the line's day: a top-list slot was shown with probability
    # 0.7 + 0.3 / n; an explored one 0.3 / n (or that, when the draw hit the top product), or
    # 1 / n when the source has no co-purchase of that rank
    first = frame.groupby("product")["ordered_at"].min().sort_values().to_numpy()
    day = (imp["shown_at"] - pd.Timedelta(seconds=1)).dt.floor("D").to_numpy()
    n = np.searchsorted(first, day, side="left")
    p = policy["propensity"].to_numpy()
    assert np.allclose(p[~explored], 0.7 + 0.3 / n[~explored])
    e = explored.to_numpy()
    allowed = np.isclose(p[e], 0.3 / n[e]) | np.isclose(p[e], 1 / n[e]) | np.isclose(p[e], 0.7 + 0.3 / n[e])
    assert allowed.all()


def test_a_lines_exposures_are_the_same_whichever_span_is_replayed():
    frame = random_orders(seed=1, customers=200, products=60, days=30, lines=3000)
    settings = cfg(shown_per_order=4, explore_share=0.5)
    whole = replayed(frame, 60, settings).impressions
    cut = T0 + 12 * DAY
    part = replayed(frame, 60, settings, until=cut).impressions
    early = whole[whole["shown_at"] <= cut + pd.Timedelta(seconds=1)]
    pd.testing.assert_frame_equal(part.reset_index(drop=True), early.reset_index(drop=True))


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_a_share_of_whole_baskets_is_replayed(share):
    rng = np.random.default_rng(2)
    customer = rng.integers(0, 2000, 20000)
    moment = rng.integers(0, 50, 20000) * 3_600 * 10**9
    kept = replay.sampled_baskets(customer, moment, share, seed=5)
    baskets = pd.DataFrame({"c": customer, "t": moment, "kept": kept}).groupby(["c", "t"])["kept"]
    assert (baskets.nunique() == 1).all()  # a basket is in or out as a whole
    assert abs(baskets.first().mean() - share) < 0.03
