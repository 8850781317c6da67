"""Raw logs to the directed graph and labelled impressions: each rule of ingest.events as a
user would check it on a handful of rows, and the attribution join against a brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.domain import events
from tests.helpers import config

T0 = pd.Timestamp("2026-03-01")


def at(days: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=days)


def rules(**changes):
    base = {"graph_window_days": 10.0, "graph_lookback_orders": 5, "attribution_days": 7.0}
    return config("ingest.events", **(base | changes))


def orders(*rows: tuple[int, int, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer": [r[0] for r in rows],
            "product": [r[1] for r in rows],
            "ordered_at": [at(r[2]) for r in rows],
        }
    )


def impressions(*rows: tuple[int, int, int, int, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "impression_id": [r[0] for r in rows],
            "customer": [r[1] for r in rows],
            "source_id": [r[2] for r in rows],
            "shown_id": [r[3] for r in rows],
            "shown_at": [at(r[4]) for r in rows],
        }
    )


def interactions(*rows: tuple[int, int, str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer": pd.Series([r[0] for r in rows], dtype=np.int64),
            "product": pd.Series([r[1] for r in rows], dtype=np.int64),
            "kind": pd.Series([r[2] for r in rows], dtype=object),
            "at": pd.Series([at(r[3]) for r in rows], dtype="datetime64[ns]"),
        }
    )


NO_IMPRESSION = impressions((0, 9, 0, 1, 0.0))


def graph(order_rows: pd.DataFrame, **changes) -> pd.DataFrame:
    built = events.build_from_logs(order_rows, NO_IMPRESSION, interactions(), 10, rules(**changes), at(100))
    return built.edges


def test_an_edge_joins_a_customers_order_to_the_next_within_the_window():
    edges = graph(orders((0, 1, 0), (0, 2, 3), (0, 3, 20), (1, 1, 1), (1, 2, 2)))
    # 1 -> 2 twice (two customers), first seen at the later order of the first pair; 2 -> 3
    # is 17 days apart (window 10): no edge; no pair across customers.
    assert edges.to_dict("records") == [{"src": 1, "dst": 2, "weight": 2.0, "time": at(2)}]


def test_one_basket_repeats_and_far_orders_make_no_edge():
    edges = graph(orders((0, 1, 0), (0, 2, 0), (0, 2, 1), (0, 4, 1), (0, 4, 30)))
    pairs = set(zip(edges["src"], edges["dst"], strict=True))
    # the basket {1, 2} at day 0: no 1 -> 2 nor 2 -> 1 between them; 2 bought again: no loop
    assert pairs == {(1, 2), (2, 4), (1, 4)}
    assert edges.set_index(["src", "dst"]).loc[(1, 2), "time"] == at(1)


def test_the_lookback_bounds_how_many_earlier_orders_link_to_an_order():
    steps = orders(*((0, p, p) for p in range(6)))
    assert len(graph(steps, graph_lookback_orders=1)) == 5  # 0->1, 1->2, ... only
    assert len(graph(steps, graph_lookback_orders=2)) == 5 + 4
    assert len(graph(steps, graph_window_days=1.5, graph_lookback_orders=5)) == 5


def label(imp, order_rows, inter, **changes) -> dict:
    built = events.build_from_logs(order_rows, imp, inter, 10, rules(**changes), at(30))
    return built.impressions.iloc[0].to_dict()


def test_an_impression_takes_the_customers_first_events_on_the_shown_product_in_the_window():
    row = label(
        impressions((5, 0, 1, 2, 1.0)),
        orders((0, 2, 0.5), (0, 2, 3.0), (0, 2, 4.0), (1, 2, 1.5), (0, 3, 1.2)),
        interactions((0, 2, "click", 1.1), (0, 2, "click", 1.2), (0, 2, "cart", 2.0), (1, 2, "click", 1.05)),
    )
    assert row["impression_id"] == 5
    # the order before the impression, the other customer's and the other product's do not count
    assert (row["clicked_at"], row["carted_at"], row["converted_at"]) == (at(1.1), at(2.0), at(3.0))


def test_events_after_the_attribution_window_or_after_the_conversion_are_not_its_funnel():
    late = label(impressions((5, 0, 1, 2, 1.0)), orders((0, 2, 9.0)), interactions((0, 2, "click", 8.5)))
    assert pd.isna(late["converted_at"])
    assert pd.isna(late["clicked_at"])
    wider = label(impressions((5, 0, 1, 2, 1.0)), orders((0, 2, 9.0)), interactions(), attribution_days=8.0)
    assert wider["converted_at"] == at(9.0)
    after = label(impressions((5, 0, 1, 2, 1.0)), orders((0, 2, 2.0)), interactions((0, 2, "cart", 2.5)))
    assert after["converted_at"] == at(2.0)
    assert pd.isna(after["carted_at"])  # a conversion ends the funnel


def test_the_snapshot_censors_later_orders_and_drops_later_impressions():
    imp = impressions((1, 0, 1, 2, 28.0), (2, 0, 1, 2, 31.0))
    built = events.build_from_logs(orders((0, 2, 32.0)), imp, interactions(), 10, rules(), at(30))
    assert built.impressions["impression_id"].tolist() == [1]
    assert pd.isna(built.impressions["converted_at"].iloc[0])  # it converts after the snapshot
    assert built.counts["impressions_after_snapshot_dropped"] == 1


def brute_force(imp_key, imp_t, ev_key, ev_t, window):
    out = []
    for k, t in zip(imp_key, imp_t, strict=True):
        hits = [e for ek, e in zip(ev_key, ev_t, strict=True) if ek == k and t <= e <= t + window]
        out.append(min(hits) if hits else events.NAT)
    return np.array(out, dtype=np.int64)


small = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(small, small, st.integers(0, 10))
def test_first_event_after_is_the_brute_force_answer(imps, evs, window):
    imp_key = np.array([k for k, _ in imps], dtype=np.int64)
    imp_t = np.array([t for _, t in imps], dtype=np.int64)
    ev_key = np.array([k for k, _ in evs], dtype=np.int64)
    ev_t = np.array([t for _, t in evs], dtype=np.int64)
    got = events.first_event_after(imp_key, imp_t, ev_key, ev_t, window)
    assert got.tolist() == brute_force(imp_key, imp_t, ev_key, ev_t, window).tolist()


@settings(max_examples=50, deadline=None)
@given(small, small, st.integers(0, 10), st.integers(1, 6))
def test_joining_in_key_ranges_gives_the_one_pass_answer(imps, evs, window, chunk):
    imp_key = np.array([k for k, _ in imps], dtype=np.int64)
    imp_t = np.array([t for _, t in imps], dtype=np.int64)
    ev_key = np.array([k for k, _ in evs], dtype=np.int64)
    ev_t = np.array([t for _, t in evs], dtype=np.int64)
    whole = events.first_event_after(imp_key, imp_t, ev_key, ev_t, window)
    assert (
        events.first_event_after(imp_key, imp_t, ev_key, ev_t, window, chunk=chunk).tolist() == whole.tolist()
    )
