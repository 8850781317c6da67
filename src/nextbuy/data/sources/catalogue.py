"""A store's catalogue (``ingest.catalogue_path``: product[, category, price, launched_at]) and
the products table it gives: every product it lists, also those nobody ordered or linked, and
every product a log or graph names (refused when the catalogue does not list it)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from nextbuy.data.sources.keys import GraphSource, _checked, _keys, _sorted_keys, _times
from nextbuy.mlops import io, schemas


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


def read_catalogue(path: os.PathLike | str | None, cleaning: dict[str, int]) -> pd.DataFrame | None:
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


def catalogue_products(
    catalogue: pd.DataFrame | None,
    keys: dict[str, pd.Series],
    paths: dict[str, str],
    snapshot: pd.Timestamp,
    cleaning: dict[str, int],
    first_seen: pd.Series | None = None,
    keep_unlisted: bool = False,
) -> pd.DataFrame:
    """schemas.PRODUCTS: the catalogue's products launched by ``snapshot`` and every product a log
    names (refused when a catalogue is given and does not list it), numbered in key order, or
    with ``first_seen`` (key -> the first time a log names it) in order of appearance
    (:func:`appearance_order`). ``keep_unlisted``: a product a log names that the catalogue does
    not list is kept with an unknown category and price (counted), not refused."""
    mentioned = pd.unique(pd.concat(list(keys.values()), ignore_index=True))
    if catalogue is None:
        listed = pd.DataFrame({"product": mentioned, "category": -1, "price": np.nan})
    else:
        known = pd.Index(catalogue["product"])
        if keep_unlisted:
            unlisted = pd.Index(mentioned).difference(known)
            cleaning["products_not_in_catalogue_kept"] = len(unlisted)
            extra = pd.DataFrame({"product": unlisted.to_numpy(object), "category": -1, "price": np.nan})
            catalogue = pd.concat([catalogue, extra.assign(launched_at=pd.NaT)], ignore_index=True)
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
    if first_seen is not None:
        launched = listed.set_index("product")["launched_at"] if "launched_at" in listed.columns else None
        order = appearance_order(order, first_seen, launched)
    listed = listed.set_index("product").reindex(order)
    return pd.DataFrame(
        {
            "product_id": np.arange(len(order), dtype=np.int64),
            "product_key": order.astype(object),
            "category": listed["category"].to_numpy(np.int64),
            "price": listed["price"].to_numpy(np.float64),
        }
    )


def appearance_order(keys: np.ndarray, first_seen: pd.Series, launched: pd.Series | None) -> np.ndarray:
    """``keys`` (unique, in key order) in order of appearance: the earlier of a product's first
    time in the logs and its launch, ties in key order; products with neither last, in key order.

    This is what keeps a product's index across snapshots of one store: a later export holds the
    earlier one's history, so the products seen by then come first in the same order, and
    products that appear later are appended after them. A renamed key is a new product (its
    first time is the rename) and the old key keeps its place; a product that stops selling
    keeps its first time. A catalogue product with no launch time and no order moves when it
    first sells: give launched_at to pin it."""
    index = pd.Index(keys)
    first = first_seen.groupby(level=0).min().reindex(index)
    if launched is not None:
        first = pd.concat([first, launched.reindex(index)], axis=1).min(axis=1)
    ns = first.to_numpy("datetime64[ns]").view(np.int64)
    never = first.isna().to_numpy()
    ns = np.where(never, np.iinfo(np.int64).max, ns)
    return keys[np.lexsort((np.arange(len(keys)), ns))]


def graph_with_catalogue(graph: GraphSource, graph_path: str, path: str) -> GraphSource:
    """An edge list's graph over the catalogue's products: products with no edge join it (an
    impressions log may show them), categories and prices come from the catalogue, and an
    edge-list product the catalogue does not list is refused. Product ids are renumbered in key
    order over the union; the edges follow them."""
    cleaning = dict(graph.cleaning)
    catalogue = read_catalogue(path, cleaning)
    assert catalogue is not None  # a path was given
    old_keys = graph.products["product_key"].astype(str)
    keys = {"edges.product": pd.Series(old_keys.to_numpy(), index=graph.products["product_id"].to_numpy())}
    products = catalogue_products(catalogue, keys, {"edges": graph_path}, pd.Timestamp.max, cleaning)
    new_id = pd.Index(products["product_key"]).get_indexer(old_keys)[np.argsort(graph.products["product_id"])]
    edges = graph.edges.assign(src=new_id[graph.edges["src"]], dst=new_id[graph.edges["dst"]])
    edges = edges.sort_values(["src", "dst"], ignore_index=True)
    cleaning["products"] = len(products)
    return GraphSource(io.validate(products, schemas.PRODUCTS, path), edges, cleaning, graph.features)
