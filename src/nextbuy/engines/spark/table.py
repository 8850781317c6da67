"""Tables between Spark and the stages' files: parquet read into Spark, a Spark result written
back as the one parquet file the pandas engine writes (same path, columns and dtypes, checked
by the same pandera schema), objects shared with the executors, and exact quantiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.parquet as pq

from nextbuy.domain.delay import first_seen
from nextbuy.mlops import io
from nextbuy.tables_api import pa

# Rows of one column a quantile brings to the driver whole; above it, only the rows between two
# approximate quantiles bracketing the exact one (exact_quantiles).
COLLECT_MAX_ROWS = 2_000_000

# Per executor (Python worker) process: the objects a job shares, built once (a bundle and its
# faiss index, a pair-feature context), keyed by the job's token.
_CACHE: dict[str, Any] = {}


def spark_type(dtype: Any) -> Any:
    """The Spark type of a pandas column dtype (the types the stages' tables use)."""
    from pyspark.sql import types as T

    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return T.LongType()  # ns since the epoch (NaT: int64 min), exact; see ``read``
    if pd.api.types.is_integer_dtype(dtype):
        return {1: T.ByteType(), 2: T.ShortType(), 4: T.IntegerType()}.get(
            np.dtype(dtype).itemsize, T.LongType()
        )
    if pd.api.types.is_float_dtype(dtype):
        return T.FloatType() if np.dtype(dtype).itemsize == 4 else T.DoubleType()
    return T.StringType()


def struct_of(example: pd.DataFrame) -> Any:
    """The Spark schema of frames shaped like ``example``."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(str(c), spark_type(example[c].dtype), True) for c in example.columns])


# NaT as int64: a missing time travels through Spark as this number, never as null (Arrow hands a
# nullable int64 column to pandas as float64, which would round nanoseconds).
NAT = np.iinfo(np.int64).min


def read(spark: Any, path: str | os.PathLike) -> Any:
    """A parquet table of the stages as a Spark DataFrame (a missing file named like
    read_table does). Its timestamps, nanoseconds Spark cannot hold, stay int64 ns since the
    epoch with NaT as ``NAT``: exact, and :func:`as_pandas` turns them back into times."""
    from pyspark.sql import functions as F

    io.check_file(Path(path))
    times = [f.name for f in pq.read_schema(path) if arrow.types.is_timestamp(f.type)]
    frame = spark.read.parquet(str(Path(path).resolve()))
    return frame.withColumns({c: F.coalesce(F.col(c), F.lit(NAT)) for c in times}) if times else frame


# The stages' event times (impressions logs).
TIME_COLUMNS = ("shown_at", "clicked_at", "carted_at", "converted_at")


def as_pandas(batch: pd.DataFrame, example: pd.DataFrame | None = None) -> pd.DataFrame:
    """A batch of a table :func:`read` read (or of ``for_spark`` rows), its event times
    (``TIME_COLUMNS``, or ``example``'s timestamp columns) as times again."""
    if example is None:
        times = [c for c in TIME_COLUMNS if c in batch and pd.api.types.is_integer_dtype(batch[c].dtype)]
    else:
        times = [
            c
            for c in batch.columns
            if c in example and pd.api.types.is_datetime64_any_dtype(example[c].dtype)
        ]
    return (
        batch.assign(**{c: batch[c].to_numpy(np.int64).view("datetime64[ns]") for c in times})
        if times
        else batch
    )


def for_spark(frame: pd.DataFrame) -> pd.DataFrame:
    """A pandas batch with its timestamp columns as int64 ns (NaT: ``NAT``), as :func:`struct_of` has it."""
    times = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c].dtype)]
    return (
        frame.assign(**{c: frame[c].to_numpy("datetime64[ns]").view(np.int64) for c in times})
        if times
        else frame
    )


def shared(spark: Any, value: Any) -> Callable[[], Any]:
    """A getter of ``value`` on the executors, built once per executor process: a broadcast on a
    classic session, the pickled value itself through Spark Connect (which has no broadcast)."""
    token = uuid.uuid4().hex
    try:
        holder: Any = spark.sparkContext.broadcast(value)
    except Exception:  # noqa: BLE001  # Spark Connect: no SparkContext; ship the value with the task
        holder = None
    inline = value if holder is None else None

    def get() -> Any:
        if token not in _CACHE:
            _CACHE.clear()  # one job's objects at a time per process
            _CACHE[token] = holder.value if holder is not None else inline
        return _CACHE[token]

    return get


def scratch(near: Path, prefix: str) -> Path:
    """A new folder beside ``near`` (on the storage the executors share) for Spark's files; its
    name starts with ``prefix`` (a dot: out of the stage's outputs' way)."""
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=near)).resolve()


@contextlib.contextmanager
def scratch_folder(near: Path, prefix: str) -> Iterator[Path]:
    """:func:`scratch`, removed when the block ends (also on an error or a stop)."""
    folder = scratch(near, prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def spilled(frame: Any, near: Path) -> Iterator[tuple[list[Path], Any]]:
    """Spark writes ``frame``'s rows once as parquet parts in a folder beside ``near`` (removed
    afterwards); yields the part files in partition order and a DataFrame reading them back
    (for aggregates over the written rows without computing them again)."""
    with scratch_folder(near, ".spark-parts.") as folder:
        frame.write.mode("overwrite").parquet(str(folder / "rows"))
        files = sorted((folder / "rows").glob("part-*.parquet"))
        yield files, frame.sparkSession.read.parquet(str(folder / "rows"))


def written(frame: Any, folder: Path, name: str) -> Any:
    """``frame`` computed once, as parquet under ``folder``, and read back."""
    frame.write.mode("overwrite").parquet(str(folder / name))
    return frame.sparkSession.read.parquet(str(folder / name))


@contextlib.contextmanager
def staged(
    spark: Any, frames: dict[str, pd.DataFrame], near: Path, row_group: int
) -> Iterator[dict[str, Any]]:
    """pandas frames handed to Spark as parquet files in a folder beside ``near`` (on the storage
    the executors share; removed afterwards), their times as int64 ns (:func:`for_spark`), in row
    groups of ``row_group`` rows (Spark's unit of splitting a file). Yields name -> DataFrame."""
    with scratch_folder(near, ".spark-in.") as folder:
        read = {}
        for name, frame in frames.items():
            table = arrow.Table.from_pandas(for_spark(frame), preserve_index=False)
            pq.write_table(table, folder / f"{name}.parquet", row_group_size=row_group)
            read[name] = spark.read.parquet(str(folder / f"{name}.parquet"))
        yield read


def collected(frame: Any, near: Path) -> pd.DataFrame:
    """A Spark result as one pandas frame in this process, through parquet parts Spark writes
    beside ``near`` (never through the JVM driver's heap), in partition order."""
    with spilled(frame, near) as (files, _):
        tables = [pq.read_table(f) for f in files]
    if not tables:  # no part written: an empty frame of the result's columns
        return frame.limit(0).toPandas()
    return arrow.concat_tables(tables).to_pandas()


def merge_parts(
    files: Sequence[Path],
    target: Path,
    schema: pa.DataFrameSchema,
    example: pd.DataFrame,
    finish: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    batch_rows: int | None = None,
) -> int:
    """Stream Spark's part files, row group by row group (memory bounded by one; with
    ``batch_rows``, by that many rows, however large Spark made a group), in partition
    order into the one parquet file ``target``: only ``example``'s columns are read (the
    parts may hold more, e.g. per-row values only metrics needed, whose strings would
    otherwise be made Python objects), each group passed through ``finish`` (a last per-row
    step on those columns, e.g. a rescaling that needed a total), cut to ``example``'s dtypes
    and checked by ``schema``. The file replaces ``target`` atomically; a failure leaves the
    old one in place. Returns the rows written."""
    columns = list(example.columns)
    dtypes = example.dtypes.to_dict()
    arrow_schema = arrow.Schema.from_pandas(example, preserve_index=False)
    rows = 0
    with io.atomic_path(target) as tmp, pq.ParquetWriter(tmp, arrow_schema) as writer:
        for group in _groups(files, columns, batch_rows):
            group = finish(as_pandas(group, example)) if finish is not None else as_pandas(group, example)
            checked = io.validate(group[columns].astype(dtypes), schema, target)
            writer.write_table(arrow.Table.from_pandas(checked, schema=arrow_schema, preserve_index=False))
            rows += len(group)
        if rows == 0:
            raise io.DataError(target, f"table '{schema.name}' is empty")
    return rows


def _groups(
    files: Sequence[Path], columns: list[str], batch_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    for file in files:
        reader = pq.ParquetFile(file)
        if batch_rows is not None:
            batches = reader.iter_batches(batch_rows, columns=columns)
            yield from (arrow.Table.from_batches([b]).to_pandas() for b in batches)
            continue
        for i in range(reader.num_row_groups):
            yield reader.read_row_group(i, columns=columns).to_pandas()


def first_seen_ns(spark_frame: Any, n_products: int) -> np.ndarray:
    """Each product's first impression (``delay_signals.first_seen``) over the whole log: per
    Arrow batch on the executors, then the minimum per product."""
    from pyspark.sql import functions as F

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            first = first_seen(as_pandas(batch), n_products)
            ids = np.flatnonzero(first < np.iinfo(np.int64).max)
            yield pd.DataFrame({"product_id": ids.astype(np.int64), "first_ns": first[ids]})

    cols = spark_frame.select("source_id", "shown_id", "shown_at")
    mins = (
        cols.mapInPandas(partial, "product_id long, first_ns long")
        .groupBy("product_id")
        .agg(F.min("first_ns").alias("first_ns"))
        .toPandas()
    )
    first = np.full(n_products, np.iinfo(np.int64).max, dtype=np.int64)
    first[mins["product_id"].to_numpy(np.int64)] = mins["first_ns"].to_numpy(np.int64)
    return first


def exact_quantiles(
    frame: Any, column: str, probs: Sequence[float], collect_max: int = COLLECT_MAX_ROWS
) -> np.ndarray:
    """``np.quantile(values, probs)`` (linear interpolation) of a Spark column, exactly, without
    bringing every value to the driver: the two order statistics each quantile interpolates lie
    between two approximate quantiles (rank error eps) around it; only the rows between those
    come to the driver, with the count of rows below each. Three passes for all ``probs``.
    Empty: NaNs."""
    from pyspark.sql import functions as F

    values = frame.select(F.col(column).cast("double").alias("v")).where(F.col("v").isNotNull())
    n = values.count()
    probs = [float(p) for p in probs]
    if n == 0:
        return np.full(len(probs), np.nan)
    if n <= collect_max:
        return np.quantile(values.toPandas()["v"].to_numpy(), probs)
    eps = max(4.0 / n, 16.0 / collect_max)
    around = [q for p in probs for q in (max(p - 2 * eps, 0.0), min(p + 2 * eps, 1.0))]
    bounds = np.asarray(values.approxQuantile("v", around, eps), dtype=np.float64).reshape(len(probs), 2)
    v = F.col("v")
    counts = values.agg(
        *[
            expr.alias(f"{name}{i}")
            for i, (lo, hi) in enumerate(bounds)
            for name, expr in (
                ("below", F.sum((v < float(lo)).cast("long"))),
                ("lo", F.sum((v == float(lo)).cast("long"))),
                ("hi", F.sum((v == float(hi)).cast("long"))),
            )
        ]
    ).first()
    inside = F.lit(False)  # strictly between the bounds: ties at a bound are counted, not collected
    for lo, hi in bounds:
        inside = inside | ((v > float(lo)) & (v < float(hi)))
    between = np.sort(values.where(inside).toPandas()["v"].to_numpy())
    out = []
    for i, p in enumerate(probs):
        lo, hi = bounds[i]
        mine = between[(between > lo) & (between < hi)]
        at_lo, at_hi = int(counts[f"lo{i}"] or 0), int(counts[f"hi{i}"] or 0) if hi > lo else 0
        pos = p * (n - 1)
        first = int(counts[f"below{i}"] or 0)
        a = _at_rank(int(np.floor(pos)) - first, (lo, at_lo), mine, (hi, at_hi))
        b = _at_rank(int(np.ceil(pos)) - first, (lo, at_lo), mine, (hi, at_hi))
        if a is None or b is None:  # the bracket missed (it should not): take all
            return np.quantile(values.toPandas()["v"].to_numpy(), probs)
        out.append(a + (b - a) * (pos - np.floor(pos)))
    return np.asarray(out, dtype=np.float64)


def _at_rank(r: int, low: tuple[float, int], between: np.ndarray, high: tuple[float, int]) -> float | None:
    """The r-th value (0-based) of ``low[1]`` copies of ``low[0]``, then ``between`` (sorted),
    then ``high[1]`` copies of ``high[0]``; None outside them."""
    if r < 0:
        return None
    for value, count in (low, (None, len(between)), high):
        if r < count:
            return float(between[r]) if value is None else float(value)
        r -= count
    return None
