"""The store `nextbuy bench engines` measures the engines on, at any size: what ingest and traffic
would have written (products, co-purchase edges, split impressions, post-snapshot traffic,
their meta files) and a synthetic champion, written chunk by chunk so that making a store of
10^8 impressions never holds more than one chunk. Products and edges grow with the impressions
(``IMPRESSIONS_PER_PRODUCT``, ``IMPRESSIONS_PER_EDGE``); conversions follow a lognormal delay
after a click and a cart, censored at the snapshot (traffic: at "now").

Beside it (``write_logs``, under ``LOGS``): the same kind of history as a store's raw logs, what
``ingest.source: events`` reads, in the columns ``nextbuy simulate-logs`` writes
(``store_logs.StoreLogs``) but chunk by chunk (``simulate-logs`` holds the whole simulated store
in memory). An impression is shown to one of ``impressions / IMPRESSIONS_PER_CUSTOMER``
customers, who clicks, carts and orders the shown product at its event times; each of the
``impressions / IMPRESSIONS_PER_EDGE`` co-purchases is one buyer's two order lines (as
``simulate-logs`` writes them), so the graph ingest builds has about as many edges as the
store's; the catalogue lists the store's products."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nextbuy import paths
from nextbuy.data import store_logs
from nextbuy.domain.delay import hash_unit
from nextbuy.domain.timeunits import DAY

if TYPE_CHECKING:
    from nextbuy.config import RetrievalConfig

IMPRESSIONS_PER_PRODUCT = 100
IMPRESSIONS_PER_EDGE = 10
CHUNK_ROWS = 1_000_000
HISTORY_DAYS = 56
TRAFFIC_DAYS = 28
START = pd.Timestamp("2026-01-01")
SNAPSHOT = START + HISTORY_DAYS * DAY
IMPRESSIONS_PER_CUSTOMER = 10
LOGS = Path("events")  # under a store: its raw logs (LOG_FILES) and the params.yaml that ingests them
LOG_FILES = {name: paths.INPUTS / "store" / f"{name}.parquet" for name in store_logs.LOG_NAMES}
_TIME = arrow.timestamp("ns")
LOG_SCHEMAS = {
    "orders": arrow.schema(
        [
            ("customer", arrow.string()),
            ("product", arrow.string()),
            ("ordered_at", _TIME),
            ("quantity", arrow.int64()),
        ]
    ),
    "impressions": arrow.schema(
        [
            ("impression_id", arrow.int64()),
            ("customer", arrow.string()),
            ("source_product", arrow.string()),
            ("shown_product", arrow.string()),
            ("shown_at", _TIME),
        ]
    ),
    "interactions": arrow.schema(
        [("customer", arrow.string()), ("product", arrow.string()), ("kind", arrow.string()), ("at", _TIME)]
    ),
}


def sizes(n_impressions: int) -> dict[str, int]:
    return {
        "impressions": n_impressions,
        "products": max(1000, n_impressions // IMPRESSIONS_PER_PRODUCT),
        "edges": max(5000, n_impressions // IMPRESSIONS_PER_EDGE),
    }


def _products(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": [f"p{i}" for i in range(n)],
            "category": rng.integers(0, 40, n).astype(np.int64),
            "price": np.round(rng.lognormal(3.0, 0.8, n), 2),
        }
    )


def _popular(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Product ids with a power-law popularity (a few products draw most traffic)."""
    return np.minimum((n * rng.random(size) ** 2.5).astype(np.int64), n - 1)


def _edges(n_products: int, n_edges: int, rng: np.random.Generator) -> pd.DataFrame:
    src, dst = _popular(n_products, n_edges * 2, rng), _popular(n_products, n_edges * 2, rng)
    keep = src != dst
    pairs = pd.DataFrame({"src": src[keep], "dst": dst[keep]}).drop_duplicates().iloc[:n_edges]
    times = SNAPSHOT.value - rng.integers(0, HISTORY_DAYS * DAY.value, len(pairs))
    return pairs.reset_index(drop=True).assign(
        weight=rng.integers(1, 5, len(pairs)).astype(np.float64), time=pd.to_datetime(times)
    )


def _events(
    rows: int, n_products: int, window: tuple[pd.Timestamp, pd.Timestamp], rng: np.random.Generator
) -> pd.DataFrame:
    """Impressions shown over ``window`` (start, end), with their events up to its end."""
    start, end = window
    shown = start.value + rng.integers(0, end.value - start.value, rows)
    converts = rng.random(rows) < 0.04
    clicks = converts | (rng.random(rows) < 0.1)
    carts = (converts & (rng.random(rows) < 0.95)) | (clicks & (rng.random(rows) < 0.3))
    click_at = shown + rng.exponential(0.5 * 3600e9, rows).astype(np.int64)
    cart_at = click_at + rng.exponential(2 * 3600e9, rows).astype(np.int64)
    convert_at = cart_at + (rng.lognormal(np.log(3 * 24 * 3600), 1.3, rows) * 1e9).astype(np.int64)

    def seen(flag: np.ndarray, at: np.ndarray) -> pd.Series:
        return pd.to_datetime(np.where(flag & (at <= end.value), at, np.iinfo(np.int64).min))

    return pd.DataFrame(
        {
            "source_id": _popular(n_products, rows, rng),
            "shown_id": _popular(n_products, rows, rng),
            "shown_at": pd.to_datetime(shown),
            "clicked_at": seen(clicks, click_at),
            "carted_at": seen(carts, cart_at),
            "converted_at": seen(converts & (convert_at <= end.value), convert_at),
        }
    )


def _split(frame: pd.DataFrame) -> np.ndarray:
    """Sessions (source x day) split 70/15/15 by a hash, as ingest's session split does."""
    day = frame["shown_at"].to_numpy().view(np.int64) // DAY.value
    u = hash_unit(frame["source_id"].to_numpy() * 100_000 + day, 11)
    return np.select([u < 0.15, u < 0.3], ["test", "calib"], default="train")


def _write_log(
    path: Path, rows: int, n_products: int, window: tuple[pd.Timestamp, pd.Timestamp], seed: int, split: bool
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for i, a in enumerate(range(0, rows, CHUNK_ROWS)):
            chunk = _events(min(CHUNK_ROWS, rows - a), n_products, window, np.random.default_rng([seed, i]))
            chunk.insert(0, "impression_id", np.arange(a, a + len(chunk), dtype=np.int64))
            if split:
                chunk["split"] = _split(chunk)
            table = arrow.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def write_store(
    root: Path, n_impressions: int, seed: int = 0, retrieval: RetrievalConfig | None = None
) -> dict[str, int]:
    """The store of ``n_impressions`` impressions (and as many traffic impressions) under ``root``,
    its champion with ``retrieval`` (a ``config.RetrievalConfig``: how batch-topk finds candidates)."""
    from nextbuy.bench.serving_fixtures import write_bundle_files

    n = sizes(n_impressions)
    rng = np.random.default_rng(seed)
    (root / paths.INGESTED).mkdir(parents=True, exist_ok=True)
    _products(n["products"], rng).to_parquet(root / paths.PRODUCTS, index=False)
    _edges(n["products"], n["edges"], rng).to_parquet(root / paths.EDGES, index=False)
    _write_log(
        root / paths.IMPRESSIONS, n_impressions, n["products"], (START, SNAPSHOT), seed + 1, split=True
    )
    now = SNAPSHOT + TRAFFIC_DAYS * DAY
    _write_log(
        root / paths.TRAFFIC_IMPRESSIONS, n_impressions, n["products"], (SNAPSHOT, now), seed + 2, split=False
    )
    (root / paths.INGEST_META).write_text(json.dumps({"snapshot": str(SNAPSHOT)}))
    (root / paths.TRAFFIC_META).write_text(json.dumps({"start": str(SNAPSHOT), "now": str(now)}))
    write_bundle_files(root / "champion", n_products=n["products"], d=16, n_buckets=3, retrieval=retrieval)
    return n


def _keys(prefix: str, ids: np.ndarray) -> arrow.Array:
    """Keys as a store writes them (``p17``), made in Arrow (no Python object per row)."""
    return pc.binary_join_element_wise(prefix, pc.cast(arrow.array(ids), arrow.string()), "")


def _times(ns: np.ndarray) -> arrow.Array:
    return arrow.array(ns.view("datetime64[ns]"), _TIME)


def _shown_chunk(
    first: int, rows: int, counts: tuple[int, int], rng: np.random.Generator
) -> dict[str, arrow.Table]:
    """``rows`` impressions of the history (ids from ``first``) shown to ``counts`` (products,
    customers), and what their customers did: the impressions, the clicks and carts, the orders
    of the shown products (conversions)."""
    n_products, n_customers = counts
    frame = _events(rows, n_products, (START, SNAPSHOT), rng)
    customer = _keys("c", rng.integers(0, n_customers, rows))
    shown = _keys("p", frame["shown_id"].to_numpy())

    def happened(column: str) -> tuple[arrow.Array, arrow.Array, arrow.Array]:
        at = frame[column]
        mask = arrow.array(at.notna().to_numpy())
        when = at.to_numpy("datetime64[ns]").view(np.int64)[at.notna().to_numpy()]
        return customer.filter(mask), shown.filter(mask), _times(when)

    clicks, carts, orders = happened("clicked_at"), happened("carted_at"), happened("converted_at")
    kinds = [arrow.array(np.full(len(e[2]), k)) for k, e in (("click", clicks), ("cart", carts))]
    interactions = {
        name: arrow.concat_arrays([clicks[i], carts[i]])
        for i, name in enumerate(("customer", "product", "at"))
    }
    return {
        "impressions": arrow.table(
            [
                arrow.array(np.arange(first, first + rows, dtype=np.int64)),
                customer,
                _keys("p", frame["source_id"].to_numpy()),
                shown,
                _times(frame["shown_at"].to_numpy("datetime64[ns]").view(np.int64)),
            ],
            schema=LOG_SCHEMAS["impressions"],
        ),
        "interactions": arrow.table(
            [
                interactions["customer"],
                interactions["product"],
                arrow.concat_arrays(kinds),
                interactions["at"],
            ],
            schema=LOG_SCHEMAS["interactions"],
        ),
        "orders": arrow.table(
            [*orders, arrow.array(np.ones(len(orders[2]), np.int64))],
            schema=LOG_SCHEMAS["orders"],
        ),
    }


def _bought_chunk(first: int, pairs: int, n_products: int, rng: np.random.Generator) -> arrow.Table:
    """``pairs`` co-purchases "bought u, then v", each a buyer's own two order lines (buyers
    numbered from ``first``): u ordered up to ``store_logs.ORDER_GAP_HOURS`` before v."""
    u, v = _popular(n_products, pairs, rng), _popular(n_products, pairs, rng)
    v = np.where(u == v, (v + 1) % n_products, v)
    gap_ns = int(store_logs.ORDER_GAP_HOURS * 3600e9)
    at = START.value + gap_ns + rng.integers(0, SNAPSHOT.value - START.value - gap_ns, pairs)
    before = at - 1 - rng.integers(0, gap_ns, pairs)
    buyer = _keys("b", np.arange(first, first + pairs, dtype=np.int64))
    return arrow.table(
        [
            arrow.concat_arrays([buyer, buyer]),
            _keys("p", np.concatenate([u, v])),
            _times(np.concatenate([before, at])),
            arrow.array(np.ones(2 * pairs, np.int64)),
        ],
        schema=LOG_SCHEMAS["orders"],
    )


def write_logs(root: Path, n_impressions: int, seed: int = 0) -> dict[str, int]:
    """The history of a store of ``n_impressions`` impressions as its raw logs under ``root``
    (``LOG_FILES``); rows written per log, and the customers."""
    n = sizes(n_impressions)
    files = {name: root / path for name, path in LOG_FILES.items()}
    files["catalogue"].parent.mkdir(parents=True, exist_ok=True)
    catalogue = _products(n["products"], np.random.default_rng(seed))
    catalogue.rename(columns={"product_key": "product"}).drop(columns="product_id").assign(
        launched_at=pd.NaT
    ).to_parquet(files["catalogue"], index=False)
    written = dict.fromkeys(LOG_SCHEMAS, 0)
    viewers = max(100, n_impressions // IMPRESSIONS_PER_CUSTOMER)
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(pq.ParquetWriter(files[name], schema))
            for name, schema in LOG_SCHEMAS.items()
        }

        def write(name: str, table: arrow.Table) -> None:
            writers[name].write_table(table)
            written[name] += table.num_rows

        counts = (n["products"], viewers)
        for i, a in enumerate(range(0, n_impressions, CHUNK_ROWS)):
            rng = np.random.default_rng([seed, 3, i])
            for name, table in _shown_chunk(a, min(CHUNK_ROWS, n_impressions - a), counts, rng).items():
                write(name, table)
        for i, a in enumerate(range(0, n["edges"], CHUNK_ROWS)):
            rng = np.random.default_rng([seed, 4, i])
            write("orders", _bought_chunk(a, min(CHUNK_ROWS, n["edges"] - a), n["products"], rng))
    return written | {"catalogue": n["products"], "customers_at_most": n["edges"] + viewers}


def logs_params(params: dict) -> dict:
    """``params`` (a params.yaml) reading the logs of ``write_logs``, censored at the snapshot."""
    ingest = params["ingest"] | {
        "source": "events",
        "graph_path": None,
        "impressions_path": None,
        "catalogue_path": str(LOG_FILES["catalogue"]),
        "snapshot": str(SNAPSHOT),
    }
    ingest["events"] = ingest["events"] | {f"{name}_path": str(LOG_FILES[name]) for name in LOG_SCHEMAS}
    return params | {"ingest": ingest}
