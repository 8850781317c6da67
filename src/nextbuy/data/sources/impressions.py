"""An impressions log (``source_id, shown_id, shown_at, clicked_at, carted_at, converted_at``) on
an ingested catalogue."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from nextbuy.data.sources.keys import (
    EVENT_COLUMNS,
    _impression_ids,
    _keys,
    _no_missing,
    _require_columns,
    _require_rows,
    _times,
    _without_repeats,
)
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


def read_impressions_log(path: os.PathLike | str, products: pd.DataFrame) -> pd.DataFrame:
    """An impressions log (parquet/CSV) as a schemas.IMPRESSIONS_LOG frame with internal ids.

    source_id and shown_id are product keys (matched as strings against
    products.product_key); clicked_at and carted_at may be absent (NaT);
    impression_id defaults to the row number (0-based, as in error messages). Times:
    datetimes, date strings or unix seconds.

    Exact duplicate rows (every column equal, impression_id included when present) are
    one impression logged twice (at-least-once delivery): the later copies are dropped,
    counted and logged as a warning, so a conversion is not counted twice. Rows that
    share an impression_id but differ elsewhere are refused.
    """
    df = io.read_frame(path)
    _require_rows(path, df)
    _require_columns(path, df, ("source_id", "shown_id", "shown_at", "converted_at"))
    df = df.reset_index(drop=True)
    _no_missing(path, df, ("source_id", "shown_id", "shown_at"))
    df = _without_repeats(path, df)
    ids = _impression_ids(path, df)

    known = pd.Index(products["product_key"].astype(str))
    out = pd.DataFrame({"impression_id": ids.to_numpy(np.int64)}, index=df.index)
    for col in ("source_id", "shown_id"):
        out[col] = known.get_indexer(_keys(df[col]))
        out[col] = np.where(out[col] >= 0, products["product_id"].to_numpy(np.int64)[out[col]], -1)
    io.rows_error(
        path,
        df,
        schemas.check_known_products(out, ("source_id", "shown_id"), products["product_id"]),
        "refer to a product key not in the product table",
    )
    out["shown_at"] = _times(path, df, "shown_at")
    for col in EVENT_COLUMNS:
        out[col] = (
            _times(path, df, col)
            if col in df.columns
            else pd.Series(pd.NaT, index=df.index, dtype=schemas.TS)
        )
    io.rows_error(path, df, schemas.check_event_order(out), "happen before shown_at")
    out = out.astype({"source_id": np.int64, "shown_id": np.int64}).reset_index(drop=True)
    return io.validate(out, schemas.IMPRESSIONS_LOG, path)
