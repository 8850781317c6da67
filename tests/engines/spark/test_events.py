"""Raw logs on Spark (local[2]): the graph and the labels built from a store's logs equal the
pandas engine's, on logs of many same-moment baskets (the order lines of one moment counted back
in the log's order) and through the ingest and traffic stages on the tiny store's logs (and,
marked slow, the default store's)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy import paths
from nextbuy.domain import events
from nextbuy.engines.spark import events as spark_events
from tests.conftest import ROOT, TINY_PARAMS
from tests.engines.spark import parity
from tests.helpers import config

T0 = pd.Timestamp("2026-03-01")


def coded_logs(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Coded logs of 50 customers over 30 products, times on a 6-hour grid: baskets of several
    order lines at one moment, clicks and carts of the same moment, repeat purchases."""
    rng = np.random.default_rng(seed)

    def times(n: int) -> np.ndarray:
        return (T0 + pd.to_timedelta(rng.integers(0, 120, n) * 6, unit="h")).to_numpy()

    orders = pd.DataFrame(
        {
            "customer": rng.integers(0, 50, 4000),
            "product": rng.integers(0, 30, 4000),
            "ordered_at": times(4000),
        }
    )
    impressions = pd.DataFrame(
        {
            "impression_id": rng.permutation(3000).astype(np.int64) + 10**6,
            "customer": rng.integers(0, 60, 3000),  # some customers never order
            "source_id": rng.integers(0, 30, 3000),
            "shown_id": rng.integers(0, 30, 3000),
            "shown_at": times(3000),
        }
    )
    interactions = pd.DataFrame(
        {
            "customer": rng.integers(0, 50, 2000),
            "product": rng.integers(0, 30, 2000),
            "kind": rng.choice(["click", "cart"], 2000).astype(object),
            "at": times(2000),
        }
    )
    return orders, impressions, interactions


def test_logs_of_same_moment_baskets_build_the_same_graph_and_labels(local_spark, tmp_path):
    logs = coded_logs()
    rules = config("ingest.events", graph_window_days=5.0, graph_lookback_orders=3, attribution_days=4.0)
    snapshot = T0 + pd.Timedelta(days=25)  # cuts the last 5 days off
    pandas = events.build_from_logs(*logs, 30, rules, snapshot)
    spark = events.build_from_logs(*logs, 30, rules, snapshot, spark_events.builders(local_spark, tmp_path))
    pd.testing.assert_frame_equal(pandas.edges, spark.edges, check_exact=True)
    pd.testing.assert_frame_equal(pandas.impressions, spark.impressions, check_exact=True)
    assert pandas.counts == spark.counts
    assert pandas.counts["impressions_after_snapshot_dropped"] > 0
    assert pandas.counts["conversions_attributed"] > 0
    # the lookback cuts through baskets: which lines count depends on the log's order at a tie
    assert pandas.counts["co_purchase_pairs"] > 0
    assert not list(tmp_path.iterdir())  # the staged inputs and the parts are gone


def in_store(root: Path, params: dict, days_after: float, form: str = "parquet") -> dict:
    root.mkdir(parents=True)
    os.chdir(root)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    return parity.raw_logs(params, days_after, form)


def test_ingest_and_traffic_of_the_tiny_stores_logs_on_spark_write_what_pandas_writes(
    local_spark, tmp_path, monkeypatch
):
    """The logs as ``simulate-logs --format partitioned`` writes them (one parquet file per log:
    tests/engines/spark/test_logs.py), read on Spark by the stage itself."""

    on_spark = parity.record_spark_reads(monkeypatch)
    before = Path.cwd()
    try:
        tiny = copy.deepcopy(TINY_PARAMS)
        params = in_store(tmp_path / "store", tiny, TINY_PARAMS["traffic"]["days"], "partitioned")
        parity.ingest_on_both(params, local_spark, tmp_path / "pandas")
        parity.assert_ingest_same(tmp_path / "pandas")
        assert len(pd.read_parquet(paths.EDGES)) > 0
        assert len(pd.read_parquet(paths.TRAFFIC_IMPRESSIONS)) > 0
        assert not [p for p in Path("data").iterdir() if p.name.startswith(".spark")]
        assert on_spark  # the reader ran on Spark, not left to pandas
        assert all(on_spark)
    finally:
        os.chdir(before)


@pytest.mark.slow
def test_ingest_and_traffic_of_the_default_stores_logs_are_the_same_on_spark(local_spark, tmp_path):
    from nextbuy.config import read_params

    before = Path.cwd()
    try:
        default = read_params(ROOT / "params.yaml")
        params = in_store(tmp_path / "store", default, default["traffic"]["days"])
        parity.ingest_on_both(params, local_spark, tmp_path / "pandas")
        parity.assert_ingest_same(tmp_path / "pandas")
    finally:
        os.chdir(before)
