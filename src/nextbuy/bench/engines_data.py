"""The store `nextbuy bench engines` measures the engines on, at any size: what ingest and traffic
would have written (products, co-purchase edges, split impressions, post-snapshot traffic,
their meta files) and a synthetic champion, written chunk by chunk so that making a store of
10^8 impressions never holds more than one chunk. Products and edges grow with the impressions
(``IMPRESSIONS_PER_PRODUCT``, ``IMPRESSIONS_PER_EDGE``); conversions follow a lognormal delay
after a click and a cart, censored at the snapshot (traffic: at "now")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.parquet as pq

from nextbuy import paths
from nextbuy.domain.delay_rows import hash_unit
from nextbuy.domain.timeunits import DAY

IMPRESSIONS_PER_PRODUCT = 100
IMPRESSIONS_PER_EDGE = 10
CHUNK_ROWS = 1_000_000
HISTORY_DAYS = 56
TRAFFIC_DAYS = 28
START = pd.Timestamp("2026-01-01")
SNAPSHOT = START + HISTORY_DAYS * DAY


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


def write_store(root: Path, n_impressions: int, seed: int = 0, retrieval=None) -> dict[str, int]:
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
