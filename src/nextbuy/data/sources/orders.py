"""A store's orders export as it comes: its own column names, and the lines that are not
purchases a real export carries (``ingest.events``: orders_columns, missing_customer,
cancellation_prefix, drop_cancelled_lines, non_product_pattern, and a price column).

Every line dropped here is counted in ``cleaning`` (into ``metrics/ingest.json``) under a name
ending in ``_dropped``, and logged: nothing is cleaned silently. What is refused is refused
naming the file, the column and the first rows.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from nextbuy.config import EventsConfig
from nextbuy.mlops import io

log = logging.getLogger(__name__)


def renamed(path: os.PathLike | str, df: pd.DataFrame, columns: dict[str, str | None]) -> pd.DataFrame:
    """The export's columns under the pipeline's field names (``columns``: field -> the export's
    column). A named column the export lacks is refused naming it; unnamed fields are left out,
    and so is every other column of the export."""
    named = {field: column for field, column in columns.items() if column}
    missing = [column for column in named.values() if column not in df.columns]
    if missing:
        raise io.DataError(
            path,
            f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, df.columns))}); "
            "ingest.events.orders_columns says which column holds each field",
            column=missing[0],
        )
    identity = all(field == column for field, column in named.items())
    if identity and set(df.columns) <= set(named):
        return df
    return df[list(named.values())].set_axis(list(named), axis=1)


def _drop(
    path: os.PathLike | str,
    df: pd.DataFrame,
    dropped: np.ndarray,
    key: str,
    what: str,
    cleaning: dict[str, int],
) -> pd.DataFrame:
    cleaning[key] = cleaning.get(key, 0) + int(dropped.sum())
    if dropped.any():
        log.warning("%s: dropped %d order line(s) %s", path, int(dropped.sum()), what)
        return df[~dropped]
    return df


def cancelled_lines(lines: pd.DataFrame, cancels: pd.DataFrame) -> pd.Index:
    """The index of the line each cancellation cancels: the same customer's latest line of the
    same product and quantity at or before the cancellation (an export such as Online Retail's
    does not link them; this is the rule its users apply). A line is cancelled once."""
    if cancels.empty or lines.empty:
        return lines.index[:0]
    key = ["customer", "product", "units"]
    left = cancels.assign(units=-pd.to_numeric(cancels["quantity"], errors="coerce"))
    right = lines.assign(units=pd.to_numeric(lines["quantity"], errors="coerce"), line=lines.index)
    for frame in (left, right):
        for column in ("customer", "product"):
            frame[column] = frame[column].astype(str)
    left = left.dropna(subset=["units", "at"]).sort_values("at", kind="stable")
    right = right.dropna(subset=["units", "at"]).sort_values("at", kind="stable")
    matched = pd.merge_asof(left, right[[*key, "at", "line"]], on="at", by=key, direction="backward")
    return pd.Index(matched["line"].dropna().astype(lines.index.dtype).unique())


def cleaned(
    path: os.PathLike | str,
    df: pd.DataFrame,
    cfg: EventsConfig,
    times: pd.Series | None,
    cleaning: dict[str, int],
) -> pd.DataFrame:
    """The order lines that are purchases (``df``: the export's lines, already renamed;
    ``times``: their parsed ``ordered_at``, needed to match cancellations to the lines they
    cancel). Drops and counts, in this order: lines with no customer (``missing_customer:
    drop``), cancellations and the lines they cancel, lines of ``non_product_pattern``, lines with a
    price of 0 or less."""
    if cfg.missing_customer == "drop":
        blank = df["customer"].isna() | (df["customer"].astype(str).str.strip() == "")
        df = _drop(
            path, df, blank.to_numpy(), "orders_missing_customer_dropped", "with no customer", cleaning
        )
    if cfg.cancellation_prefix:
        cancel = df["order"].astype(str).str.strip().str.startswith(cfg.cancellation_prefix).to_numpy()
        undone = pd.Index([])
        if cfg.drop_cancelled_lines and "quantity" in df.columns and times is not None:
            at = times.reindex(df.index)
            undone = cancelled_lines(df[~cancel].assign(at=at[~cancel]), df[cancel].assign(at=at[cancel]))
        df = _drop(
            path,
            df,
            cancel,
            "orders_cancellations_dropped",
            f"that are cancellations (order id starting with {cfg.cancellation_prefix!r})",
            cleaning,
        )
        df = _drop(
            path,
            df,
            df.index.isin(undone),
            "orders_cancelled_lines_dropped",
            "that a later cancellation cancels",
            cleaning,
        )
    if cfg.non_product_pattern:
        other = df["product"].astype(str).str.strip().str.fullmatch(cfg.non_product_pattern).to_numpy(bool)
        df = _drop(
            path,
            df,
            other,
            "orders_non_product_dropped",
            f"of keys that are no product (non_product_pattern {cfg.non_product_pattern!r})",
            cleaning,
        )
    if "price" in df.columns:
        price = pd.to_numeric(df["price"], errors="coerce")
        bad = df.index[df["price"].notna() & price.isna()]
        io.rows_error(path, df, {"price": bad} if len(bad) else {}, "have a price that is not a number")
        df = _drop(
            path,
            df,
            (price <= 0).to_numpy(),
            "orders_price_not_positive_dropped",
            "with a price <= 0",
            cleaning,
        )
    return df


def median_prices(keys: pd.Series, price: pd.Series) -> pd.Series:
    """Each product key's median unit price over its order lines (NaN prices left out)."""
    known = price.notna()
    return pd.to_numeric(price[known]).groupby(keys[known].to_numpy()).median()
