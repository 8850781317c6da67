"""Batch top-K for every product, chunked so memory stays bounded, shardable by
source id so many machines can split the catalogue (shard i of n takes the
sources with id % n == i)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nextbuy.mlops import io

if TYPE_CHECKING:
    from nextbuy.serving.bundle import ServingBundle


def shard_sources(n_products: int, shard: int, num_shards: int) -> np.ndarray:
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    return np.arange(shard, n_products, num_shards, dtype=np.int64)


def in_store_keys(bundle: ServingBundle, recs: pd.DataFrame) -> pd.DataFrame:
    """Top-K rows with the store's key of each source and candidate beside its id (a model
    that holds no keys: the rows as they are)."""
    if bundle.keys is None:
        return recs
    return recs.assign(
        source_key=bundle.key_of(recs["source_id"].to_numpy()),
        candidate_key=bundle.key_of(recs["candidate_id"].to_numpy()),
    )


def write_top_k(
    bundle: ServingBundle,
    out_dir: str | Path,
    k: int,
    shard: int = 0,
    num_shards: int = 1,
    sources_per_file: int = 4096,
    progress: bool = True,
) -> dict:
    """Write ``out_dir/shard=SSS/part-NNNNN.parquet``; the shard folder appears only when complete."""
    sources = shard_sources(bundle.n_products, shard, num_shards)
    target = Path(out_dir) / f"shard={shard:03d}"
    rows = 0
    with io.atomic_dir(target) as tmp:
        chunks = range(0, sources.size, sources_per_file)
        for part, a in enumerate(
            tqdm(chunks, desc=f"top-{k} shard {shard}/{num_shards}", disable=not progress)
        ):
            recs = in_store_keys(bundle, bundle.top_k(sources[a : a + sources_per_file], k))
            recs.to_parquet(tmp / f"part-{part:05d}.parquet", index=False)
            rows += len(recs)
    return {
        "shard": shard,
        "num_shards": num_shards,
        "sources": int(sources.size),
        "rows": rows,
        "path": str(target),
    }
