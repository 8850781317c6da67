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
