"""A real Spark cluster: a standalone master and two workers started from the installed pyspark
on 127.0.0.1 (and stopped, as process groups, by the test), label_delay, batch-topk, ingest and
traffic of a store's raw logs, and ingest of an edge list run against spark://127.0.0.1:PORT
write what the pandas engine writes."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nextbuy import procs
from nextbuy.bench.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.config import RetrievalConfig
from nextbuy.engines.spark import batch as spark_batch
from nextbuy.engines.spark import session as spark_session
from nextbuy.engines.spark.standalone import StandaloneCluster
from tests.conftest import TINY_PARAMS
from tests.engines.spark import parity
from tests.engines.spark.conftest import TEST_JVM_OPTIONS, skip_without_spark, spark_config

pytestmark = pytest.mark.slow  # a cluster of three JVMs, then two engines' runs: minutes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    skip_without_spark()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_DAEMON_JAVA_OPTS", TEST_JVM_OPTIONS)  # the master's and the workers' JVMs
        with StandaloneCluster(tmp_path_factory.mktemp("cluster")) as running:
            # executors of 1 core and 512 MiB on each 1-core, 1 GiB worker: one per worker
            cfg = spark_config(running.master)
            conf = dict(cfg.conf) | {"spark.executor.memory": "512m", "spark.executor.cores": "1"}
            cfg = cfg.model_copy(update={"conf": conf})
            spark = spark_session.session(cfg)
            yield running, cfg, spark
            spark_session.stop()
    assert all(not procs.group_alive(s.proc.pid) for s in running.servers if s.proc is not None)


def test_the_cluster_runs_two_executors_on_its_two_workers(cluster):
    running, _, spark = cluster
    assert spark.sparkContext.master == running.master
    status = spark.sparkContext._jsc.sc().getExecutorMemoryStatus  # the driver and the executors
    deadline = time.monotonic() + 120  # executors register with the driver a moment after it starts
    while status().size() < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    hosts = status().size()
    assert running.registered() == 2
    assert hosts == 3


def test_label_delay_and_batch_topk_on_the_cluster_write_what_pandas_writes(cluster, tmp_path, monkeypatch):
    from nextbuy.serving import write_top_k
    from nextbuy.stages import ingest

    _, cfg, _ = cluster
    (tmp_path / "store").mkdir()
    monkeypatch.chdir(tmp_path / "store")
    params = copy.deepcopy(TINY_PARAMS)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    ingest.run()
    parity.label_delay_on_both(params, cfg, tmp_path / "pandas")
    parity.assert_label_delay_same(tmp_path / "pandas")
    retrieval = RetrievalConfig.model_validate(
        TINY_PARAMS["deploy"]["retrieval"] | {"kind": "flat", "candidates": 50}
    )
    bundle = load_bundle(
        write_bundle_files(tmp_path / "bundle", n_products=1200, n_buckets=2, retrieval=retrieval)
    )
    write_top_k(bundle, tmp_path / "pandas-topk", 5, 0, 1, 200, progress=False)
    spark_batch.write_top_k(cfg, bundle, tmp_path / "spark-topk", 5, (0, 1), 200)
    names = sorted(p.name for p in (tmp_path / "pandas-topk" / "shard=000").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "spark-topk" / "shard=000").iterdir())
    for name in names:
        parity.same_frames(
            pd.read_parquet(tmp_path / "pandas-topk" / "shard=000" / name),
            pd.read_parquet(tmp_path / "spark-topk" / "shard=000" / name),
        )


def test_raw_logs_ingest_and_traffic_on_the_cluster_write_what_pandas_writes(cluster, tmp_path, monkeypatch):
    _, cfg, _ = cluster
    (tmp_path / "store").mkdir()
    monkeypatch.chdir(tmp_path / "store")
    Path("params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    params = parity.raw_logs(copy.deepcopy(TINY_PARAMS), TINY_PARAMS["traffic"]["days"])
    parity.ingest_on_both(params, cfg, tmp_path / "pandas")
    parity.assert_ingest_same(tmp_path / "pandas")


def test_an_edge_list_ingested_on_the_cluster_is_what_pandas_writes(cluster, tmp_path, monkeypatch):
    _, cfg, _ = cluster
    (tmp_path / "store" / "inputs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "store")
    parity.awkward_edges().drop(columns="weight").to_csv("inputs/graph.csv", index=False)
    params = copy.deepcopy(TINY_PARAMS)
    params["ingest"] |= {"source": "edge_list", "graph_path": "inputs/graph.csv"}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    parity.edge_list_ingest_on_both(params, cfg, tmp_path / "pandas")
    parity.assert_edge_list_ingest_same(tmp_path / "pandas")
