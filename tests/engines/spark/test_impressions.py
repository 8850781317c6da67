"""ingest's labelled impressions kept on Spark: split, sorted, checked and counted on Spark, then
written into the one parquet file, exactly as the pandas engine's ``finalise`` splits, sorts,
checks and counts them; a row ``finalise`` refuses is refused with the pandas engine's words."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.config import SplitConfig
from nextbuy.data.ingest_checks import finalise
from nextbuy.domain import events
from nextbuy.domain.ingest_summary import impression_figures
from nextbuy.engines.spark import impressions as spark_impressions
from nextbuy.engines.spark import session as spark_session
from nextbuy.engines.spark import table as spark_table
from nextbuy.mlops import io

SPLIT = SplitConfig.model_validate({"test_share": 0.2, "calib_share": 0.2, "seed": 3})


def labelled(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Products with text keys, and labelled impressions in log order over 30 days: ties of
    shown_at, clicks, carts and conversions after the impression, most rows without."""
    rng = np.random.default_rng(seed)
    products = pd.DataFrame({"product_id": np.arange(12), "product_key": [f"sku-{i}" for i in range(12)]})
    shown = pd.Timestamp("2026-02-01") + pd.to_timedelta(rng.integers(0, 30 * 24, n), unit="h")

    def later(share: float) -> pd.Series:
        at = pd.Series(shown + pd.to_timedelta(rng.integers(1, 50, n), unit="min"))
        return at.where(rng.random(n) < share)

    clicked = later(0.4)
    frame = pd.DataFrame(
        {
            "impression_id": rng.permutation(n) + 10,
            "source_id": rng.integers(0, 12, n),
            "shown_id": rng.integers(0, 12, n),
            "shown_at": shown,
            "clicked_at": clicked,
            "carted_at": clicked.where(rng.random(n) < 0.5),
            "converted_at": (clicked + pd.Timedelta(hours=2)).where(rng.random(n) < 0.5),
        }
    )
    return products, frame[list(events.LOG_COLUMNS)]


def on_spark(local_spark, frame: pd.DataFrame):
    spark = spark_session.session(local_spark)
    rows = spark_table.for_spark(frame).assign(row=np.arange(len(frame)))
    return spark.createDataFrame(rows)


def test_impressions_kept_on_spark_are_split_sorted_counted_and_written_as_pandas_does(local_spark, tmp_path):
    products, frame = labelled()
    sorted_log = frame.sort_values(["shown_at", "impression_id"], kind="stable", ignore_index=True)
    edges = pd.DataFrame({"src": [0], "dst": [1], "weight": [1.0], "time": [pd.NaT]})
    _, expected = finalise(
        products, edges, sorted_log, pd.Timestamp("2026-03-05"), SPLIT, "impressions.parquet"
    )
    got = spark_impressions.finish(on_spark(local_spark, frame), products, SPLIT, tmp_path, 64)
    try:
        assert not got.refused
        figures = impression_figures(expected)
        assert (got.sizes, got.converted, got.rows) == (figures.sizes, figures.converted, len(expected))
        assert got.learned_span == (figures.first_learned.value, figures.last_learned.value)
        got.write(tmp_path / "impressions.parquet")
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "impressions.parquet"), expected, check_exact=True
        )
    finally:
        got.release()
    assert not list(tmp_path.glob(".spark*"))


@pytest.mark.parametrize("fault", ["click_before_shown", "cart_after_conversion", "unknown_product"])
def test_a_row_finalise_refuses_is_found_on_spark_and_refused_with_the_pandas_words(
    local_spark, tmp_path, fault
):
    products, frame = labelled()
    converted = frame.index[frame["converted_at"].notna() & frame["carted_at"].notna()][0]
    if fault == "click_before_shown":
        frame.loc[7, "clicked_at"] = frame.loc[7, "shown_at"] - pd.Timedelta(minutes=5)
    elif fault == "cart_after_conversion":
        frame.loc[converted, "carted_at"] = frame.loc[converted, "converted_at"] + pd.Timedelta(minutes=5)
    else:
        frame.loc[9, "shown_id"] = 12
    got = spark_impressions.finish(on_spark(local_spark, frame), products, SPLIT, tmp_path, 64)
    edges = pd.DataFrame({"src": [0], "dst": [1], "weight": [1.0], "time": [pd.NaT]})
    sorted_log = frame.sort_values(["shown_at", "impression_id"], kind="stable", ignore_index=True)
    try:
        assert got.refused
        words = {}
        for name, rows in (("pandas", sorted_log), ("spark", got.to_pandas().drop(columns="split"))):
            with pytest.raises(io.DataError) as refused:
                finalise(products, edges, rows, pd.Timestamp("2026-03-05"), SPLIT, "impressions.parquet")
            words[name] = str(refused.value)
        assert words["spark"] == words["pandas"]
        assert "first offending rows" in words["spark"]
    finally:
        got.release()
