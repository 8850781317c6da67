"""ingest's checks of what it built, pure: the cross-table checks and the session split of the
impressions (``finalise``), a graph's floor, the splits' floor, the snapshot's censoring of the
graph, and a log's events that lie in the future."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.config import SplitConfig
from nextbuy.domain import split as session_split
from nextbuy.mlops import io, schemas

# The smallest real graph ingest accepts (after cleaning and snapshot censoring): the
# simulated store's own floor (ingest.simulator.n_products >= 10). Each training epoch
# splits the edges into supervised positives (train.supervision_share) and message-passing
# edges, and draws random negatives over all products; with fewer edges or products the link
# loss has next to nothing to learn from, and with 2 products every "negative" is the
# positive or its reverse. A one-edge graph would otherwise train "successfully".
MIN_GRAPH_PRODUCTS = 10
MIN_GRAPH_EDGES = 10


def assign_split(source_key: pd.Series, shown_at: pd.Series, split: SplitConfig) -> np.ndarray:
    """The session split of ``nextbuy.domain.split`` with ingest.split's settings. (`nextbuy
    bench delay` scores models on days *after* the snapshot with the simulator's eventual
    labels; no stage reads those.)"""
    return session_split.assign_split(source_key, shown_at, split.test_share, split.calib_share, split.seed)


def refuse_future_events(log: pd.DataFrame, events: list[str], origin: str, now: pd.Timestamp) -> None:
    """DataError naming the file, the column and the first rows when an event lies after ``now``
    (the wall clock, UTC): a log cannot hold what has not happened, and one such row (a typo'd
    year) would move a snapshot taken from the log's last event far into the future."""
    clock = pd.Timestamp(now).tz_convert(None) if pd.Timestamp(now).tzinfo else pd.Timestamp(now)
    bad = {col: log.index[(log[col] > clock).to_numpy()] for col in events if col in log}
    found = {col: rows for col, rows in bad.items() if len(rows)}
    io.rows_error(origin, log, found, f"lie after now ({clock:%Y-%m-%d %H:%M} UTC)")


def finalise(
    products: pd.DataFrame,
    edges: pd.DataFrame,
    impressions_log: pd.DataFrame,
    snapshot: pd.Timestamp,
    split: SplitConfig,
    origin: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-table checks, snapshot censoring of the graph, and the session split (pure)."""
    io.rows_error(
        origin,
        impressions_log,
        schemas.check_known_products(impressions_log, ("source_id", "shown_id"), products["product_id"]),
        "refer to a product id that is not in the products table",
    )
    io.rows_error(
        origin, impressions_log, schemas.check_event_order(impressions_log), "happen before shown_at"
    )
    io.rows_error(
        origin, impressions_log, schemas.check_funnel_order(impressions_log), "happen after converted_at"
    )
    edges = censored(edges, snapshot)
    impressions = impressions_log[list(schemas.IMPRESSIONS_LOG.columns)].copy()
    source_key = products.set_index("product_id")["product_key"].reindex(impressions["source_id"])
    impressions["split"] = assign_split(source_key.to_numpy(), impressions["shown_at"], split)
    check_splits(impressions["split"].value_counts().to_dict(), len(impressions), origin)
    return edges, impressions


def censored(edges: pd.DataFrame, snapshot: pd.Timestamp) -> pd.DataFrame:
    """The graph may only hold co-purchases the store had seen by the snapshot."""
    return edges[edges["time"].isna() | (edges["time"] <= snapshot)].reset_index(drop=True)


def check_splits(sizes: dict[str, int], total: int, origin: str) -> None:
    """DataError when a split has no impression (``sizes``: rows per split)."""
    empty = [s for s in schemas.SPLITS if sizes.get(s, 0) == 0]
    if empty:
        raise io.DataError(
            origin,
            f"split(s) {empty} are empty: the {total} impressions form too few "
            "sessions (source product x day) for ingest.split's shares",
            column="source_id",
        )


def check_graph_size(products: pd.DataFrame, edges: pd.DataFrame, origin: str) -> None:
    """DataError when a real graph is too small to train on (see ``MIN_GRAPH_PRODUCTS``)."""
    if len(products) < MIN_GRAPH_PRODUCTS or len(edges) < MIN_GRAPH_EDGES:
        raise io.DataError(
            origin,
            f"graph too small to train on: {len(products)} product(s) and {len(edges)} edge(s) after "
            f"cleaning and snapshot censoring; ingest needs at least {MIN_GRAPH_PRODUCTS} products "
            f"and {MIN_GRAPH_EDGES} edges",
        )


def check_orders_span(orders: pd.DataFrame, window_days: float, origin: str) -> None:
    """DataError when the orders span less than one co-purchase window: no customer could be
    seen buying again within it, so the graph would be an artefact of where the log starts."""
    if orders.empty:
        return
    span = orders["ordered_at"].max() - orders["ordered_at"].min()
    if span < pd.Timedelta(days=window_days):
        raise io.DataError(
            origin,
            f"the orders span {span} (from {orders['ordered_at'].min()} to {orders['ordered_at'].max()}), "
            f"less than ingest.events.graph_window_days={window_days:g}: bring a longer export or "
            "shorten the window",
            column="ordered_at",
        )
