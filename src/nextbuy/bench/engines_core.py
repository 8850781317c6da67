"""One measured run of `nextbuy bench engines`, in a child process of its own:
``python -m nextbuy.bench.engines_core ROOT ENGINE STAGE`` runs ``STAGE`` on ``ENGINE`` in the
store at ROOT (``engines_data``), and prints one JSON line: the seconds the stage took and the
rows it handled. The stages: ``ingest``, the stage as ``nextbuy ingest`` runs it on the store's
raw logs (in their folder ``engines_data.LOGS``, with its own params.yaml and outputs);
``label_delay``, the stage as ``nextbuy label-delay`` runs it; ``monitor``, the traffic scored by
the champion and judged per window and bucket, the stage without its Evidently publishing and
registry lookup; ``batch_topk``, ``nextbuy batch-topk``'s part files of the champion's top
``TOPK_K`` for every product, one shard, without the registry download."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from nextbuy import yaml_io

if TYPE_CHECKING:
    from nextbuy.config import EngineConfig
    from nextbuy.serving import ServingBundle

RESULT_PREFIX = "ENGINES-RESULT "
# batch_topk: as `nextbuy batch-topk` by default, one shard
TOPK_K = 20
SOURCES_PER_FILE = 4096


def champion() -> ServingBundle:
    """The store's champion bundle (``engines_data``: with the retrieval settings of params.yaml)."""
    from nextbuy.bench.serving_fixtures import BundleFiles, load_bundle

    root = Path("champion")
    retrieval = root / "retrieval.json"
    return load_bundle(
        BundleFiles(
            root / "moments.npz",
            root / "calibration.json",
            root / "thresholds.json",
            retrieval if retrieval.exists() else None,
        )
    )


def batch_topk(engine: EngineConfig) -> int:
    """The champion's top-K of every product written as batch-topk's part files; the rows written."""
    if engine.kind == "spark":
        from nextbuy.engines.spark import batch as spark_batch

        got = spark_batch.write_top_k(
            engine.spark, champion(), "recommendations", TOPK_K, (0, 1), SOURCES_PER_FILE
        )
    else:
        from nextbuy.serving import write_top_k

        got = write_top_k(champion(), "recommendations", TOPK_K, 0, 1, SOURCES_PER_FILE, progress=False)
    return int(got["rows"])


def monitor(engine: EngineConfig) -> int:
    from nextbuy import paths
    from nextbuy.config import MonitorConfig, load_section
    from nextbuy.mlops import io, schemas
    from nextbuy.stages import monitor as stage

    bundle = champion()
    meta = io.read_json(paths.TRAFFIC_META)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    span = (pd.Timestamp(meta["start"]), pd.Timestamp(meta["now"]))
    table, _, _, _ = stage.scored_traffic(bundle, load_section(MonitorConfig), span, products, engine)
    return int(table["volume"].sum())


def ingest() -> int:
    """``nextbuy ingest`` of the raw logs (``ingest.source: events``); the impressions it wrote."""
    from nextbuy.stages import ingest as stage

    return sum(stage.run()["impressions"].values())


def main(root: str, engine_kind: str, stage: str) -> None:
    from nextbuy.bench.engines_data import LOGS

    os.chdir(Path(root) / LOGS if stage == "ingest" else root)
    import yaml

    from nextbuy.config import EngineConfig, load_section, with_changes

    params = yaml_io.load(Path("params.yaml").read_text())
    params["engine"]["kind"] = engine_kind  # the store's params.yaml, with this run's engine
    Path("params.yaml").write_text(yaml.safe_dump(params))
    engine = with_changes(load_section(EngineConfig), kind=engine_kind)
    start = time.perf_counter()
    if stage == "label_delay":
        import pyarrow.parquet as pq

        from nextbuy import paths
        from nextbuy.stages import label_delay

        label_delay.run()
        rows = pq.ParquetFile(paths.WEIGHTED_IMPRESSIONS).metadata.num_rows
    elif stage == "ingest":
        rows = ingest()
    elif stage == "batch_topk":
        rows = batch_topk(engine)
    else:
        rows = monitor(engine)
    print(RESULT_PREFIX + json.dumps({"seconds": time.perf_counter() - start, "rows": rows}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
