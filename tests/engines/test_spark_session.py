"""Without pyspark or Java the Spark engine stops before starting anything, naming engine.kind and
what to install (a stage then exits 2, its last outputs in place)."""

from __future__ import annotations

import pytest

from nextbuy.engines import spark_session
from nextbuy.mlops import io
from tests.engines.conftest import spark_config


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


def test_the_executors_import_the_installed_pyspark_not_sparks_zip_of_it(local_spark):
    import pandas as pd

    spark = spark_session.session(local_spark)

    def origin(batches):
        import pyspark

        for _ in batches:
            yield pd.DataFrame({"file": [pyspark.__file__]})

    files = spark.range(4, numPartitions=2).mapInPandas(origin, "file string").toPandas()["file"]
    assert len(files) == 2
    assert not [f for f in files if ".zip" in f]


def test_only_zips_inside_the_importable_pyspark_package_leave_the_path(tmp_path):
    from pathlib import Path

    from nextbuy.engines.spark_daemon import without_bundled_zips

    pyspark = pytest.importorskip("pyspark")
    bundled = Path(pyspark.__file__).parent / "python" / "lib"
    other = str(tmp_path / "deps.zip")
    path = [str(tmp_path), str(bundled / "pyspark.zip"), str(bundled / "py4j-src.zip"), other]
    assert without_bundled_zips(path) == [str(tmp_path), other]
