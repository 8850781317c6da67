"""A directed edge list (CSV/TSV/parquet with ``src,dst[,time]``)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from nextbuy.data.sources.keys import (
    GraphSource,
    _clean_edges,
    _edge_list_keys,
    _no_missing,
    _require_columns,
    _require_rows,
    _sorted_keys,
    _times,
)
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


def read_edge_list(path: os.PathLike | str) -> GraphSource:
    """A directed edge list (.csv/.tsv/.parquet): columns src, dst, optional time and weight.

    product_key is the id as written; product_id numbers keys 0..N-1 in sorted
    order (numeric when every key is an integer). A weight column, if present,
    is summed over duplicates; otherwise weight = number of occurrences.

    Ids that would silently become new products are refused (DataError naming the
    rows, see ``_edge_list_keys``): in a list whose ids are mostly integers
    (integer-keyed), every id must be a non-negative integer, so ``abc`` is refused
    there; ``1.5`` and ``-5`` are refused in any list; a text-keyed list (``phone``,
    ``case``, ``42``) is valid as written.
    """
    df = io.read_frame(path)
    _require_rows(path, df)
    _require_columns(path, df, ("src", "dst"))
    _no_missing(path, df, ("src", "dst"))
    df = df.reset_index(drop=True)
    src_key, dst_key = _edge_list_keys(path, df)
    keys = _sorted_keys(np.concatenate([src_key.to_numpy(), dst_key.to_numpy()]))
    index = pd.Index(keys)
    time = (
        _times(path, df, "time")
        if "time" in df.columns
        else pd.Series(pd.NaT, index=df.index, dtype=schemas.TS)
    )
    if "weight" in df.columns:
        weight = pd.to_numeric(df["weight"], errors="coerce")
        bad = df.index[~(np.isfinite(weight) & (weight > 0))]
        io.rows_error(
            path, df, {"weight": bad} if len(bad) else {}, "have a weight that is not a positive number"
        )
        weight = weight.to_numpy(np.float64)
    else:
        weight = np.ones(len(df))
    edges, cleaning = _clean_edges(index.get_indexer(src_key), index.get_indexer(dst_key), weight, time, path)
    products = pd.DataFrame(
        {
            "product_id": np.arange(len(keys), dtype=np.int64),
            "product_key": keys.astype(object),
            "category": np.full(len(keys), -1, dtype=np.int64),
            "price": np.full(len(keys), np.nan),
        }
    )
    cleaning["products"] = len(keys)
    return GraphSource(
        io.validate(products, schemas.PRODUCTS, path), io.validate(edges, schemas.EDGES, path), cleaning
    )
