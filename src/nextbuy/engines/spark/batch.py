"""batch-topk on Spark: a shard's sources split into the same parts the pandas engine writes
(``sources_per_file`` each), the parts spread over the executors, each executor process loading
the serving bundle (shared once) and building its faiss index once for all its parts. Every
task writes its part file straight into the shard's folder (on storage the executors share with
the driver), which appears only when every part is there, as with the pandas engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.config import SparkConfig
from nextbuy.engines.spark import table
from nextbuy.engines.spark.session import session
from nextbuy.mlops import io
from nextbuy.serving import in_store_keys, shard_sources


def write_top_k(
    spark_cfg: SparkConfig,
    bundle: Any,
    out_dir: str | Path,
    k: int,
    shard: tuple[int, int] = (0, 1),
    sources_per_file: int = 4096,
) -> dict:
    """``serving.write_top_k`` on Spark (``shard``: this shard and the number of shards):
    the same ``out_dir/shard=SSS/part-NNNNN.parquet`` files, row for row."""
    spark = session(spark_cfg)
    index, num_shards = shard
    sources = shard_sources(bundle.n_products, index, num_shards)
    n_parts = -(-sources.size // sources_per_file)
    target = Path(out_dir) / f"shard={index:03d}"
    get = table.shared(spark, bundle)
    with io.atomic_dir(target) as tmp:
        folder = str(tmp.resolve())

        def parts(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            served = get()  # the bundle of this executor process, its index built on first use
            for batch in batches:
                for part in batch["id"].to_numpy(np.int64):
                    picked = sources[part * sources_per_file : (part + 1) * sources_per_file]
                    recs = in_store_keys(served, served.top_k(picked, k))
                    recs.to_parquet(f"{folder}/part-{part:05d}.parquet", index=False)
                    yield pd.DataFrame({"part": [part], "rows": [len(recs)]})

        slices = max(1, min(n_parts, _parallelism(spark) * 4))
        written = (
            spark.range(0, n_parts, numPartitions=slices)
            .mapInPandas(parts, "part long, rows long")
            .toPandas()
        )
        missing = sorted(set(range(n_parts)) - set(written["part"].tolist()))
        if missing:
            raise RuntimeError(f"batch-topk on Spark: parts {missing[:5]} of shard {index} were not written")
    return {
        "shard": index,
        "num_shards": num_shards,
        "sources": int(sources.size),
        "rows": int(written["rows"].sum()),
        "path": str(target),
    }


def _parallelism(spark: Any) -> int:
    """The cores Spark schedules tasks on (Spark Connect: its default parallelism setting, else 8)."""
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001  # Spark Connect: no SparkContext
        return int(spark.conf.get("spark.default.parallelism", "8"))
