"""Real data through the same schemas: a directed edge list, a PPNP-style
``.npz`` graph, an impressions log, and the Criteo conversion log.

Self-loops and duplicate edges are the field's convention, not errors: they
are cleaned, counted in ``GraphSource.cleaning`` and logged; so are exact duplicate
rows of an impressions log (a row logged twice). Anything else wrong raises
``DataError`` naming the file, the column and the first rows: among them edge-list
ids that would silently become new products (``abc`` in an integer-keyed list,
``1.5``, ``-5``), see :func:`read_edge_list`.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.mlops import io, schemas
from nextbuy.mlops.io import DataError

log = logging.getLogger(__name__)

NPZ_ADJ_KEYS = ("adj_matrix.data", "adj_matrix.indices", "adj_matrix.indptr", "adj_matrix.shape")
NPZ_ATTR_KEYS = ("attr_matrix.data", "attr_matrix.indices", "attr_matrix.indptr", "attr_matrix.shape")
EVENT_COLUMNS = ("clicked_at", "carted_at", "converted_at")
# An edge list whose ids are more than this share numbers is integer-keyed: every id must
# then be a non-negative integer, and a text id (``abc``) is a typo, not a product.
INTEGER_KEYED_SHARE = 0.5


@dataclass(frozen=True, eq=False)
class GraphSource:
    products: pd.DataFrame  # schemas.PRODUCTS
    edges: pd.DataFrame  # schemas.EDGES
    cleaning: dict[str, int]  # what was cleaned, e.g. {"self_loops_dropped": 3, ...}
    # The source's own node features (rows = products in product_id order), e.g. an npz's
    # bag-of-words; None when it has none (edge lists).
    features: sp.csr_matrix | None = None


# --------------------------------------------------------------------------- helpers


def _require_columns(path: os.PathLike | str, df: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            path,
            f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, df.columns))})",
            column=missing[0],
        )


def _require_rows(path: os.PathLike | str, df: pd.DataFrame) -> None:
    if df.empty:
        raise DataError(path, "file has no rows")


def _no_missing(path: os.PathLike | str, df: pd.DataFrame, columns: tuple[str, ...]) -> None:
    io.rows_error(
        path,
        df,
        {c: df.index[df[c].isna()] for c in columns if df[c].isna().any()},
        "have a missing (NaN/empty) value",
    )


def _keys(values: pd.Series) -> pd.Series:
    """Ids as the source wrote them, as strings (integral floats lose their '.0')."""
    if pd.api.types.is_float_dtype(values):
        number = values.to_numpy()
        if np.isfinite(number).all() and (np.mod(number, 1) == 0).all():
            values = values.astype(np.int64)
    return values.astype(str).str.strip()


def _id_numbers(values: pd.Series, text: pd.Series) -> pd.Series:
    """Each id's value as a number (float64), NaN where it is text."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(np.float64)
    return pd.to_numeric(text, errors="coerce").astype(np.float64)


def _integer_text(text: pd.Series, number: pd.Series) -> pd.Series:
    """Integer ids in one written form: '007', '+7', '7.0' -> '7' (as a CSV reader reads 7)."""
    digits = text.str.fullmatch(r"\+?\d+").astype(bool)
    stripped = text.str.lstrip("+").str.lstrip("0").replace("", "0")
    other = number[~digits].map(lambda x: str(int(x)))
    return stripped.where(digits, other)


def _edge_list_keys(path: os.PathLike | str, df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """src and dst as product keys; DataError for ids that would silently become products.

    - An id that is a number must be a non-negative integer: ``1.5``, ``-5``, ``inf`` are
      refused in any edge list (a float id also made pandas write ``1`` as ``1.0``, a
      second product).
    - When more than ``INTEGER_KEYED_SHARE`` of the ids (src and dst cells) are numbers,
      the list is integer-keyed: a text id (``abc``) is refused, and integer ids take one
      written form (``007`` and ``7`` are product ``7``).
    - Otherwise the list is text-keyed (SKUs, ASINs): ids are kept as written, integers
      among them included (``phone``, ``42``).
    - An empty id is refused.
    """
    columns = ("src", "dst")
    text = {c: _keys(df[c]) for c in columns}
    number = {c: _id_numbers(df[c], text[c]) for c in columns}
    empty = {c: df.index[text[c] == ""] for c in columns}
    io.rows_error(path, df, {c: r for c, r in empty.items() if len(r)}, "have an empty id")
    n_ids = 2 * len(df)
    n_numbers = int(sum(number[c].notna().sum() for c in columns))
    integer = {c: number[c].notna() & np.isfinite(number[c]) & (number[c] >= 0) for c in columns}
    integer = {c: integer[c] & (number[c].where(integer[c], 0) % 1 == 0) for c in columns}
    if n_numbers > INTEGER_KEYED_SHARE * n_ids:
        bad = {c: df.index[~integer[c]] for c in columns}
        io.rows_error(
            path,
            df,
            {c: r for c, r in bad.items() if len(r)},
            f"have an id that is not a non-negative integer, in an edge list whose ids are integers "
            f"({n_numbers} of its {n_ids} ids are numbers): it would silently become a new product",
        )
        return tuple(
            text[c] if pd.api.types.is_numeric_dtype(df[c]) else _integer_text(text[c], number[c])
            for c in columns
        )
    bad = {c: df.index[number[c].notna() & ~integer[c]] for c in columns}
    io.rows_error(
        path,
        df,
        {c: r for c, r in bad.items() if len(r)},
        "have an id that is a number but not a non-negative integer (e.g. 1.5, -5): "
        "product ids are text or integers >= 0",
    )
    return text["src"], text["dst"]


def _sorted_keys(keys: np.ndarray) -> np.ndarray:
    """Unique keys, in numeric order when all are integers, else string order."""
    unique = np.unique(keys.astype(str))
    numbers = pd.to_numeric(pd.Series(unique), errors="coerce")
    if len(unique) and numbers.notna().all() and (numbers % 1 == 0).all():
        return unique[np.lexsort((unique, numbers.to_numpy()))]
    return unique


def _times(path: os.PathLike | str, df: pd.DataFrame, column: str) -> pd.Series:
    """A time column as naive UTC datetime64[ns]: datetimes, date strings or unix seconds."""
    raw = df[column]
    try:
        if pd.api.types.is_datetime64_any_dtype(raw):
            parsed = pd.to_datetime(raw, utc=True)
        elif pd.api.types.is_bool_dtype(raw):
            raise TypeError("booleans are not times")
        elif pd.api.types.is_numeric_dtype(raw):
            parsed = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
        else:
            text = raw.astype("string").str.strip()
            parsed = pd.to_datetime(text, utc=True, errors="coerce")
            # Format inference follows the first value; retry the rest one by one,
            # and read numbers written as text as unix seconds.
            retry = parsed.isna() & text.notna()
            if retry.any():
                parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
            seconds = pd.to_numeric(text.where(parsed.isna()), errors="coerce")
            if seconds.notna().any():
                parsed[seconds.notna()] = pd.to_datetime(
                    seconds[seconds.notna()], unit="s", utc=True, errors="coerce"
                )
    except (TypeError, ValueError, OverflowError) as err:
        raise DataError(path, f"wrong dtype {raw.dtype} for a time ({err})", column=column) from None
    parsed = parsed.dt.tz_localize(None).astype(schemas.TS)
    bad = df.index[parsed.isna().to_numpy() & raw.notna().to_numpy()]
    io.rows_error(path, df, {column: bad} if len(bad) else {}, "have an unparseable time")
    return parsed


def _clean_edges(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, time: pd.Series, path: os.PathLike | str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop self-loops, merge duplicate u->v (weight summed, time = earliest); count both."""
    loop = src == dst
    edges = pd.DataFrame({"src": src, "dst": dst, "weight": weight, "time": time.to_numpy()})[~loop]
    merged = edges.groupby(["src", "dst"], sort=True, as_index=False).agg(
        weight=("weight", "sum"), time=("time", "min")
    )
    cleaning = {
        "rows_read": int(len(src)),
        "self_loops_dropped": int(loop.sum()),
        "duplicate_edges_merged": int(len(edges) - len(merged)),
        "edges_kept": int(len(merged)),
    }
    if cleaning["self_loops_dropped"]:
        log.warning("%s: dropped %d self-loop(s)", path, cleaning["self_loops_dropped"])
    if cleaning["duplicate_edges_merged"]:
        log.warning(
            "%s: merged %d duplicate edge(s) into their first occurrence (weight = count)",
            path,
            cleaning["duplicate_edges_merged"],
        )
    if merged.empty:
        raise DataError(path, f"no edges left after cleaning ({cleaning})")
    merged = merged.astype({"src": np.int64, "dst": np.int64, "weight": np.float64, "time": schemas.TS})
    return merged.reset_index(drop=True), cleaning


# --------------------------------------------------------------------------- edge list


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


# --------------------------------------------------------------------------- npz graph


def _load_npz(
    path: os.PathLike | str, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Only the named arrays, without unpickling: PPNP files also hold object arrays
    (metadata) that io.read_npz, which loads every array, cannot open safely."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    if p.stat().st_size == 0:
        raise DataError(p, "file is empty")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any loader failure is an unreadable file
        raise DataError(p, f"unreadable npz ({type(err).__name__}: {err})") from None
    if not hasattr(data, "files"):
        raise DataError(p, "not an npz archive (a single array)")
    with data:
        missing = [k for k in required if k not in data.files]
        if missing:
            raise DataError(
                p,
                f"missing array(s): {', '.join(missing)} (found: {', '.join(data.files)})",
                column=missing[0],
            )
        arrays = {}
        for key in required + tuple(k for k in optional if k in data.files):
            try:
                arrays[key] = data[key]
            except Exception as err:  # noqa: BLE001
                raise DataError(
                    p,
                    f"unreadable array ({type(err).__name__}: {err}); store it as a numeric or string array",
                    column=key,
                ) from None
    return arrays


def read_npz_graph(path: os.PathLike | str) -> GraphSource:
    """A PPNP-style ``.npz`` (CSR ``adj_matrix.*``, optional ``node_names`` and ``attr_matrix.*``).

    Edge u->v for every nonzero A[u, v], weight |A[u, v]| (summed over
    duplicate entries); product_id = row index; product_key = node_names when
    present, else the row index; category unknown (-1); ``features`` = the CSR
    ``attr_matrix`` (e.g. bag-of-words) when present. The file's class
    ``labels`` are never read: they are what a benchmark on such a graph is
    about, never a model input.
    """
    arrays = _load_npz(path, NPZ_ADJ_KEYS, ("node_names", *NPZ_ATTR_KEYS))
    shape, indptr, indices, values = _csr_arrays(path, arrays, "adj_matrix")
    n = shape[0] if len(shape) == 2 else -1
    problem = (
        "adj_matrix.shape must be square (n, n)"
        if len(shape) != 2 or shape[0] != shape[1] or n <= 0
        else _csr_problem("adj_matrix", shape, indptr, indices, values)
    )
    if problem:
        raise DataError(path, f"malformed adjacency: {problem}", column="adj_matrix")

    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    nonzero = values != 0
    edges, cleaning = _clean_edges(
        rows[nonzero],
        indices[nonzero],
        np.abs(values[nonzero]),
        pd.Series(pd.NaT, index=np.arange(int(nonzero.sum())), dtype=schemas.TS),
        path,
    )
    cleaning["explicit_zeros_dropped"] = int((~nonzero).sum())

    category = np.full(n, -1, dtype=np.int64)  # unknown: class labels are not inputs
    keys = np.arange(n).astype(str)
    if "node_names" in arrays:
        names = np.asarray(arrays["node_names"])
        if names.shape != (n,):
            raise DataError(
                path, f"node_names must have {n} entries, got shape {names.shape}", column="node_names"
            )
        keys = np.char.strip(names.astype(str))  # PPNP names carry a trailing newline
    products = pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": keys.astype(object),
            "category": category,
            "price": np.full(n, np.nan),
        }
    )
    cleaning["products"] = n
    return GraphSource(
        io.validate(products, schemas.PRODUCTS, path),
        io.validate(edges, schemas.EDGES, path),
        cleaning,
        _attributes(path, arrays, n),
    )


def _csr_arrays(
    path: os.PathLike | str, arrays: dict[str, np.ndarray], name: str
) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    """``name.{shape,indptr,indices,data}`` as numbers; DataError (column ``name``) when not."""
    try:
        shape = tuple(int(x) for x in np.asarray(arrays[f"{name}.shape"]).ravel())
        indptr = np.asarray(arrays[f"{name}.indptr"], dtype=np.int64)
        indices = np.asarray(arrays[f"{name}.indices"], dtype=np.int64)
        values = np.asarray(arrays[f"{name}.data"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(path, f"{name} arrays are not numeric ({err})", column=name) from None
    return shape, indptr, indices, values


def _csr_problem(
    name: str, shape: tuple[int, ...], indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> str | None:
    """What is wrong with a CSR matrix of a 2-d ``shape``, or None."""
    n_rows, n_cols = shape
    return (
        f"{name}.indptr must have n+1 non-decreasing entries ending at len(indices)"
        if len(indptr) != n_rows + 1
        or indptr[0] != 0
        or indptr[-1] != len(indices)
        or np.any(np.diff(indptr) < 0)
        else f"{name}.data and {name}.indices differ in length"
        if len(values) != len(indices)
        else f"{name}.indices out of range"
        if len(indices) and (indices.min() < 0 or indices.max() >= n_cols)
        else f"{name}.data has non-finite values"
        if not np.isfinite(values).all()
        else None
    )


def _attributes(path: os.PathLike | str, arrays: dict[str, np.ndarray], n: int) -> sp.csr_matrix | None:
    """The npz's node attributes (CSR ``attr_matrix.*``, e.g. bag-of-words) as features, one row
    per node; None when the file has none."""
    present = [k for k in NPZ_ATTR_KEYS if k in arrays]
    if not present:
        return None
    if len(present) < len(NPZ_ATTR_KEYS):
        missing = [k for k in NPZ_ATTR_KEYS if k not in arrays]
        raise DataError(
            path, f"attr_matrix incomplete: missing array(s) {', '.join(missing)}", column="attr_matrix"
        )
    shape, indptr, indices, values = _csr_arrays(path, arrays, "attr_matrix")
    problem = (
        f"attr_matrix.shape must be ({n}, n_attributes), one row per node"
        if len(shape) != 2 or shape[0] != n or shape[1] < 0
        else _csr_problem("attr_matrix", shape, indptr, indices, values)
    )
    if problem:
        raise DataError(path, f"malformed attributes: {problem}", column="attr_matrix")
    features = sp.csr_matrix((values.astype(np.float32), indices, indptr), shape=shape)
    features.sum_duplicates()
    return features


# --------------------------------------------------------------------------- impressions


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


# --------------------------------------------------------------------------- Criteo conversion log

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


def _without_repeats(path: os.PathLike | str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the later copies of exact duplicate rows, logged as a warning."""
    try:
        repeated = df.duplicated(keep="first").to_numpy()
    except TypeError:  # unhashable cells (e.g. a parquet list column): compare them as text
        repeated = df.astype(str).duplicated(keep="first").to_numpy()
    if not repeated.any():
        return df
    log.warning(
        "%s: dropped %d exact duplicate row(s) of %d (an impression logged twice); first: row(s) %s",
        path,
        int(repeated.sum()),
        len(df),
        ", ".join(map(str, df.index[repeated][:5])),
    )
    return df[~repeated]


def _impression_ids(path: os.PathLike | str, df: pd.DataFrame) -> pd.Series:
    """The log's impression_id, checked (non-negative integers, unique), else the row number."""
    if "impression_id" not in df.columns:
        return pd.Series(df.index.to_numpy(np.int64), index=df.index)
    _no_missing(path, df, ("impression_id",))
    ids = pd.to_numeric(df["impression_id"], errors="coerce")
    bad = df.index[ids.isna() | (ids % 1 != 0) | (ids < 0)]
    io.rows_error(
        path,
        df,
        {"impression_id": bad} if len(bad) else {},
        "have an impression_id that is not a non-negative integer",
    )
    ids = ids.astype(np.int64)
    dup = df.index[ids.duplicated(keep=False)]
    io.rows_error(path, df, {"impression_id": dup} if len(dup) else {}, "share an impression_id")
    return ids


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
