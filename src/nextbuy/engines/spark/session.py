"""The Spark session of the Spark engine: built from params.yaml's ``engine.spark``, once
per process; pyspark imported here, lazily. The driver's JVM maps the class archive
``make spark`` writes (``classes``: how it is built) when there is one."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import nextbuy
from nextbuy.config import SparkConfig
from nextbuy.mlops import io

# What every nextbuy job needs whatever the user's conf: UTC wall times (the stages' times are
# naive UTC), pandas' nanosecond timestamps read as int64 ns, Arrow on.
FIXED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # pandas writes nanosecond timestamps, which Spark reads as int64 ns only (table.read)
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
# The class archive (classes.build writes it): it belongs to this environment, so it lives in it.
ARCHIVE = Path(sys.prefix) / "share" / "nextbuy" / "spark-classes.jsa"
# The default ports of a standalone master and of Spark Connect; how long a master may take to answer.
MASTER_PORTS = {"spark": 7077, "sc": 15002}
MASTER_PROBE_S = 10.0
# HotSpot flags that choose an archive (or none) already: the user's choice stands.
CHOOSING = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")


def unavailable_reason() -> str | None:
    """Why the Spark engine cannot run here (no pyspark, no java), or None when it can."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (make spark, or pip install '.[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if java_home:  # pyspark starts $JAVA_HOME/bin/java whatever PATH holds
        if not os.path.isfile(os.path.join(java_home, "bin", "java")):
            return (
                f"the environment variable JAVA_HOME={java_home} holds no bin/java: point it at a "
                "Java 17 installation (ls /usr/lib/jvm) or unset it to use java on PATH"
            )
        return None
    if not shutil.which("java"):
        return "no java on PATH or in JAVA_HOME (Java 17: apt-get install openjdk-17-jre-headless)"
    return None


def unreachable_master(master: str, timeout: float = MASTER_PROBE_S) -> str | None:
    """Why nothing answers at a ``spark://`` or ``sc://`` master's address (refused, timed
    out, unknown host); None when it answers or the master is local. Spark itself retries
    for about a minute and then fails without naming the setting."""
    scheme, _, rest = master.partition("://")
    if scheme not in MASTER_PORTS or not rest:
        return None
    reasons = []
    # A standalone master may list several masters (ZooKeeper HA): one answering is enough.
    for address in rest.split("/")[0].split(","):
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
        try:
            with socket.create_connection((host or address, int(port or MASTER_PORTS[scheme])), timeout):
                return None
        except (OSError, ValueError) as err:
            reasons.append(f"{address}: {getattr(err, 'strerror', None) or err}")
    return "; ".join(reasons)


def with_archive(java_options: str, archive: Path | None = None) -> str:
    """``java_options`` plus the flag that maps ``archive`` (``ARCHIVE``), when it exists and the
    options choose no archive of their own."""
    archive = ARCHIVE if archive is None else archive
    if not archive.is_file() or any(flag in java_options for flag in CHOOSING):
        return java_options
    return f"{java_options} -XX:SharedArchiveFile={archive}".strip()


def session_conf(cfg: SparkConfig) -> dict[str, str]:
    """The session's settings: ``engine.spark.conf``, the executors' Python (this one, with
    this process's PYTHONPATH, and its daemon, unless the conf names others), and ``FIXED_CONF``."""
    # The executors import this nextbuy (the checkout's src/ before any installed copy).
    where = [str(Path(nextbuy.__file__).resolve().parents[1])]
    conf = {
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_rows),
        # pyspark's daemon from the installed, compiled pyspark (daemon says why)
        "spark.python.daemon.module": "nextbuy.engines.spark.daemon",
        "spark.ui.showConsoleProgress": "false",
        "spark.executorEnv.PYTHONPATH": os.pathsep.join(
            where + os.environ.get("PYTHONPATH", "").split(os.pathsep)
        ).strip(os.pathsep),
    }
    conf = conf | dict(cfg.conf) | FIXED_CONF
    # The driver's JVM maps the class archive ``make spark`` built (classes): on a local
    # master the executors run inside it. A cluster's executors are on other machines.
    driver = "spark.driver.extraJavaOptions"
    conf[driver] = with_archive(conf.get(driver, ""))
    if not conf[driver]:
        del conf[driver]
    return conf


def session(cfg: SparkConfig) -> Any:
    """The process's SparkSession for ``cfg.master`` (a running one is reused: one JVM per
    process). An ``sc://`` master connects through Spark Connect."""
    reason = unavailable_reason()
    if reason is not None:  # the stage exits 2 naming it, its last good outputs left in place
        raise io.DataError("params.yaml", f"engine.kind is spark, but {reason}", "engine.kind")
    unreachable = unreachable_master(cfg.master)
    if unreachable is not None:
        raise io.DataError(
            "params.yaml",
            f"engine.spark.master {cfg.master}: no Spark master answers ({unreachable}); start it "
            "(docs/how-to/large-catalogues.md shows how) or set engine.spark.master to local[2]",
            "engine.spark.master",
        )
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession()
    if running is not None and _master(running) != cfg.master:
        running.stop()  # one session per process: another master replaces it
    # The executors' Python: this one, unless the environment or the conf names another.
    os.environ.setdefault("PYSPARK_PYTHON", cfg.conf.get("spark.pyspark.python", sys.executable))
    builder = SparkSession.builder.appName("nextbuy")
    builder = builder.remote(cfg.master) if cfg.master.startswith("sc://") else builder.master(cfg.master)
    for key, value in session_conf(cfg).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in FIXED_CONF.items():  # a reused session gets them too
        spark.conf.set(key, value)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_rows))
    return spark


def _master(spark: Any) -> str | None:
    try:
        return str(spark.sparkContext.master)
    except Exception:  # noqa: BLE001  # Spark Connect: no SparkContext
        return None


def stop() -> None:
    """Stop this process's session (its JVM stays for the next one)."""
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession()
    if running is not None:
        running.stop()
