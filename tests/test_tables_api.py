"""nextbuy.tables_api: pandera's checks without pandas-on-Spark at every process start."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

CODE = """
import sys
import pandas as pd
from nextbuy.mlops import io, schemas
from nextbuy.tables_api import pa
frame = pd.DataFrame({"x": [1, 2]})
pa.DataFrameSchema({"x": pa.Column(int, pa.Check.ge(0))}).validate(frame)
try:
    pa.DataFrameSchema({"x": pa.Column(int, pa.Check.ge(2))}).validate(frame)
except pa.errors.SchemaError:
    refused = True
else:
    refused = False
print(refused, "pyspark" in sys.modules)
"""


def run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_tables_are_checked_without_importing_pyspark():
    assert run(CODE) == ["True", "False"]


@pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="pyspark not installed")
def test_pandas_on_spark_still_imports_afterwards():
    code = "import nextbuy.tables_api\nimport pyspark.pandas\nprint(pyspark.pandas.__name__)"
    assert run(code) == ["pyspark.pandas"]
