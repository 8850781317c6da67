"""Exact quantiles on Spark equal numpy's, beyond the rows brought to the driver and on a
column of ties."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.engines.spark import session as spark_session
from nextbuy.engines.spark import table as spark_table


def test_exact_quantiles_match_numpy_beyond_what_is_collected(local_spark):
    spark = spark_session.session(local_spark)
    values = np.round(np.random.default_rng(0).lognormal(size=20_000), 2)  # ties, as weights have
    frame = spark.createDataFrame(pd.DataFrame({"w": values}))
    probs = [0.0, 0.01, 0.37, 0.5, 0.99, 1.0]
    # collect_max below the row count: only the rows between two approximate quantiles come back
    got = spark_table.exact_quantiles(frame, "w", probs, collect_max=1000)
    np.testing.assert_allclose(got, np.quantile(values, probs), rtol=1e-12)


def test_exact_quantiles_of_a_column_of_ties_collect_nothing_but_counts(local_spark):
    spark = spark_session.session(local_spark)
    values = np.r_[np.ones(30_000), np.linspace(1.5, 3.0, 5)]  # weights mostly 1, as naive ones are
    frame = spark.createDataFrame(pd.DataFrame({"w": values}))
    probs = [0.01, 0.5, 0.9999]
    got = spark_table.exact_quantiles(frame, "w", probs, collect_max=1000)
    np.testing.assert_allclose(got, np.quantile(values, probs), rtol=1e-12)
