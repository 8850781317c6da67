"""The Spark engine (local[2]) writes what the pandas engine writes: label_delay's weighted table,
delay model, plots and metrics; monitor's per-window x per-bucket table, alerts and dashboard
rows; batch-topk's part files; on the tiny store (and, marked slow, on the default store)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.config import EngineConfig, MonitorConfig, RetrievalConfig
from nextbuy.mlops import io, schemas
from tests.conftest import ROOT, TINY_PARAMS
from tests.engines import parity


def project(root: Path, params: dict) -> dict:
    """A store in ``root`` (the cwd afterwards): ingested, with its traffic simulated."""
    from nextbuy.stages import ingest, traffic

    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    ingest.run()
    traffic.run()
    return params


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, local_spark):
    before = Path.cwd()
    root = tmp_path_factory.mktemp("tiny")
    params = project(root / "store", copy.deepcopy(TINY_PARAMS))
    yield root, params
    os.chdir(before)


def test_label_delay_on_spark_writes_what_pandas_writes(tiny_store, local_spark):
    root, params = tiny_store
    parity.label_delay_on_both(params, local_spark, root / "pandas")
    parity.assert_label_delay_same(root / "pandas")
    assert (
        len(pd.read_parquet(paths.WEIGHTED_IMPRESSIONS))
        == TINY_PARAMS["ingest"]["simulator"]["n_impressions"]
    )


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


def test_batch_topk_on_spark_writes_the_same_part_files(tmp_path, local_spark):
    from nextbuy.engines import spark_batch
    from nextbuy.serving import write_top_k

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


def test_exact_quantiles_match_numpy_beyond_what_is_collected(local_spark):
    from nextbuy.engines import spark_session, spark_table

    spark = spark_session.session(local_spark)
    values = np.round(np.random.default_rng(0).lognormal(size=20_000), 2)  # ties, as weights have
    frame = spark.createDataFrame(pd.DataFrame({"w": values}))
    probs = [0.0, 0.01, 0.37, 0.5, 0.99, 1.0]
    # collect_max below the row count: only the rows between two approximate quantiles come back
    got = spark_table.exact_quantiles(frame, "w", probs, collect_max=1000)
    np.testing.assert_allclose(got, np.quantile(values, probs), rtol=1e-12)


@pytest.mark.slow
def test_label_delay_on_the_default_store_is_the_same_on_spark(tmp_path, local_spark):
    from nextbuy.config import read_params

    before = Path.cwd()
    try:
        params = project(tmp_path / "store", read_params(ROOT / "params.yaml"))
        parity.label_delay_on_both(params, local_spark, tmp_path / "pandas")
        parity.assert_label_delay_same(tmp_path / "pandas")
        assert (
            len(pd.read_parquet(paths.WEIGHTED_IMPRESSIONS)) == params["ingest"]["simulator"]["n_impressions"]
        )
    finally:
        os.chdir(before)


def test_exact_quantiles_of_a_column_of_ties_collect_nothing_but_counts(local_spark):
    from nextbuy.engines import spark_session, spark_table

    spark = spark_session.session(local_spark)
    values = np.r_[np.ones(30_000), np.linspace(1.5, 3.0, 5)]  # weights mostly 1, as naive ones are
    frame = spark.createDataFrame(pd.DataFrame({"w": values}))
    probs = [0.01, 0.5, 0.9999]
    got = spark_table.exact_quantiles(frame, "w", probs, collect_max=1000)
    np.testing.assert_allclose(got, np.quantile(values, probs), rtol=1e-12)


def test_recent_versions_measure_the_same_on_spark_as_in_process(tiny_store, local_spark):
    """The card's figures of a version on the tiny store's traffic: counts exact, AUC and recall
    to ``parity.RTOL``; repeated pairs give tied scores, and the rows not yet matured for the
    longer maturities count with no mass."""
    from nextbuy.engines.spark_maturity import OnSpark
    from nextbuy.mlops.model_maturity import InProcess

    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    bundle = load_bundle(write_bundle_files(Path("bundle"), n_products=len(products), n_buckets=2))
    now = pd.Timestamp(io.read_json(paths.TRAFFIC_META)["now"])
    days = [1, 3, 5, 30]  # 6 days of traffic: nothing has had 30 days yet
    pandas_ = InProcess(paths.TRAFFIC_IMPRESSIONS).measured(bundle, now, days)
    spark = OnSpark(local_spark, paths.TRAFFIC_IMPRESSIONS).measured(bundle, now, days)
    assert [m[:3] for m in spark] == [m[:3] for m in pandas_]  # days, rows, conversions
    parity.same_values([[m.auc, m.recall] for m in pandas_], [[m.auc, m.recall] for m in spark])
    assert pandas_[0].rows > pandas_[1].rows > pandas_[2].rows > 0
    assert pandas_[2].conversions > 0
    assert pandas_[3][1:] == (0, 0, None, None)
    traffic = io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    score = bundle.score(traffic["source_id"].to_numpy(), traffic["shown_id"].to_numpy())["score"]
    assert score.nunique() < len(score)  # ties
