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
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from nextbuy.data.sources.keys import _impression_ids, _keys, _sorted_keys, _times
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")


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


def read_log(path: os.PathLike | str) -> pd.DataFrame:
    """One raw log: a parquet file, a folder of parquet files (hive partitions such as
    ``month=2026-01/`` become columns), or a CSV (``,``) / TSV file."""
    p = Path(path)
    if not p.is_dir():
        if p.suffix.lower() in (".csv", ".tsv"):
            io.check_file(p)
            try:
                return pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",", encoding="utf-8-sig")
            except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable file
                raise io.DataError(p, f"unreadable file ({type(err).__name__}: {err})") from None
        return io.read_frame(p)
    if not any(f.suffix.lower() in PARQUET_SUFFIXES for f in p.rglob("*") if f.is_file()):
        raise io.DataError(
            p, "a folder with no .parquet file in it (a partitioned log is a folder of parquet)"
        )
    try:
        frame = pd.read_parquet(p)
    except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable folder
        raise io.DataError(p, f"unreadable parquet folder ({type(err).__name__}: {err})") from None
    # hive partition values arrive as categoricals: plain values, as in a single file
    return frame.astype({c: str for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


def _without_copies(
    path: os.PathLike | str, df: pd.DataFrame, name: str, cleaning: dict[str, int]
) -> pd.DataFrame:
    """``df`` without later copies of exact duplicate rows, counted as ``<name>_duplicate_rows_dropped``."""
    try:
        repeated = df.duplicated(keep="first").to_numpy()
    except TypeError:  # unhashable cells (a parquet list column): compare them as text
        repeated = df.astype(str).duplicated(keep="first").to_numpy()
    cleaning[f"{name}_duplicate_rows_dropped"] = int(repeated.sum())
    if repeated.any():
        log.warning(
            "%s: dropped %d exact duplicate row(s) of %d (a row delivered twice)",
            path,
            repeated.sum(),
            len(df),
        )
    return df[~repeated] if repeated.any() else df


def _when(path: os.PathLike | str, df: pd.DataFrame, column: str, now: pd.Timestamp) -> pd.Series:
    """A time column parsed; DataError for a time after ``now`` (the wall clock, UTC): a log
    cannot hold what has not happened, and one such row (a typo'd year) would move a snapshot
    taken from the logs' end far into the future."""
    times = _times(path, df, column)
    clock = now.tz_convert(None) if now.tzinfo else now
    late = df.index[(times > clock).to_numpy()]
    io.rows_error(
        path, df, {column: late} if len(late) else {}, f"lie after now ({clock:%Y-%m-%d %H:%M} UTC)"
    )
    return times


def _checked(
    path: os.PathLike | str, schema: pa.DataFrameSchema, name: str, cleaning: dict[str, int]
) -> pd.DataFrame:
    """The log, its exact duplicate rows dropped (counted), checked against ``schema``."""
    df = read_log(path).reset_index(drop=True)
    if df.empty:
        raise io.DataError(path, "file has no rows")
    if "kind" in df.columns and schema is schemas.RAW_INTERACTIONS:
        df["kind"] = df["kind"].astype("string").str.strip().str.lower().astype(object)
    cleaning[f"{name}_rows_read"] = len(df)
    return io.validate(_without_copies(path, df, name, cleaning), schema, path)


def _orders(path: os.PathLike | str, cleaning: dict[str, int], now: pd.Timestamp) -> pd.DataFrame:
    df = _checked(path, schemas.RAW_ORDERS, "orders", cleaning)
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
    if df.empty:
        raise io.DataError(
            path, "no order lines left after dropping returns (quantity <= 0)", column="quantity"
        )
    return pd.DataFrame(
        {
            "customer": _keys(df["customer"]),
            "product": _keys(df["product"]),
            "ordered_at": _when(path, df, "ordered_at", now),
        }
    )


def _impressions(path: os.PathLike | str, cleaning: dict[str, int], now: pd.Timestamp) -> pd.DataFrame:
    df = _checked(path, schemas.RAW_IMPRESSIONS, "impressions", cleaning)
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


def _interactions(
    path: os.PathLike | str | None, cleaning: dict[str, int], now: pd.Timestamp
) -> pd.DataFrame:
    if path is None:
        return pd.DataFrame(
            {
                "customer": pd.Series([], dtype=object),
                "product": pd.Series([], dtype=object),
                "kind": pd.Series([], dtype=object),
                "at": pd.Series([], dtype=schemas.TS),
            }
        )
    df = _checked(path, schemas.RAW_INTERACTIONS, "interactions", cleaning)
    return pd.DataFrame(
        {
            "customer": _keys(df["customer"]),
            "product": _keys(df["product"]),
            "kind": df["kind"],
            "at": _when(path, df, "at", now),
        }
    )


def _category(path: os.PathLike | str, df: pd.DataFrame) -> np.ndarray:
    """Integer categories as written (>= 0); text categories numbered in sorted order; -1 = none."""
    if "category" not in df.columns:
        return np.full(len(df), -1, np.int64)
    raw = df["category"]
    number = pd.to_numeric(raw, errors="coerce")
    given = raw.notna()
    if (number[given].notna().all()) and (number[given] % 1 == 0).all():
        bad = df.index[given & (number < 0)]
        io.rows_error(path, df, {"category": bad} if len(bad) else {}, "have a negative category number")
        return number.fillna(-1).to_numpy(np.int64)
    text = raw.astype("string").str.strip()
    names = np.unique(text[given].to_numpy(str))
    return np.where(given, pd.Index(names).get_indexer(text.fillna("")), -1).astype(np.int64)


def _catalogue(path: os.PathLike | str | None, cleaning: dict[str, int]) -> pd.DataFrame | None:
    """product (key), category, price, launched_at; None without a catalogue."""
    if path is None:
        return None
    df = _checked(path, schemas.RAW_CATALOGUE, "catalogue", cleaning)
    price = (
        pd.to_numeric(df["price"], errors="coerce")
        if "price" in df.columns
        else pd.Series(np.nan, index=df.index)
    )
    if "price" in df.columns:
        bad = df.index[df["price"].notna() & ~(np.isfinite(price) & (price > 0))]
        io.rows_error(
            path, df, {"price": bad} if len(bad) else {}, "have a price that is not a positive number"
        )
    launched = (
        _times(path, df, "launched_at")
        if "launched_at" in df.columns
        else pd.Series(pd.NaT, index=df.index, dtype=schemas.TS)
    )
    return pd.DataFrame(
        {
            "product": _keys(df["product"]),
            "category": _category(path, df),
            "price": price.astype(np.float64),
            "launched_at": launched,
        },
        index=df.index,
    )


def _products(
    catalogue: pd.DataFrame | None,
    keys: dict[str, pd.Series],
    paths: dict[str, str],
    snapshot: pd.Timestamp,
    cleaning: dict[str, int],
) -> pd.DataFrame:
    """schemas.PRODUCTS: the catalogue's products launched by ``snapshot`` and every product a log
    names (refused when a catalogue is given and does not list it), numbered in key order."""
    mentioned = pd.unique(pd.concat(list(keys.values()), ignore_index=True))
    if catalogue is None:
        listed = pd.DataFrame({"product": mentioned, "category": -1, "price": np.nan})
    else:
        known = pd.Index(catalogue["product"])
        for where, values in keys.items():
            name, column = where.split(".")
            unknown = values.index[~values.isin(known)]
            io.rows_error(
                paths[name],
                values.to_frame(column),
                {column: unknown} if len(unknown) else {},
                "name a product the catalogue does not list",
            )
        late = (catalogue["launched_at"] > snapshot) & ~catalogue["product"].isin(mentioned)
        cleaning["catalogue_launched_after_snapshot_dropped"] = int(late.sum())
        listed = catalogue[~late.to_numpy()]
    order = _sorted_keys(listed["product"].to_numpy(str))
    listed = listed.set_index("product").reindex(order)
    return pd.DataFrame(
        {
            "product_id": np.arange(len(order), dtype=np.int64),
            "product_key": order.astype(object),
            "category": listed["category"].to_numpy(np.int64),
            "price": listed["price"].to_numpy(np.float64),
        }
    )


def read_event_logs(
    orders_path: str,
    impressions_path: str,
    interactions_path: str | None,
    catalogue_path: str | None,
    snapshot: pd.Timestamp | None,
) -> EventLogs:
    """The four logs read, checked, cleaned and coded (product ids of the returned products,
    customers numbered across the logs). ``snapshot`` None: the last event of any log."""
    cleaning: dict[str, int] = {}
    now = pd.Timestamp.now("UTC")
    orders = _orders(orders_path, cleaning, now)
    impressions = _impressions(impressions_path, cleaning, now)
    interactions = _interactions(interactions_path, cleaning, now)
    catalogue = _catalogue(catalogue_path, cleaning)
    last = max(t.max() for t in (orders["ordered_at"], impressions["shown_at"], interactions["at"]) if len(t))
    at = pd.Timestamp(last if snapshot is None else snapshot)
    keys = {
        "orders.product": orders["product"],
        "impressions.source_product": impressions["source_id"],
        "impressions.shown_product": impressions["shown_id"],
        "interactions.product": interactions["product"],
    }
    paths = {"orders": orders_path, "impressions": impressions_path, "interactions": str(interactions_path)}
    products = _products(catalogue, keys, paths, at, cleaning)
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
