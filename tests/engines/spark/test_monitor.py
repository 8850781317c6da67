"""monitor on Spark (local[2]) judges the traffic as the pandas engine does: the per-window x
per-bucket table, the alerts and the dashboard's rows, on the tiny store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.config import EngineConfig, MonitorConfig
from nextbuy.mlops import io, schemas
from tests.engines.spark import parity


def monitor_on(kind: str, local_spark, params: dict):
    from nextbuy.stages import monitor

    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    bundle = load_bundle(write_bundle_files(Path("bundle"), n_products=len(products), n_buckets=2))
    meta = io.read_json(paths.TRAFFIC_META)
    span = (pd.Timestamp(meta["start"]), pd.Timestamp(meta["now"]))
    cfg = MonitorConfig.model_validate(params["monitor"])
    engine = parity.engine(kind, EngineConfig.model_validate(params["engine"]), local_spark)
    return monitor.scored_traffic(bundle, cfg, span, products, engine)


def test_monitor_on_spark_judges_the_traffic_as_pandas_does(tiny_store, local_spark):
    _, params = tiny_store
    if not Path(paths.DELAY_MODEL).exists():
        parity.label_delay_on_both(params, local_spark, tiny_store[0] / "pandas")
    table, fired, rows, reference = monitor_on("pandas", local_spark, params)
    s_table, s_fired, s_rows, s_reference = monitor_on("spark", local_spark, params)
    parity.same_frames(table, s_table)
    parity.same_values(fired, s_fired)
    # every row of a window smaller than engine.spark.dashboard_rows reaches the dashboard
    parity.same_frames(rows, s_rows)
    parity.same_frames(reference, s_reference)
    assert (
        table["volume"].sum()
        == len(rows)
        == params["traffic"]["days"] * params["traffic"]["impressions_per_day"]
    )
