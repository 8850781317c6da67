"""The class archive of the Spark engine's JVMs (written by engines/spark/classes.py, ``make
spark``): which JVM options map it (``session.with_archive``), and the session's JVM started
with it."""

from __future__ import annotations

import pytest

from nextbuy.engines.spark import session as spark_session
from tests.engines.spark.conftest import spark_config


def test_the_archive_is_added_only_where_it_exists_and_no_other_is_chosen(tmp_path):
    archive = tmp_path / "classes.jsa"
    assert spark_session.with_archive("-Xmx1g", archive) == "-Xmx1g"  # none written yet
    archive.write_bytes(b"")
    assert spark_session.with_archive("-Xmx1g", archive) == f"-Xmx1g -XX:SharedArchiveFile={archive}"
    assert spark_session.with_archive("", archive) == f"-XX:SharedArchiveFile={archive}"
    for chosen in ("-XX:SharedArchiveFile=/other.jsa", "-XX:ArchiveClassesAtExit=/new.jsa", "-Xshare:off"):
        assert spark_session.with_archive(f"-Xmx1g {chosen}", archive) == f"-Xmx1g {chosen}"


def test_the_drivers_options_keep_the_users_and_gain_the_archive(monkeypatch, tmp_path):
    archive = tmp_path / "classes.jsa"
    archive.write_bytes(b"")
    monkeypatch.setattr(spark_session, "ARCHIVE", archive)
    base = spark_config()
    cfg = base.model_copy(update={"conf": base.conf | {"spark.driver.extraJavaOptions": "-Xss4m -Xmx1g"}})
    conf = spark_session.session_conf(cfg)
    user = ["-Xss4m", "-Xmx1g"]
    assert conf["spark.driver.extraJavaOptions"].split() == [*user, f"-XX:SharedArchiveFile={archive}"]
    archive.unlink()
    assert spark_session.session_conf(cfg)["spark.driver.extraJavaOptions"].split() == user


def test_the_sessions_jvm_starts_from_the_archive_make_spark_wrote(local_spark):
    if not spark_session.ARCHIVE.is_file():
        pytest.skip(f"no class archive at {spark_session.ARCHIVE} (make spark writes it)")
    jvm = spark_session.session(local_spark).sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={spark_session.ARCHIVE}" in arguments
