"""A store's raw logs (``ingest.source: events``): orders, impressions, interactions and an
optional catalogue, each a parquet file, a partitioned parquet folder or a CSV/TSV file.

Each log is checked against its pandera schema (``schemas.RAW_*``: columns present, none
empty), its times parsed, its ids coded; what is wrong is refused naming the file, the column
and the first rows. What the field's convention cleans is cleaned and counted (``cleaning``,
into ``metrics/ingest.json``): exact duplicate rows (a row delivered twice) and order lines
with a quantity of 0 or less (returns and cancellations, not purchases). What the rows mean
(the graph, the labels) is decided in ``nextbuy.domain.events``, not here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nextbuy.config import EventsConfig
from nextbuy.data.sources import orders as store_orders
from nextbuy.data.sources.catalogue import catalogue_products, read_catalogue
from nextbuy.data.sources.keys import _checked, _impression_ids, _keys, _times, _when
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class EventLogs:
    """The logs coded for ``domain.events.build_from_logs`` (its input contract), with the
    products (``schemas.PRODUCTS``) whose ids they use."""

    products: pd.DataFrame
    orders: pd.DataFrame  # customer, product, ordered_at
    impressions: pd.DataFrame  # impression_id, customer, source_id, shown_id, shown_at
    interactions: pd.DataFrame  # customer, product, kind, at
    last_event: pd.Timestamp  # the latest time in any log (the default snapshot)
    cleaning: dict[str, int]


def coded_orders(
    path: os.PathLike | str,
    cleaning: dict[str, int],
    now: pd.Timestamp,
    frame: pd.DataFrame | None = None,
    cfg: EventsConfig | None = None,
) -> pd.DataFrame:
    """The orders log checked, cleaned and coded (``frame``: one part of it, whose returns may leave
    no line; ``cfg``: the export's column names and the lines to drop, ``data.sources.orders``;
    None: the pipeline's own names, nothing more dropped). The Spark engine's reader calls it on
    each part (``engines.spark.logs``). A ``price`` column comes back when the export has one."""

    def prepare(df: pd.DataFrame) -> pd.DataFrame:
        assert cfg is not None
        df = store_orders.renamed(path, df, cfg.orders_columns)
        needs_times = bool(cfg.cancellation_prefix and cfg.drop_cancelled_lines)
        times = _times(path, df.dropna(subset=["ordered_at"]), "ordered_at") if needs_times else None
        return store_orders.cleaned(path, df, cfg, times, cleaning)

    df = _checked(path, schemas.RAW_ORDERS, "orders", cleaning, frame, None if cfg is None else prepare)
    if "quantity" in df.columns:
        quantity = pd.to_numeric(df["quantity"], errors="coerce")
        bad = df.index[quantity.isna() | ~np.isfinite(quantity)]
        io.rows_error(path, df, {"quantity": bad} if len(bad) else {}, "have a quantity that is not a number")
        returned = (quantity <= 0).to_numpy()
        cleaning["orders_returns_dropped"] = int(returned.sum())
        if returned.any():
            log.warning(
                "%s: dropped %d order line(s) with quantity <= 0 (returns, cancellations)",
                path,
                returned.sum(),
            )
            df = df[~returned]
    if df.empty and frame is None:
        raise io.DataError(
            path, "no order lines left after dropping returns (quantity <= 0)", column="quantity"
        )
    coded = pd.DataFrame(
        {
            "customer": _keys(df["customer"]),
            "product": _keys(df["product"]),
            "ordered_at": _when(path, df, "ordered_at", now),
        }
    )
    if "price" in df.columns:
        coded["price"] = pd.to_numeric(df["price"], errors="coerce").to_numpy(np.float64)
    return coded


def coded_impressions(
    path: os.PathLike | str, cleaning: dict[str, int], now: pd.Timestamp, frame: pd.DataFrame | None = None
) -> pd.DataFrame:
    df = _checked(path, schemas.RAW_IMPRESSIONS, "impressions", cleaning, frame)
    return pd.DataFrame(
        {
            "impression_id": _impression_ids(path, df).to_numpy(np.int64),
            "customer": _keys(df["customer"]),
            "source_id": _keys(df["source_product"]),
            "shown_id": _keys(df["shown_product"]),
            "shown_at": _when(path, df, "shown_at", now),
        },
        index=df.index,
    )


def no_impressions() -> pd.DataFrame:
    """The impressions log of a store that logs none."""
    return pd.DataFrame(
        {
            "impression_id": np.zeros(0, np.int64),
            "customer": pd.Series([], dtype=object),
            "source_id": pd.Series([], dtype=object),
            "shown_id": pd.Series([], dtype=object),
            "shown_at": pd.Series([], dtype=schemas.TS),
        }
    )


def coded_interactions(
    path: os.PathLike | str | None,
    cleaning: dict[str, int],
    now: pd.Timestamp,
    frame: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The interactions log checked and coded (``frame``: one part of it; no log: an empty one),
    as ``coded_orders``."""
    if path is None:
        return pd.DataFrame(
            {
                "customer": pd.Series([], dtype=object),
                "product": pd.Series([], dtype=object),
                "kind": pd.Series([], dtype=object),
                "at": pd.Series([], dtype=schemas.TS),
            }
        )
    df = _checked(path, schemas.RAW_INTERACTIONS, "interactions", cleaning, frame)
    return pd.DataFrame(
        {
            "customer": _keys(df["customer"]),
            "product": _keys(df["product"]),
            "kind": df["kind"],
            "at": _when(path, df, "at", now),
        }
    )


def _count_before_launch(
    catalogue: pd.DataFrame,
    catalogue_path: str | None,
    orders_path: str | os.PathLike,
    orders: pd.DataFrame,
    impressions_path: str | os.PathLike | None,
    impressions: pd.DataFrame,
    cleaning: dict[str, int],
) -> None:
    """Orders and impressions dated before their product's ``launched_at`` in the catalogue:
    kept (a launch time entered late is the likelier error), counted and warned."""
    launch = catalogue.set_index("product")["launched_at"]
    launch = launch[~launch.index.duplicated()]
    checks: list[tuple[str, str | os.PathLike, pd.DataFrame, tuple[str, ...], str]] = [
        ("orders", orders_path, orders, ("product",), "ordered_at")
    ]
    if impressions_path:
        checks.append(("impressions", impressions_path, impressions, ("source_id", "shown_id"), "shown_at"))
    for name, path, frame, products, time in checks:
        early = np.zeros(len(frame), dtype=bool)
        for column in products:
            launched = launch.reindex(frame[column]).to_numpy("datetime64[ns]")
            early |= ~np.isnat(launched) & (frame[time].to_numpy("datetime64[ns]") < launched)
        cleaning[f"{name}_before_launch"] = int(early.sum())
        if early.any():
            first = frame.loc[early, [*products, time]].head(io.MAX_ROWS_SHOWN)
            log.warning(
                "%s: %d row(s) dated before their product's launched_at in %s (kept, counted as "
                "%s_before_launch: check the catalogue's launch times); first rows:\n%s",
                path,
                int(early.sum()),
                catalogue_path,
                name,
                first.to_string(),
            )


def _shown_customers_only(
    interactions: pd.DataFrame,
    impressions: pd.DataFrame,
    path: str | None,
    cleaning: dict[str, int],
) -> pd.DataFrame:
    """The interactions of customers the impressions log shows something to: the others label
    no impression (attribution joins by customer), so they are dropped, counted and warned."""
    shown = interactions["customer"].isin(impressions["customer"]).to_numpy()
    cleaning["interactions_of_customers_never_shown_dropped"] = int((~shown).sum())
    if shown.all():
        return interactions
    log.warning(
        "%s: dropped %d interaction(s) of %d customer(s) never shown a recommendation in the "
        "impressions log: they label no impression",
        path,
        int((~shown).sum()),
        interactions.loc[~shown, "customer"].nunique(),
    )
    return interactions[shown]  # each row keeps its index: its row in the log


def read_event_logs(
    orders_path: str,
    impressions_path: str | None,
    interactions_path: str | None,
    catalogue_path: str | None,
    snapshot: pd.Timestamp | None,
    max_gap_days: float,
    cfg: EventsConfig | None = None,
) -> EventLogs:
    """The logs read, checked, cleaned and coded (customers numbered across the logs; products
    numbered in order of first appearance, ``catalogue.appearance_order``, so a product keeps
    its id across snapshots of the store). ``impressions_path`` None: the store logs no
    impressions (an empty log; ``domain.replay`` replays exposures from its orders). ``cfg``:
    the orders export's columns and what to drop (``data.sources.orders``). ``snapshot`` None:
    the last event of any log; a log's times cut off from the rest of it by more than
    ``max_gap_days`` are refused."""
    cleaning: dict[str, int] = {}
    now = pd.Timestamp.now("UTC")
    orders = coded_orders(orders_path, cleaning, now, cfg=cfg)
    prices = None
    if "price" in orders.columns:
        prices = store_orders.median_prices(orders["product"], orders.pop("price"))
    impressions = coded_impressions(impressions_path, cleaning, now) if impressions_path else no_impressions()
    interactions = coded_interactions(interactions_path, cleaning, now)
    for path, frame, column in (
        (orders_path, orders, "ordered_at"),
        (impressions_path, impressions, "shown_at"),
        (interactions_path, interactions, "at"),
    ):
        io.rows_error(
            str(path),
            frame,
            schemas.check_isolated_times(frame, [column], max_gap_days),
            f"lie more than {max_gap_days:g} days from the rest of the log (ingest.max_event_gap_days)",
        )
    catalogue = read_catalogue(catalogue_path, cleaning)
    if catalogue is not None:
        _count_before_launch(
            catalogue, catalogue_path, orders_path, orders, impressions_path, impressions, cleaning
        )
    if impressions_path:
        interactions = _shown_customers_only(interactions, impressions, interactions_path, cleaning)
    last = max(t.max() for t in (orders["ordered_at"], impressions["shown_at"], interactions["at"]) if len(t))
    at = pd.Timestamp(last if snapshot is None else snapshot)
    keys = {
        "orders.product": orders["product"],
        "impressions.source_product": impressions["source_id"],
        "impressions.shown_product": impressions["shown_id"],
        "interactions.product": interactions["product"],
    }
    first_seen = pd.concat(
        [
            pd.Series(orders["ordered_at"].to_numpy(), index=orders["product"].to_numpy()),
            pd.Series(impressions["shown_at"].to_numpy(), index=impressions["source_id"].to_numpy()),
            pd.Series(impressions["shown_at"].to_numpy(), index=impressions["shown_id"].to_numpy()),
            pd.Series(interactions["at"].to_numpy(), index=interactions["product"].to_numpy()),
        ]
    )
    paths = {
        "orders": orders_path,
        "impressions": str(impressions_path),
        "interactions": str(interactions_path),
    }
    keep = cfg is not None and cfg.unlisted_products == "keep"
    products = catalogue_products(catalogue, keys, paths, at, cleaning, first_seen, keep)
    if prices is not None:
        unpriced = products["price"].isna()
        products.loc[unpriced, "price"] = prices.reindex(products.loc[unpriced, "product_key"]).to_numpy()
    ids = pd.Index(products["product_key"])
    customers = pd.Index(
        pd.unique(
            pd.concat(
                [orders["customer"], impressions["customer"], interactions["customer"]], ignore_index=True
            )
        )
    )
    cleaning |= {"products": len(products), "customers": len(customers)}
    coded = EventLogs(
        products=io.validate(products, schemas.PRODUCTS, catalogue_path or orders_path),
        orders=orders.assign(
            customer=customers.get_indexer(orders["customer"]), product=ids.get_indexer(orders["product"])
        ),
        impressions=impressions.assign(
            customer=customers.get_indexer(impressions["customer"]),
            source_id=ids.get_indexer(impressions["source_id"]),
            shown_id=ids.get_indexer(impressions["shown_id"]),
        ),
        interactions=interactions.assign(
            customer=customers.get_indexer(interactions["customer"]),
            product=ids.get_indexer(interactions["product"]),
        ),
        last_event=pd.Timestamp(last),
        cleaning=cleaning,
    )
    return coded
