"""One measured run of `nextbuy bench engines`, in a child process of its own:
``python -m nextbuy.bench.engines_core ROOT ENGINE STAGE`` runs ``STAGE`` (``label_delay``: the
stage as ``nextbuy label-delay`` runs it; ``monitor``: the traffic scored by the champion and
judged per window and bucket, the stage without its Evidently publishing and registry lookup)
on ``ENGINE`` in the store at ROOT (``engines_data``), and prints one JSON line: the seconds the
stage took and the rows it handled."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

RESULT_PREFIX = "ENGINES-RESULT "


def monitor(engine) -> int:
    from nextbuy import paths
    from nextbuy.bench.serving_fixtures import BundleFiles, load_bundle
    from nextbuy.config import load_section
    from nextbuy.mlops import io, schemas
    from nextbuy.stages import monitor as stage

    champion = Path("champion")
    bundle = load_bundle(
        BundleFiles(champion / "moments.npz", champion / "calibration.json", champion / "thresholds.json")
    )
    meta = io.read_json(paths.TRAFFIC_META)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    span = (pd.Timestamp(meta["start"]), pd.Timestamp(meta["now"]))
    table, _, _, _ = stage.scored_traffic(bundle, load_section("monitor"), span, products, engine)
    return int(table["volume"].sum())


def main(root: str, engine_kind: str, stage: str) -> None:
    os.chdir(root)
    import yaml

    from nextbuy.config import load_section, with_changes

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["engine"]["kind"] = engine_kind  # the store's params.yaml, with this run's engine
    Path("params.yaml").write_text(yaml.safe_dump(params))
    engine = with_changes(load_section("engine"), kind=engine_kind)
    start = time.perf_counter()
    if stage == "label_delay":
        import pyarrow.parquet as pq

        from nextbuy import paths
        from nextbuy.stages import label_delay

        label_delay.run()
        rows = pq.ParquetFile(paths.WEIGHTED_IMPRESSIONS).metadata.num_rows
    else:
        rows = monitor(engine)
    print(RESULT_PREFIX + json.dumps({"seconds": time.perf_counter() - start, "rows": rows}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
