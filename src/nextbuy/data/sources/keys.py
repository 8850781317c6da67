"""What every reader shares: the parsed graph (:class:`GraphSource`), column and row checks, product
keys of an edge list (integer-keyed or text), event times and edge cleaning."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.mlops import io, schemas
from nextbuy.mlops.io import DataError
from nextbuy.tables_api import pa

log = logging.getLogger(__name__)


NPZ_ADJ_KEYS = ("adj_matrix.data", "adj_matrix.indices", "adj_matrix.indptr", "adj_matrix.shape")
NPZ_ATTR_KEYS = ("attr_matrix.data", "attr_matrix.indices", "attr_matrix.indptr", "attr_matrix.shape")
EVENT_COLUMNS = ("clicked_at", "carted_at", "converted_at")
# An edge list whose ids are more than this share numbers is integer-keyed: every id must
# then be a non-negative integer, and a text id (``abc``) is a typo, not a product.
INTEGER_KEYED_SHARE = 0.5
PARQUET_SUFFIXES = (".parquet", ".pq")


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


def _edge_list_keys(
    path: os.PathLike | str, df: pd.DataFrame, counted: tuple[int, int] | None = None
) -> tuple[pd.Series, pd.Series]:
    """src and dst as product keys; DataError for ids that would silently become products.
    ``counted``: the whole list's (ids that are numbers, ids) when ``df`` is a part of it.

    - An id that is a number must be a non-negative integer: ``1.5``, ``-5``, ``inf`` are
      refused in any edge list (a float id also made pandas write ``1`` as ``1.0``, a
      second product).
    - When more than ``INTEGER_KEYED_SHARE`` of the ids (src and dst cells) are numbers,
      the list is integer-keyed: a text id (``abc``) is refused, and integer ids take one
      written form (``007`` and ``7`` are product ``7``).
    - Otherwise the list is text-keyed (SKUs, ASINs): ids are kept as written, integers
      among them included (``phone``, ``42``).
    - An empty id is refused before (``_no_empty_ids``).
    """
    columns = ("src", "dst")
    text = {c: _keys(df[c]) for c in columns}
    number = {c: _id_numbers(df[c], text[c]) for c in columns}
    n_numbers, n_ids = counted or (int(sum(number[c].notna().sum() for c in columns)), 2 * len(df))
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


def _no_empty_ids(path: os.PathLike | str, df: pd.DataFrame) -> None:
    """DataError naming the rows whose src or dst is empty once stripped."""
    empty = {c: df.index[_keys(df[c]) == ""] for c in ("src", "dst")}
    io.rows_error(path, df, {c: r for c, r in empty.items() if len(r)}, "have an empty id")


def _sorted_keys(keys: np.ndarray) -> np.ndarray:
    """Unique keys, in numeric order when all are integers, else string order."""
    unique = np.unique(keys.astype(str))
    numbers = pd.to_numeric(pd.Series(unique), errors="coerce")
    if len(unique) and numbers.notna().all() and (numbers % 1 == 0).all():
        return unique[np.lexsort((unique, numbers.to_numpy()))]
    return unique


# Numeric times are read as unix seconds. Seconds past this (the year 5138) are no time a log
# holds: such a column is in milliseconds, microseconds or nanoseconds.
MAX_UNIX_SECONDS = 1e11


def _refuse_sub_second_units(path: os.PathLike | str, df: pd.DataFrame, column: str, raw: pd.Series) -> None:
    """DataError naming the unit a numeric time column seems to be in when it is not seconds."""
    values = pd.to_numeric(raw, errors="coerce").abs()
    big = df.index[(values > MAX_UNIX_SECONDS).to_numpy()]
    if not len(big):
        return
    largest = float(values.max())
    unit = "nanoseconds" if largest > 1e17 else "microseconds" if largest > 1e14 else "milliseconds"
    io.rows_error(
        path,
        df,
        {column: big},
        f"hold numbers far too large for unix seconds, the unit numeric times are read in: they "
        f"look like {unit}. Convert the column to unix seconds (divide by "
        f"{ {'milliseconds': '1,000', 'microseconds': '1,000,000', 'nanoseconds': '10^9'}[unit] }) "
        "or to ISO date-times in the export",
    )


def _times(path: os.PathLike | str, df: pd.DataFrame, column: str, lead: str | None = None) -> pd.Series:
    """A time column as naive UTC datetime64[ns]: datetimes, date strings or unix seconds.
    ``lead``: the whole file's first time, when ``df`` is a later part of it (the format of
    date strings is inferred from the first one)."""
    raw = df[column]
    try:
        if pd.api.types.is_datetime64_any_dtype(raw):
            parsed = pd.to_datetime(raw, utc=True)
        elif pd.api.types.is_bool_dtype(raw):
            raise TypeError("booleans are not times")
        elif pd.api.types.is_numeric_dtype(raw):
            _refuse_sub_second_units(path, df, column, raw)
            parsed = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
        else:
            text = raw.astype("string").str.strip()
            ahead = pd.Series([] if lead is None else [lead], dtype="string")
            both = pd.concat([ahead, text], ignore_index=True)
            parsed = pd.to_datetime(both, utc=True, errors="coerce").iloc[len(ahead) :].set_axis(text.index)
            # Format inference follows the first value; retry the rest one by one,
            # and read numbers written as text as unix seconds.
            retry = parsed.isna() & text.notna()
            if retry.any():
                parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
            seconds = pd.to_numeric(text.where(parsed.isna()), errors="coerce")
            if seconds.notna().any():
                _refuse_sub_second_units(path, df, column, seconds.astype("float64"))  # as text: same unit
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
    cleaning = cleaning_counts(len(src), int(loop.sum()), len(edges), len(merged), path)
    merged = merged.astype({"src": np.int64, "dst": np.int64, "weight": np.float64, "time": schemas.TS})
    return merged.reset_index(drop=True), cleaning


def cleaning_counts(rows: int, loops: int, kept: int, merged: int, path: os.PathLike | str) -> dict[str, int]:
    """What cleaning did (``rows`` read, ``loops`` of them dropped, ``kept`` merged into
    ``merged`` edges), each change logged; DataError when no edge is left."""
    cleaning = {
        "rows_read": rows,
        "self_loops_dropped": loops,
        "duplicate_edges_merged": kept - merged,
        "edges_kept": merged,
    }
    if cleaning["self_loops_dropped"]:
        log.warning("%s: dropped %d self-loop(s)", path, cleaning["self_loops_dropped"])
    if cleaning["duplicate_edges_merged"]:
        log.warning(
            "%s: merged %d duplicate edge(s) into their first occurrence (weight = count)",
            path,
            cleaning["duplicate_edges_merged"],
        )
    if merged == 0:
        raise DataError(path, f"no edges left after cleaning ({cleaning})")
    return cleaning


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


# --------------------------------------------------------------------------- raw logs


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
    retyped = _parts_agree(p)
    try:
        if retyped:  # one column typed differently between parts: each part read, that column as text
            frame = pd.concat([_part_as_text(p, f, retyped) for f in _parquet_parts(p)], ignore_index=True)
        else:
            frame = pd.read_parquet(p)
    except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable folder
        raise io.DataError(p, f"unreadable parquet folder ({type(err).__name__}: {err})") from None
    # hive partition values arrive as categoricals: plain values, as in a single file
    return frame.astype({c: str for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


def _parquet_parts(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in PARQUET_SUFFIXES)


def _parts_agree(folder: Path) -> set[str]:
    """A parquet folder's parts, checked against its first part: a part with other columns is
    refused naming it (a partition written by another export would otherwise lose or invent
    columns silently). Returns the columns whose type differs between parts (an id written as
    a number in one month and as text in another): they are read as text, one key space."""
    import pyarrow.parquet as pq

    parts = _parquet_parts(folder)
    schemas_of = {}
    for part in parts:
        try:
            schemas_of[part] = pq.read_schema(part)
        except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable part
            raise io.DataError(part, f"unreadable parquet part ({type(err).__name__}: {err})") from None
    first = parts[0]
    columns = set(schemas_of[first].names)
    retyped = set()
    for part in parts[1:]:
        theirs = set(schemas_of[part].names)
        if theirs != columns:
            extra, lacking = sorted(theirs - columns), sorted(columns - theirs)
            said = "; ".join(
                x
                for x in (
                    f"it has {', '.join(extra)}" if extra else "",
                    f"it lacks {', '.join(lacking)}" if lacking else "",
                )
                if x
            )
            raise io.DataError(
                part,
                f"this part of {folder} has other columns than {first.relative_to(folder)} ({said}): "
                "every part of a log needs the same columns",
                column=(extra or lacking)[0],
            )
        retyped |= {
            name
            for name in columns
            if not schemas_of[part].field(name).type.equals(schemas_of[first].field(name).type)
        }
    return retyped


def _part_as_text(folder: Path, part: Path, columns: set[str]) -> pd.DataFrame:
    """One part with ``columns`` as text (missing values kept) and its hive partition values."""
    frame = pd.read_parquet(part)
    for name in columns:
        values = frame[name]
        text = values.astype("string").astype(object)
        if pd.api.types.is_float_dtype(values):  # 7.0 in one part is 7 in another: one key
            number = values.to_numpy(np.float64)
            whole = np.isfinite(number) & (np.mod(number, 1) == 0)
            text[whole] = number[whole].astype(np.int64).astype(str)
        frame[name] = text.where(values.notna(), None)
    for level in part.relative_to(folder).parts[:-1]:
        if "=" in level:
            key, value = level.split("=", 1)
            frame[key] = value
    return frame


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


def normalised_log(df: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """``df`` as the checks compare it: an interactions log's kind trimmed and lower-cased (also
    each part the Spark engine's reader reads, before it meets the checks)."""
    if "kind" in df.columns and schema is schemas.RAW_INTERACTIONS:
        df["kind"] = df["kind"].astype("string").str.strip().str.lower().astype(object)
    return df


def _checked(
    path: os.PathLike | str,
    schema: pa.DataFrameSchema,
    name: str,
    cleaning: dict[str, int],
    frame: pd.DataFrame | None = None,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The log, its exact duplicate rows dropped (counted), checked against ``schema``
    (``frame``: a part of the log already read, indexed by its rows in the log). ``prepare``
    turns the export's rows into the log's (its own column names, lines that are no purchase)
    after the duplicates go and before the check."""
    df = read_log(path).reset_index(drop=True) if frame is None else frame
    if df.empty:
        raise io.DataError(path, "file has no rows")
    df = normalised_log(df, schema)
    cleaning[f"{name}_rows_read"] = len(df)
    df = _without_copies(path, df, name, cleaning)
    if prepare is not None:
        df = prepare(df)
    return io.validate(df, schema, path)
