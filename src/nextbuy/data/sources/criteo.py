"""The Criteo conversion log (Chapelle 2014: click time, conversion time, 8 integer and 9
categorical features, tab-separated) as products and impressions."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.data.sources.keys import _no_missing, _sorted_keys
from nextbuy.mlops import io, schemas
from nextbuy.mlops.io import DataError

log = logging.getLogger(__name__)


CRITEO_INT_COLUMNS = tuple(f"int_{i}" for i in range(1, 9))
CRITEO_CAT_COLUMNS = tuple(f"cat_{i}" for i in range(1, 10))
# The file has no header; errors name its fields by these names.
CRITEO_COLUMNS = ("click_ts", "conversion_ts", *CRITEO_INT_COLUMNS, *CRITEO_CAT_COLUMNS)
# Criteo logs clicks on ads, not "bought u, shown v" pairs: every row gets this one pseudo
# product as its source, so the log fits schemas.IMPRESSIONS_LOG (source_id is required).
CRITEO_CONTEXT_KEY = "criteo:context"
CRITEO_UNKNOWN_KEY = "unknown"
_INTEGER = r"[+-]?\d+"


@dataclass(frozen=True, eq=False)
class CriteoLog:
    products: pd.DataFrame  # schemas.PRODUCTS, the context pseudo product included
    impressions: pd.DataFrame  # schemas.IMPRESSIONS_LOG, one clicked impression per row
    # int_1..int_8 (float64, NaN when empty) and cat_1..cat_9 (str, "" when empty),
    # on the impressions' index.
    features: pd.DataFrame


def _field_counts(raw: bytes) -> np.ndarray:
    """Tab-separated fields per line (a blank line has 1), counted on the bytes."""
    data = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if data[-1] != ord("\n"):
        ends = np.append(ends, data.size)  # a last line without newline
    starts = np.concatenate(([0], ends[:-1] + 1))
    # Each segment starts[i]:starts[i+1] is a line plus its newline, so never empty.
    return np.add.reduceat((data == ord("\t")).view(np.uint8), starts, dtype=np.int64) + 1


def _criteo_times(path: os.PathLike | str, raw: pd.DataFrame, column: str, start: pd.Timestamp) -> pd.Series:
    """``start`` + integer seconds (NaT where empty); other values raise DataError.

    Not ``_times``: that reads numbers as unix seconds (and accepts date strings),
    while Criteo's timestamps are seconds since the log's own start.
    """
    text = raw[column]
    integer = text.str.fullmatch(_INTEGER, na=False).astype(bool)
    seconds = pd.to_numeric(text.where(integer), errors="coerce").astype(np.float64)
    lowest = -((start.value - pd.Timestamp.min.value) // 10**9)
    highest = (pd.Timestamp.max.value - start.value) // 10**9
    bad = raw.index[text.notna() & ~(integer & seconds.between(lowest, highest))]
    io.rows_error(
        path,
        raw,
        {column: bad} if len(bad) else {},
        f"have a timestamp that is not an integer number of seconds since start={start} "
        "(within pandas' datetime range)",
    )
    whole = pd.to_timedelta(seconds.fillna(0).astype(np.int64), unit="s")  # int path: exact
    return (start + whole).where(seconds.notna()).astype(schemas.TS)


def read_criteo_log(
    path: os.PathLike | str, product_column: int = 0, start: str | pd.Timestamp = "2026-01-01"
) -> CriteoLog:
    """The Criteo delayed-feedback log (Chapelle 2014) as this project's tables.

    The file is tab-separated without header, one row per click: click timestamp and
    conversion timestamp (integer seconds; the latter empty when no conversion was
    seen), 8 integer features, 9 hashed categorical features (any may be empty).

    Each row is a clicked impression: impression_id = row number (0-based),
    shown_at = clicked_at = ``start`` + click seconds, carted_at NaT, converted_at =
    ``start`` + conversion seconds (NaT when empty). The shown product is the
    categorical ``product_column`` (0-based among the 9; empty -> key "unknown");
    products are its distinct values plus one pseudo product "criteo:context", the
    source of every row: Criteo has no "bought u" context, and IMPRESSIONS_LOG needs a
    source_id. product_id numbers the keys 0..N-1 in sorted order; category -1,
    price NaN (unknown). Bad rows raise DataError naming the file, the column and the
    first offending rows (0-based row numbers, as impression_id).
    """
    origin = _criteo_origin(product_column, start)
    p = Path(path)
    raw = _criteo_table(p)
    clicked, converted = _checked_criteo_times(p, raw, origin)
    shown_key = raw[CRITEO_CAT_COLUMNS[product_column]].fillna(CRITEO_UNKNOWN_KEY)
    clash = raw.index[shown_key == CRITEO_CONTEXT_KEY]
    io.rows_error(
        p,
        raw,
        {CRITEO_CAT_COLUMNS[product_column]: clash} if len(clash) else {},
        f"use the reserved product key {CRITEO_CONTEXT_KEY!r}",
    )
    products, impressions = _criteo_tables(raw, shown_key, clicked, converted)
    features = pd.concat(
        [
            raw[list(CRITEO_INT_COLUMNS)].apply(pd.to_numeric).astype(np.float64),
            raw[list(CRITEO_CAT_COLUMNS)].fillna("").astype(object),
        ],
        axis=1,
    )
    return CriteoLog(
        io.validate(products, schemas.PRODUCTS, p),
        io.validate(impressions, schemas.IMPRESSIONS_LOG, p),
        features,
    )


def _criteo_origin(product_column: int, start: str | pd.Timestamp) -> pd.Timestamp:
    """``start`` as naive UTC nanoseconds, after checking both arguments."""
    if isinstance(product_column, bool) or not isinstance(product_column, int | np.integer):
        raise ValueError(f"product_column must be an int in 0..8, got {product_column!r}")
    if not 0 <= product_column < len(CRITEO_CAT_COLUMNS):
        raise ValueError(f"product_column must be in 0..8 (one of the 9 categoricals), got {product_column}")
    origin = pd.Timestamp(start)
    if origin is pd.NaT:
        raise ValueError(f"start must be a time, got {start!r}")
    if origin.tzinfo is not None:
        origin = origin.tz_convert("UTC").tz_localize(None)
    return origin.as_unit("ns")


def _criteo_table(p: Path) -> pd.DataFrame:
    """The file's fields as stripped strings (NaN where empty), after checking that every row
    has the right number of fields."""
    if not p.exists():
        raise DataError(p, "file not found")
    raw_bytes = p.read_bytes()
    if not raw_bytes:
        raise DataError(p, "file is empty")
    counts = _field_counts(raw_bytes)
    wrong = np.flatnonzero(counts != len(CRITEO_COLUMNS))
    if len(wrong):
        # Name the column where the first bad row goes wrong: its first absent field, or
        # the last field when it has extra ones.
        first = min(int(counts[wrong[0]]), len(CRITEO_COLUMNS) - 1)
        raise DataError(
            p,
            f"{len(wrong)} row(s) have the wrong number of tab-separated fields (expected "
            f"{len(CRITEO_COLUMNS)}: {', '.join(CRITEO_COLUMNS)})",
            column=CRITEO_COLUMNS[first],
            rows=pd.DataFrame({"fields": counts[wrong]}, index=pd.Index(wrong, name="row")),
        )
    try:
        raw = pd.read_csv(
            BytesIO(raw_bytes),
            sep="\t",
            header=None,
            names=list(CRITEO_COLUMNS),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,  # hashed values are raw text; field counts above assume so
        )
    except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable file
        raise DataError(p, f"unreadable file ({type(err).__name__}: {err})") from None
    if len(raw) != len(counts):  # cannot happen after the field counts; guards the row numbering
        raise DataError(p, f"read {len(raw)} rows from {len(counts)} lines")
    raw = raw.apply(lambda col: col.str.strip())  # also drops the '\r' of CRLF files
    return raw.mask(raw == "")  # empty field -> NaN, so errors and checks see it as missing


def _checked_criteo_times(p: Path, raw: pd.DataFrame, origin: pd.Timestamp) -> tuple[pd.Series, pd.Series]:
    """Click and conversion times, after checking them and the integer features."""
    _no_missing(p, raw, ("click_ts",))
    clicked = _criteo_times(p, raw, "click_ts", origin)
    converted = _criteo_times(p, raw, "conversion_ts", origin)
    early = raw.index[converted.notna() & (converted < clicked)]
    io.rows_error(
        p,
        raw,
        {"conversion_ts": early} if len(early) else {},
        "have a conversion timestamp before the click timestamp",
    )
    not_integer = {
        c: raw.index[raw[c].notna() & ~raw[c].str.fullmatch(_INTEGER, na=False).astype(bool)]
        for c in CRITEO_INT_COLUMNS
    }
    io.rows_error(
        p, raw, {c: r for c, r in not_integer.items() if len(r)}, "have a value that is not an integer"
    )
    return clicked, converted


def _criteo_tables(
    raw: pd.DataFrame, shown_key: pd.Series, clicked: pd.Series, converted: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PRODUCTS (the shown keys and the context pseudo product) and IMPRESSIONS_LOG rows."""
    keys = _sorted_keys(np.append(shown_key.unique().astype(str), CRITEO_CONTEXT_KEY))
    index = pd.Index(keys)
    products = pd.DataFrame(
        {
            "product_id": np.arange(len(keys), dtype=np.int64),
            "product_key": keys.astype(object),
            "category": np.full(len(keys), -1, dtype=np.int64),
            "price": np.full(len(keys), np.nan),
        }
    )
    impressions = pd.DataFrame(
        {
            "impression_id": np.arange(len(raw), dtype=np.int64),
            "source_id": np.full(len(raw), index.get_loc(CRITEO_CONTEXT_KEY), dtype=np.int64),
            "shown_id": index.get_indexer(shown_key).astype(np.int64),
            "shown_at": clicked,
            "clicked_at": clicked,
            "carted_at": pd.Series(pd.NaT, index=raw.index, dtype=schemas.TS),
            "converted_at": converted,
        },
        index=raw.index,
    )
    return products, impressions
