"""The Python daemon of the Spark engine's executors (``spark.python.daemon.module``): pyspark's
own daemon, started from the installed, compiled pyspark where Spark's zip of it is this very
installation's.

Spark puts ``$SPARK_HOME/python/lib/pyspark.zip`` (and py4j's zip) first on its Python workers'
path. With pyspark installed by pip, ``SPARK_HOME`` is that package, so the zip holds the same
files as the package, but as sources: each worker compiles every pyspark module it imports, and
every task re-reads the zip's directory (a worker calls ``importlib.invalidate_caches`` per task,
and Python 3.11's zip importer then reads the whole directory again: about 0.1 s of CPU per task
here). Only zips inside the pyspark package that this Python imports without them are left out;
on a cluster whose Python has no pyspark, or another one, the path stays as Spark set it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def without_bundled_zips(path: list[str]) -> list[str]:
    """``path`` less the zips under ``<pyspark package>/python/lib`` of the pyspark (and py4j)
    found without any zip; ``path`` unchanged when either is found only in a zip."""
    unzipped = [entry for entry in path if not entry.endswith(".zip")]
    saved = sys.path[:]
    sys.path[:] = unzipped
    try:
        pyspark, py4j = importlib.util.find_spec("pyspark"), importlib.util.find_spec("py4j")
    finally:
        sys.path[:] = saved
    if pyspark is None or py4j is None or not pyspark.submodule_search_locations:
        return path
    bundled = (Path(next(iter(pyspark.submodule_search_locations))) / "python" / "lib").resolve()
    return [e for e in path if not (e.endswith(".zip") and Path(e).resolve().parent == bundled)]


if __name__ == "__main__":
    sys.path[:] = without_bundled_zips(sys.path)
    from pyspark import daemon

    daemon.manager()
