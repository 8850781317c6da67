"""The executors' Python daemon: pyspark's own, started from the installed pyspark, not from
the zip of it Spark puts first on the workers' path."""

from __future__ import annotations

import pytest

from nextbuy.engines.spark import daemon
from nextbuy.engines.spark import session as spark_session
from tests.engines.spark.conftest import spark_config


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

    pyspark = pytest.importorskip("pyspark")
    bundled = Path(pyspark.__file__).parent / "python" / "lib"
    other = str(tmp_path / "deps.zip")
    path = [str(tmp_path), str(bundled / "pyspark.zip"), str(bundled / "py4j-src.zip"), other]
    assert daemon.without_bundled_zips(path) == [str(tmp_path), other]


def test_the_session_starts_this_daemon():
    conf = spark_session.session_conf(spark_config())
    assert conf["spark.python.daemon.module"] == daemon.__name__
