"""pandera's pandas API (``pa``), imported without pandas-on-Spark.

With pyspark installed (the ``spark`` extra), ``import pandera`` also imports ``pyspark.pandas``
to adapt pandas' typing to pandas-on-Spark, which nextbuy never uses: 0.4 s and the whole
pyspark package at the start of every process that checks a table (each stage, the CLI, Spark's
Python workers). pandera takes a failed import of it as "pyspark absent"; it is hidden only
while pandera is first imported, so a later ``import pyspark.pandas`` works as usual."""

from __future__ import annotations

import sys

_HIDDEN = "pyspark.pandas"

if "pandera" in sys.modules or _HIDDEN in sys.modules:
    import pandera.pandas as pa
else:
    sys.modules[_HIDDEN] = None  # type: ignore[assignment]  # None: "import fails" to Python
    try:
        import pandera.pandas as pa
    finally:
        del sys.modules[_HIDDEN]

__all__ = ["pa"]
