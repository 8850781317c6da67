"""A directed edge list (CSV/TSV/parquet with ``src,dst[,time]``, or a SNAP-style text file)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.data.sources.keys import (
    GraphSource,
    _clean_edges,
    _edge_list_keys,
    _no_empty_ids,
    _no_missing,
    _require_columns,
    _require_rows,
    _sorted_keys,
    _times,
)
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


TEXT_SUFFIXES = (".csv", ".tsv", ".txt")


HEADERLESS_SEP = r"[\t,; ]+"  # a SNAP-style (headerless) list's separators


def text_layout(p: Path) -> tuple[int, str]:
    """A text edge list's opening: how many comment (``#``) and blank lines come first, and the
    first other line (the header, or the first edge of a headerless list)."""
    comments, first = 0, ""
    with open(p, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.lstrip().startswith("#") or not line.strip():
                comments += 1
                continue
            first = line
            break
    return comments, first


def has_header(first: str) -> bool:
    """Whether a text edge list's first line is a header (it names ``src`` or ``dst``)."""
    return bool({"src", "dst"} & set(re.split(HEADERLESS_SEP, first.strip())))


def read_edge_table(path: os.PathLike | str) -> pd.DataFrame:
    """The edge list as a table. Parquet as is. A text file (.csv/.tsv/.txt) may open with
    comment lines starting with ``#``; its first other line is the header when it names
    ``src`` or ``dst``, else the file is headerless as SNAP publishes graphs (the most common
    public format): exactly two columns, ``src`` then ``dst``, separated by tabs, commas or
    spaces. A headerless file with other columns is refused: only a header can say whether a
    third column is a time or a weight."""
    p = Path(path)
    if p.suffix.lower() not in TEXT_SUFFIXES:
        return io.read_frame(p)
    io.check_file(p)
    comments, first = text_layout(p)
    if not comments and has_header(first):
        return io.read_frame(p)
    try:
        if has_header(first):
            sep = "\t" if p.suffix.lower() == ".tsv" else None
            return pd.read_csv(p, sep=sep, engine="python", encoding="utf-8-sig", skiprows=comments)
        df = pd.read_csv(
            p, sep=HEADERLESS_SEP, engine="python", encoding="utf-8-sig", skiprows=comments, header=None
        )
    except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable file
        raise io.DataError(p, f"unreadable file ({type(err).__name__}: {err})") from None
    check_headerless(p, df.shape[1], first)
    return df.set_axis(["src", "dst"], axis=1)


def check_headerless(p: os.PathLike | str, n_columns: int, first: str) -> None:
    """DataError unless a headerless list has two columns."""
    if n_columns != 2:
        raise io.DataError(
            p,
            f"no header line naming src and dst, and {n_columns} columns (first data line: "
            f"{first.strip()[:80]!r}): a headerless (SNAP-style) edge list has exactly two, src "
            "then dst; add a header such as 'src,dst,time' or 'src,dst,weight'",
        )


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
    df = read_edge_table(path)
    _require_rows(path, df)
    _require_columns(path, df, ("src", "dst"))
    df = df.reset_index(drop=True)
    src_key, dst_key, weight, time = edge_rows(path, df)
    keys = _sorted_keys(np.concatenate([src_key.to_numpy(), dst_key.to_numpy()]))
    index = pd.Index(keys)
    edges, cleaning = _clean_edges(index.get_indexer(src_key), index.get_indexer(dst_key), weight, time, path)
    return key_graph(path, keys, edges, cleaning)


def key_graph(
    path: os.PathLike | str, keys: np.ndarray, edges: pd.DataFrame, cleaning: dict[str, int]
) -> GraphSource:
    """The graph of an edge list whose sorted ``keys`` are products 0..N-1 (category and price
    unknown), checked by the products' and edges' schemas."""
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


def edge_rows(
    path: os.PathLike | str,
    df: pd.DataFrame,
    counted: tuple[int, int] | None = None,
    lead: str | None = None,
    passed: list[str] | None = None,
) -> tuple[pd.Series, pd.Series, np.ndarray, pd.Series]:
    """Each row's src and dst keys, weight (1 without a weight column) and time (NaT without a
    time column), checked in this order (the first failing check raises, naming its rows):
    missing ids, empty ids, ids (``_edge_list_keys``), times, weights. ``df`` may be one part of a list
    (the Spark engine checks each part): ``counted`` and ``lead`` then carry the whole list's
    id counts and first time, and ``passed`` collects the names of the checks passed."""
    done = passed if passed is not None else []
    _no_missing(path, df, ("src", "dst"))
    done.append("missing")
    _no_empty_ids(path, df)
    done.append("empty")
    src_key, dst_key = _edge_list_keys(path, df, counted)
    done.append("ids")
    time = (
        _times(path, df, "time", lead)
        if "time" in df.columns
        else pd.Series(pd.NaT, index=df.index, dtype=schemas.TS)
    )
    done.append("time")
    if "weight" in df.columns:
        weight = pd.to_numeric(df["weight"], errors="coerce")
        bad = df.index[~(np.isfinite(weight) & (weight > 0))]
        io.rows_error(
            path, df, {"weight": bad} if len(bad) else {}, "have a weight that is not a positive number"
        )
        weights = weight.to_numpy(np.float64)
    else:
        weights = np.ones(len(df))
    done.append("weight")
    return src_key, dst_key, weights, time
