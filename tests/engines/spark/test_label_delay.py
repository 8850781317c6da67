"""label_delay on Spark (local[2]) writes what the pandas engine writes: the weighted table,
the delay model, plots and metrics; on the tiny store (and, marked slow, on the default store)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from nextbuy import paths
from nextbuy.config import read_params
from tests.conftest import ROOT, TINY_PARAMS
from tests.engines.spark import parity


def test_label_delay_on_spark_writes_what_pandas_writes(tiny_store, local_spark):
    root, params = tiny_store
    parity.label_delay_on_both(params, local_spark, root / "pandas")
    parity.assert_label_delay_same(root / "pandas")
    assert (
        len(pd.read_parquet(paths.WEIGHTED_IMPRESSIONS))
        == TINY_PARAMS["ingest"]["simulator"]["n_impressions"]
    )


@pytest.mark.slow
def test_label_delay_on_the_default_store_is_the_same_on_spark(tmp_path, local_spark):
    before = Path.cwd()
    try:
        params = parity.ingested_store(tmp_path / "store", read_params(ROOT / "params.yaml"))
        parity.label_delay_on_both(params, local_spark, tmp_path / "pandas")
        parity.assert_label_delay_same(tmp_path / "pandas")
        assert (
            len(pd.read_parquet(paths.WEIGHTED_IMPRESSIONS)) == params["ingest"]["simulator"]["n_impressions"]
        )
    finally:
        os.chdir(before)
