"""Without pyspark or Java the Spark engine stops before starting anything, naming engine.kind and
what to install (a stage then exits 2, its last outputs in place)."""

from __future__ import annotations

import pytest

from nextbuy.engines.spark import session as spark_session
from nextbuy.mlops import io
from tests.engines.spark.conftest import spark_config


def test_no_java_is_bad_input_naming_engine_kind_and_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(io.DataError) as caught:
        spark_session.session(spark_config())
    assert caught.value.column == "engine.kind"
    assert "openjdk-17-jre-headless" in caught.value.message or "pyspark" in caught.value.message


def test_the_executors_import_this_checkout_and_keep_the_users_conf():
    import nextbuy

    conf = spark_session.session_conf(spark_config())
    src = str(__import__("pathlib").Path(nextbuy.__file__).resolve().parents[1])
    assert conf["spark.executorEnv.PYTHONPATH"].split(":")[0] == src
    assert conf["spark.driver.memory"] == "1g"  # the test's conf, not a default
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_a_java_home_that_holds_no_java_is_named(monkeypatch, tmp_path):
    pytest.importorskip("pyspark")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(io.DataError) as caught:
        spark_session.session(spark_config())
    assert "JAVA_HOME" in caught.value.message
    assert str(tmp_path / "no-jdk") in caught.value.message


def test_an_unreachable_master_is_named_in_seconds():
    """Spark alone retries for about a minute, then fails without naming the setting."""
    import time

    from nextbuy.procs import free_port

    pytest.importorskip("pyspark")
    if spark_session.unavailable_reason() is not None:
        pytest.skip(spark_session.unavailable_reason())
    master = f"spark://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(io.DataError) as caught:
        spark_session.session(spark_config(master))
    assert time.monotonic() - started < 30
    assert caught.value.column == "engine.spark.master"
    assert master in caught.value.message
    assert "local[2]" in caught.value.message


def test_a_master_that_answers_or_runs_locally_is_not_probed_further():
    assert spark_session.unreachable_master("local[2]") is None
    assert spark_session.unreachable_master("spark://no-such-host.invalid:7077", timeout=2) is not None
