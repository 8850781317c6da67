"""The Spark engine's tests: skipped, saying why, where pyspark or Java is missing (``make spark``
installs the first; Debian's openjdk-17-jre-headless the second)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from nextbuy.config import SparkConfig
from nextbuy.engines.spark import session as spark_session
from tests.conftest import TINY_PARAMS
from tests.engines.spark import parity

# The tests' JVMs live for seconds: the C1 compiler only, without C2's compile threads (which
# cost more CPU than they save in jobs this short), and one garbage-collector thread; the
# standalone cluster's JVMs (all on this machine) map the class archive too, as the driver does.
TEST_JVM_OPTIONS = spark_session.with_archive("-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")


def spark_config(master: str = "local[2]") -> SparkConfig:
    """The tiny store's engine.spark with ``master``; small memory, two shuffle partitions (more
    than one, so every shuffle's parts are merged as on a cluster; each task more costs the
    suite CPU: 4 -> 2 took tests/engines from 181 to 166 CPU-s), the tests' JVM options for the
    driver and the executors."""
    spark = dict(TINY_PARAMS["engine"]["spark"])
    conf = dict(spark["conf"]) | {
        "spark.driver.memory": "1g",
        "spark.sql.shuffle.partitions": "2",
        "spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,
        "spark.executor.extraJavaOptions": TEST_JVM_OPTIONS,
    }
    return SparkConfig.model_validate(spark | {"master": master, "conf": conf})


def skip_without_spark() -> None:
    reason = spark_session.unavailable_reason()
    if reason is not None:
        pytest.skip(f"Spark engine unavailable: {reason}")


@pytest.fixture(scope="session")
def local_spark() -> SparkConfig:
    """engine.spark on local[2]; one session for every test of the process, stopped at the end."""
    skip_without_spark()
    cfg = spark_config()
    spark_session.session(cfg)
    yield cfg
    spark_session.stop()


@pytest.fixture(scope="session")
def tiny_store_built(tmp_path_factory, local_spark) -> tuple[Path, dict]:
    """The tiny store in ``root/store``, ingested and its traffic simulated, once per process
    (the Spark tests all run in one): ``(root, params)``."""
    before = Path.cwd()
    root = tmp_path_factory.mktemp("tiny")
    try:
        params = parity.ingested_store(root / "store", copy.deepcopy(TINY_PARAMS))
    finally:
        os.chdir(before)
    return root, params


@pytest.fixture
def tiny_store(tiny_store_built, monkeypatch) -> tuple[Path, dict]:
    """:func:`tiny_store_built` with its store folder the test's cwd: the tests of label_delay,
    monitor and maturity on it go on from what the ones before left there (label_delay's
    outputs, a bundle)."""
    root, params = tiny_store_built
    monkeypatch.chdir(root / "store")
    return root, params
