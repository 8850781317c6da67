"""batch-topk on Spark (local[2]) writes the pandas engine's part files, row for row."""

from __future__ import annotations

import pandas as pd

from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.config import RetrievalConfig
from nextbuy.engines.spark import batch as spark_batch
from nextbuy.serving import write_top_k
from tests.conftest import TINY_PARAMS
from tests.engines.spark import parity


def test_batch_topk_on_spark_writes_the_same_part_files(tmp_path, local_spark):
    retrieval = RetrievalConfig.model_validate(
        TINY_PARAMS["deploy"]["retrieval"] | {"kind": "flat", "candidates": 50}
    )
    bundle = load_bundle(
        write_bundle_files(tmp_path / "bundle", n_products=2000, n_buckets=2, retrieval=retrieval)
    )
    write_top_k(bundle, tmp_path / "pandas", 10, 1, 2, 300, progress=False)
    result = spark_batch.write_top_k(local_spark, bundle, tmp_path / "spark", 10, (1, 2), 300)
    files = sorted(p.name for p in (tmp_path / "pandas" / "shard=001").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "spark" / "shard=001").iterdir())
    assert len(files) == 4  # 1000 sources of shard 1, 300 per file
    for name in files:
        parity.same_frames(
            pd.read_parquet(tmp_path / "pandas" / "shard=001" / name),
            pd.read_parquet(tmp_path / "spark" / "shard=001" / name),
        )
    assert result["rows"] == 1000 * 10
    assert result["sources"] == 1000
