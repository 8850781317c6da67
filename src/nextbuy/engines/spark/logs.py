"""A store's raw logs (``ingest.source: events``) read on Spark: each parquet log (a file, or a
folder of parquet files with hive partitions such as ``month=2026-01/``) is split into its row
groups, and each row group is parsed, checked, cleaned and its keys turned into text on an
executor by the pandas reader's own functions (``nextbuy.data.sources.events``), its rows
numbered as in the whole log. Spark then does what needs the whole log: exact duplicate rows
(the first copy stays), returns, shared impression ids, isolated times, products the catalogue
does not list, the last event, and the integer ids of products (the pandas reader's sorted
keys) and customers (numbered in order of first appearance: orders, impressions, interactions).

The stage's process holds only what is small whatever the logs' length: the list of row groups,
the catalogue (one row per product), the products table and one row per span of
``ingest.max_event_gap_days`` (the isolated-times check). The coded logs stay parquet beside
the stage's outputs, and ``events.build_on_spark`` builds the graph and labels from them.

A refusal keeps the pandas engine's words: when any check fails on Spark, the logs are read
again by the pandas reader in the stage's process, which names the file, the column and the
first offending rows as it does on the pandas engine (so a refused log is read whole by the
stage's process, as before). CSV/TSV logs, which have no row groups to split at, are read by
the pandas reader too (:func:`read_on_spark` returns None)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nextbuy.config import EventsConfig, IngestConfig, SparkConfig
from nextbuy.data.sources import catalogue as sources_catalogue
from nextbuy.data.sources import events as sources_events
from nextbuy.data.sources import keys as sources_keys
from nextbuy.engines.spark import events, impressions, log_checks, table
from nextbuy.engines.spark.impressions import SparkImpressions
from nextbuy.engines.spark.session import session
from nextbuy.mlops import io, schemas

PIECE_SCHEMA = (
    "row long, h1 long, h2 long, live boolean, customer string, product string, shown string, "
    "kind string, impression_id long, at long, bad string"
)
PIECE_COLUMNS = [part.split()[0] for part in PIECE_SCHEMA.split(", ")]
# what each log's coded columns are called in the pieces' rows, and its time column
CODED = {
    "orders": ({"customer": "customer", "product": "product"}, "ordered_at"),
    "impressions": (
        {
            "customer": "customer",
            "source_id": "product",
            "shown_id": "shown",
            "impression_id": "impression_id",
        },
        "shown_at",
    ),
    "interactions": ({"customer": "customer", "product": "product", "kind": "kind"}, "at"),
}
READERS = {
    "orders": sources_events.coded_orders,
    "impressions": sources_events.coded_impressions,
    "interactions": sources_events.coded_interactions,
}
SCHEMAS = {
    "orders": schemas.RAW_ORDERS,
    "impressions": schemas.RAW_IMPRESSIONS,
    "interactions": schemas.RAW_INTERACTIONS,
}
_HASH_KEYS = ("nextbuy-rows-one", "nextbuy-rows-two")  # two 64-bit fingerprints of a row


@dataclass(frozen=True)
class Piece:
    """One row group of a log: its file, its number in the file, the log's row number of its
    first row, and the hive partition columns its folder gives (name, value as pandas reads it)."""

    path: str
    group: int
    first: int
    parts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Layout:
    pieces: list[Piece]
    rows: int
    columns: tuple[str, ...]


def layout(path: str) -> Layout | None:
    """The row groups of a parquet log in the order the pandas reader reads them (None: a log
    Spark does not split, or one the pandas reader should refuse with its own words)."""
    import pyarrow.dataset as ds

    p = Path(path).resolve()  # the executors' working folder is not the stage's
    try:
        if p.is_dir():
            dataset = ds.dataset(p, format="parquet", partitioning="hive")
            files, partition = (
                list(dataset.files),
                dataset.partitioning.schema if dataset.partitioning else None,
            )
        elif p.is_file() and p.suffix.lower() in sources_keys.PARQUET_SUFFIXES:
            files, partition = [str(p)], None
        else:
            return None
        pieces, first, columns = [], 0, ()
        for file in files:
            meta = pq.ParquetFile(file).metadata
            columns = tuple(meta.schema.to_arrow_schema().names)
            parts = _parts(Path(file).relative_to(p).parent.parts, partition) if p.is_dir() else ()
            for group in range(meta.num_row_groups):
                n = meta.row_group(group).num_rows
                if n:
                    pieces.append(Piece(str(file), group, first, parts))
                    first += n
    except Exception:  # noqa: BLE001 - anything unreadable: the pandas reader says what
        return None
    if not pieces:
        return None
    names = tuple(name for name, _ in pieces[0].parts)
    return Layout(pieces, first, columns + names)


def _parts(folders: tuple[str, ...], partition: Any) -> tuple[tuple[str, str], ...]:
    """A file's hive partition values as the pandas reader has them: text, or integers' text."""
    import pyarrow as arrow

    out = []
    for folder in folders:
        if "=" not in folder:
            continue
        name, value = folder.split("=", 1)
        typed = partition is not None and name in partition.names
        if typed and arrow.types.is_integer(partition.field(name).type):
            value = str(int(value))
        out.append((name, value))
    return tuple(out)


def read_piece(piece: Piece) -> pd.DataFrame:
    """One row group as the pandas reader sees those rows: indexed by their rows in the log."""
    frame = pq.ParquetFile(piece.path).read_row_group(piece.group).to_pandas()
    frame.index = pd.RangeIndex(piece.first, piece.first + len(frame))
    for name, value in piece.parts:
        frame[name] = value
    return frame


def _fingerprints(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    try:
        hashed = [pd.util.hash_pandas_object(frame, index=False, hash_key=k) for k in _HASH_KEYS]
    except TypeError:  # unhashable cells (a parquet list column): compare them as text
        hashed = [pd.util.hash_pandas_object(frame.astype(str), index=False, hash_key=k) for k in _HASH_KEYS]
    return hashed[0].to_numpy(np.uint64).view(np.int64), hashed[1].to_numpy(np.uint64).view(np.int64)


def piece_rows(name: str, path: str, piece: Piece, now: pd.Timestamp) -> pd.DataFrame:
    """A row group checked and coded by the pandas reader's function for ``name`` (DataError
    as it raises it): per row its number, its fingerprint, whether it is still an event
    (``live``: not a return) and its coded keys and time (int64 ns)."""
    frame = sources_keys.normalised_log(read_piece(piece), SCHEMAS[name])
    try:
        repeated = frame.duplicated(keep="first").to_numpy()
    except TypeError:
        repeated = frame.astype(str).duplicated(keep="first").to_numpy()
    frame = frame[~repeated]
    h1, h2 = _fingerprints(frame)
    coded = READERS[name](path, {}, now, frame)
    columns, time = CODED[name]
    at = np.zeros(len(frame), np.int64)  # per row of ``frame``; returns (not live) keep 0 and -1
    live = frame.index.isin(coded.index)
    at[live] = coded[time].to_numpy("datetime64[ns]").view(np.int64)
    out = pd.DataFrame(
        {
            "row": frame.index.to_numpy(np.int64),
            "h1": h1,
            "h2": h2,
            "live": live,
            **{
                c: pd.Series(None, index=frame.index, dtype=object)
                for c in ("customer", "product", "shown", "kind")
            },
            "impression_id": np.full(len(frame), -1, np.int64),
            "at": at,
            "bad": pd.Series(None, index=frame.index, dtype=object),
        },
        index=frame.index,
    )
    for source, target in columns.items():
        values = coded[source].to_numpy()
        out.loc[coded.index, target] = values.astype(np.int64) if target == "impression_id" else values
    return out[PIECE_COLUMNS]


def checked_rows(spark: Any, name: str, path: str, pieces: list[Piece], now: pd.Timestamp) -> Any:
    """Every row group of a log through :func:`piece_rows` on the executors, one task each; a
    row group the pandas reader refuses gives one row whose ``bad`` says why."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for i in batch["id"].to_numpy(np.int64):
                try:
                    yield piece_rows(name, path, pieces[i], now)
                except Exception as err:  # noqa: BLE001 - any refusal: the pandas reader words it
                    marker = {c: [None] for c in PIECE_COLUMNS}
                    yield pd.DataFrame(marker | {"row": [-1], "bad": [f"{type(err).__name__}: {err}"]})

    return spark.range(len(pieces), numPartitions=max(len(pieces), 1)).mapInPandas(run, PIECE_SCHEMA)


def folder_near(near: Path) -> contextlib.AbstractContextManager[Path]:
    """A scratch folder beside ``near`` (the executors' shared storage), removed afterwards."""
    return table.scratch_folder(near, ".spark-logs.")


@dataclass(frozen=True, eq=False)
class SparkLogs:
    """The coded logs as Spark DataFrames over parquet (``row``: the log's order; times int64
    ns), with the products whose ids they use (``EventLogs`` on Spark)."""

    products: pd.DataFrame
    orders: Any  # row, customer, product, at
    impressions: Any  # row, impression_id, customer, source_id, shown_id, shown_at
    interactions: Any  # row, customer, product, kind, at
    last_event: pd.Timestamp
    cleaning: dict[str, int]


def own_order_columns(ev: EventsConfig) -> bool:
    """Whether the orders log has the pipeline's own columns and nothing to drop beyond returns
    and copies: what this reader reads (an export's own layout goes through the pandas reader,
    ``data.sources.orders``)."""
    named = {field: column for field, column in ev.orders_columns.items() if column}
    return (
        all(field == column for field, column in named.items())
        and "price" not in named
        and ev.missing_customer == "refuse"
        and ev.unlisted_products == "refuse"
        and not ev.cancellation_prefix
        and not ev.non_product_pattern
    )


def read_on_spark(cfg: IngestConfig, spark_cfg: SparkConfig, folder: Path) -> SparkLogs | None:
    """The raw logs of ``cfg.events`` read, checked, cleaned and coded on Spark, their rows kept
    as parquet under ``folder``; None when the pandas reader is to read them (a CSV log, or a
    check failed: it refuses with its own message)."""
    ev = cfg.events
    assert ev.orders_path is not None  # IngestConfig requires it
    if ev.impressions_path is None or not own_order_columns(ev):
        return None  # replayed exposures (domain.replay) and an export's own columns: pandas reads them
    files = {
        "orders": ev.orders_path,
        "impressions": ev.impressions_path,
        "interactions": ev.interactions_path,
    }
    layouts = {name: layout(path) for name, path in files.items() if path is not None}
    if any(lay is None for lay in layouts.values()):
        return None
    spark = session(spark_cfg)
    now = pd.Timestamp.now("UTC")
    rows = {}
    for name, lay in layouts.items():
        assert lay is not None
        rows[name] = table.written(checked_rows(spark, name, str(files[name]), lay.pieces, now), folder, name)
        if rows[name].where("bad IS NOT NULL").limit(1).count():
            return None
    kept = {name: log_checks.first_copies(frame, folder, name) for name, frame in rows.items()}
    cleaning = log_checks.cleaning_counts(kept, layouts, {k: str(v) for k, v in files.items()})
    if not log_checks.logs_pass(kept, cleaning, cfg.max_event_gap_days):
        return None
    catalogue = sources_catalogue.read_catalogue(cfg.catalogue_path, cleaning)
    named = {k: str(v) for k, v in files.items()}
    if catalogue is not None:
        log_checks.count_before_launch(spark, kept, catalogue, named, cleaning)
    kept = log_checks.shown_customers_only(kept, folder, named, cleaning)
    mentioned = log_checks.product_keys(spark, kept, catalogue)
    if mentioned is None:
        return None
    last = pd.Timestamp(log_checks.last_event_ns(kept))
    at = last if cfg.snapshot is None else pd.Timestamp(cfg.snapshot)
    paths = {
        "orders": ev.orders_path,
        "impressions": ev.impressions_path,
        "interactions": str(ev.interactions_path),
    }
    keys = {"orders.product": pd.Series(mentioned.index, dtype=object)}
    products = sources_catalogue.catalogue_products(catalogue, keys, paths, at, cleaning, mentioned)
    coded, customers = log_checks.coded(spark, kept, products, folder)
    cleaning |= {"products": len(products), "customers": customers}
    products = io.validate(products, schemas.PRODUCTS, cfg.catalogue_path or ev.orders_path)
    return SparkLogs(products, coded["orders"], coded["impressions"], coded["interactions"], last, cleaning)


@dataclass(frozen=True)
class BuiltOnSpark:
    """What ``read_and_build`` hands the stage: the products, the edges, the labelled impressions
    as parquet parts (``impressions.SparkImpressions``: the stage releases them), the
    snapshot and the cleaning counts (the reader's and the builder's)."""

    products: pd.DataFrame
    edges: pd.DataFrame
    impressions: SparkImpressions
    snapshot: pd.Timestamp
    cleaning: dict[str, int]


def read_and_build(cfg: IngestConfig, spark_cfg: SparkConfig, near: Path) -> BuiltOnSpark | None:
    """ingest's raw logs read (:func:`read_on_spark`), built into the graph and the labels
    (``events.build_on_spark``), split and sorted (``impressions.finish``) on Spark,
    the staged parquet beside ``near`` removed afterwards; None when the pandas reader is to
    read them."""
    with folder_near(near) as folder:
        logs = read_on_spark(cfg, spark_cfg, folder)
        if logs is None:
            return None
        snapshot = logs.last_event if cfg.snapshot is None else pd.Timestamp(cfg.snapshot)
        edges, labelled, counts = events.build_on_spark(
            logs, len(logs.products), cfg.events, snapshot, (spark_cfg, folder)
        )
        finished = impressions.finish(labelled, logs.products, cfg.split, near, spark_cfg.batch_rows)
    return BuiltOnSpark(logs.products, edges, finished, snapshot, logs.cleaning | counts)
