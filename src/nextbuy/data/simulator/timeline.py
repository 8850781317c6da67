"""The simulated store on one timeline: its purchase history, its traffic over a span, and
the store as ingest and the traffic stage read it (see the package docstring)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.config import SimulatorConfig
from nextbuy.data.simulator.purchases import (
    aggregate_edges,
    base_world,
    purchases_on_days,
)
from nextbuy.data.simulator.traffic import Window, simulate_traffic
from nextbuy.data.simulator.world import (
    DAY_ID_BASE,
    NS_PER_DAY,
    StoreWorld,
    Traffic,
    day_seed,
)


def _days(world: StoreWorld, lo: pd.Timestamp, hi: pd.Timestamp) -> range:
    """Indices k of the world's days [start + k days, start + k + 1 days) that meet [lo, hi)."""
    first = int(np.floor((lo.value - world.start.value) / NS_PER_DAY))
    last = int(np.ceil((hi.value - world.start.value) / NS_PER_DAY))
    return range(first, last)


def simulate_history(world: StoreWorld, cfg: SimulatorConfig, seed: int, snapshot: pd.Timestamp) -> Traffic:
    """Impressions shown in the ``history_days`` before ``snapshot``, observed at it.

    One timeline: the world's base window [world.start, world.snapshot) is one batch of
    ``n_impressions`` (seed), every other day is a batch of its own (n_impressions /
    history_days, from that day's stream). So a later snapshot is the same store with more
    days: an impression keeps its id, time and outcome, only what the snapshot censors
    differs. The logging policy recommends from the world's (base) co-purchase graph.
    """
    snapshot = pd.Timestamp(snapshot)
    return simulate_span(world, cfg, seed, snapshot - pd.Timedelta(days=cfg.history_days), snapshot)


def simulate_span(
    world: StoreWorld, cfg: SimulatorConfig, seed: int, lo: pd.Timestamp, observe_at: pd.Timestamp
) -> Traffic:
    """The store's impressions shown in [lo, observe_at), observed at ``observe_at`` (the one
    timeline of :func:`simulate_history`, over any span)."""
    lo, snapshot = pd.Timestamp(lo), pd.Timestamp(observe_at)
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
        parts.append(simulate_traffic(world, cfg, day_seed(seed, day), per_day, window, id_offset=offset))
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


def store_purchases(
    cfg: SimulatorConfig, seed: int, at: pd.Timestamp | str | None = None
) -> tuple[StoreWorld, np.ndarray]:
    """The world at its origin snapshot and every "bought u, then v" purchase (rows u, v, t_ns)
    before ``at`` (None: that origin): the raw pairs behind the graph of :func:`simulate_store`."""
    world, catalogue, bought = base_world(cfg, seed)
    end: pd.Timestamp = world.snapshot if at is None else pd.Timestamp(at)
    if end != world.snapshot:
        later = purchases_on_days(world, catalogue, cfg, seed, _days(world, world.snapshot, end))
        bought = np.concatenate([bought, later], axis=1)
    return world, bought[:, bought[2] < end.value]


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
    world, bought = store_purchases(cfg, seed, snapshot)
    at: pd.Timestamp = world.snapshot if snapshot is None else pd.Timestamp(snapshot)
    edges = world.edges if at == world.snapshot else aggregate_edges(bought[0], bought[1], bought[2])
    history = simulate_history(world, cfg, seed, at)
    start = at - pd.Timedelta(days=cfg.history_days)
    return StoreWorld(world.products, world.truth_products, edges, start, at), history
