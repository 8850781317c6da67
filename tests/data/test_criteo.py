"""The Criteo conversion log (Chapelle 2014): clicks with delayed conversions, mapped
into the project's products and impressions tables, refused precisely when malformed,
and usable by the delay stage."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from nextbuy.data.sources import CRITEO_CONTEXT_KEY, read_criteo_log
from nextbuy.mlops import io, schemas
from nextbuy.mlops.io import DataError
from nextbuy.stages import label_delay
from tests.helpers import config

START = pd.Timestamp("2026-01-01")
HOUR, DAY = 3600, 86400

# click_ts, conversion_ts, int_1..int_8, cat_1..cat_9 (cat_1 is the default product column).
ROWS = [
    [
        "0",
        str(DAY),
        "5",
        "",
        "1",
        "-1",
        "0",
        "12",
        "3",
        "7",
        "68fd1e64",
        "80e26c9b",
        "",
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
    ],
    ["60", "", "", "", "", "", "", "", "", "", "8cf07265", "0b153874", "x1", "", "", "", "", "", ""],
    [
        str(HOUR),
        str(HOUR),
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "68fd1e64",
        "80e26c9b",
        "x2",
        "",
        "",
        "",
        "",
        "",
        "g",
    ],
    [str(2 * HOUR), "", "0", "", "", "", "", "", "", "", "", "fb936136", "", "", "", "", "", "", ""],
    [str(DAY), str(3 * DAY), "2", "", "", "", "", "", "", "", "05db9164", "", "", "", "", "", "", "", ""],
    [
        str(DAY + HOUR),
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "9",
        "8cf07265",
        "0b153874",
        "",
        "",
        "",
        "",
        "",
        "",
        "h",
    ],
]


def write_log(path, rows=ROWS, line_end: str = "\n"):
    path.write_text("".join("\t".join(row) + line_end for row in rows))
    return path


def changed(row: int, column: int, value: str) -> list[list[str]]:
    rows = [list(r) for r in ROWS]
    rows[row][column] = value
    return rows


def assert_refused(path, column: str, row: int) -> DataError:
    """The error names the file, the column and (in its table of rows) the row number."""
    with pytest.raises(DataError) as info:
        read_criteo_log(path)
    message = str(info.value)
    assert path.name in message, message
    assert f"column '{column}'" in message, message
    shown = message.split("first offending rows:", 1)[1]
    assert re.search(rf"^{row}\s", shown, re.MULTILINE), message
    assert info.value.rows.index[0] == row
    return info.value


def test_rows_become_clicked_impressions_with_their_conversions(tmp_path):
    path = write_log(tmp_path / "criteo.txt")
    log = read_criteo_log(path)
    io.validate(log.products, schemas.PRODUCTS, path)
    io.validate(log.impressions, schemas.IMPRESSIONS_LOG, path)
    imp = log.impressions

    assert imp["impression_id"].tolist() == [0, 1, 2, 3, 4, 5]
    seconds = [0, 60, HOUR, 2 * HOUR, DAY, DAY + HOUR]
    expected_shown = [START + pd.Timedelta(seconds=s) for s in seconds]
    assert imp["shown_at"].tolist() == expected_shown
    assert imp["clicked_at"].tolist() == expected_shown  # every row is a click
    assert imp["carted_at"].isna().all()
    assert imp["converted_at"].notna().tolist() == [True, False, True, False, True, False]
    assert imp.loc[0, "converted_at"] == START + pd.Timedelta(days=1)
    assert imp.loc[2, "converted_at"] == imp.loc[2, "clicked_at"]  # a zero delay is allowed
    assert imp.loc[4, "converted_at"] == START + pd.Timedelta(days=3)
    assert all(imp[c].dtype == schemas.TS for c in ("shown_at", "clicked_at", "carted_at", "converted_at"))


def test_products_are_the_product_column_plus_the_context(tmp_path):
    log = read_criteo_log(write_log(tmp_path / "criteo.txt"))
    products = log.products
    # Distinct cat_1 values, the empty one as "unknown", and the context pseudo product.
    keys = ["05db9164", "68fd1e64", "8cf07265", CRITEO_CONTEXT_KEY, "unknown"]
    assert products["product_key"].tolist() == keys
    assert products["product_id"].tolist() == [0, 1, 2, 3, 4]
    assert (products["category"] == -1).all()
    assert products["price"].isna().all()
    key_of = dict(zip(products["product_id"], products["product_key"], strict=True))
    shown = [key_of[i] for i in log.impressions["shown_id"]]
    assert shown == ["68fd1e64", "8cf07265", "68fd1e64", "unknown", "05db9164", "8cf07265"]
    assert {key_of[i] for i in log.impressions["source_id"]} == {CRITEO_CONTEXT_KEY}


def test_product_column_and_start_are_parameters(tmp_path):
    log = read_criteo_log(write_log(tmp_path / "criteo.txt"), product_column=1, start="2025-06-01 12:00")
    keys = ["0b153874", "80e26c9b", CRITEO_CONTEXT_KEY, "fb936136", "unknown"]
    assert log.products["product_key"].tolist() == keys
    assert log.impressions["shown_id"].tolist() == [1, 0, 1, 3, 4, 0]
    assert log.impressions.loc[1, "shown_at"] == pd.Timestamp("2025-06-01 12:01")
    for bad in (9, -1, 1.0, True):
        with pytest.raises(ValueError, match="product_column"):
            read_criteo_log(tmp_path / "criteo.txt", product_column=bad)


def test_features_are_the_integer_and_categorical_columns(tmp_path):
    log = read_criteo_log(write_log(tmp_path / "criteo.txt"))
    features = log.features
    assert list(features.columns) == [f"int_{i}" for i in range(1, 9)] + [f"cat_{i}" for i in range(1, 10)]
    assert features.index.equals(log.impressions.index)
    ints = features[[f"int_{i}" for i in range(1, 9)]]
    assert (ints.dtypes == np.float64).all()
    np.testing.assert_array_equal(ints.iloc[0], [5, np.nan, 1, -1, 0, 12, 3, 7])
    assert ints.iloc[1].isna().all()
    assert features.loc[5, "int_8"] == 9
    assert features.loc[0, "cat_9"] == "f"
    assert features.loc[1, "cat_3"] == "x1"
    assert features.loc[3, "cat_1"] == ""  # empty categorical kept as "", not "unknown"
    assert all(isinstance(v, str) for v in features[[f"cat_{i}" for i in range(1, 10)]].to_numpy().ravel())


def test_crlf_and_missing_final_newline_are_read(tmp_path):
    path = tmp_path / "criteo_crlf.txt"
    path.write_text("\r\n".join("\t".join(row) for row in ROWS))
    log = read_criteo_log(path)
    assert len(log.impressions) == 6
    assert log.features.loc[5, "cat_9"] == "h"


@pytest.mark.parametrize(
    ("case", "rows", "column", "row"),
    [
        ("short_row", [*ROWS[:2], ROWS[2][:-1], *ROWS[3:]], "cat_9", 2),
        ("long_row", [*ROWS[:3], [*ROWS[3], "extra"], *ROWS[4:]], "cat_9", 3),
        ("blank_line", [*ROWS[:4], [""], *ROWS[4:]], "conversion_ts", 4),
        ("fractional_click", changed(1, 0, "60.5"), "click_ts", 1),
        ("text_click", changed(3, 0, "2026-01-01"), "click_ts", 3),
        ("empty_click", changed(0, 0, ""), "click_ts", 0),
        ("text_conversion", changed(4, 1, "soon"), "conversion_ts", 4),
        ("huge_conversion", changed(4, 1, "9" * 30), "conversion_ts", 4),
        ("conversion_before_click", changed(5, 1, "60"), "conversion_ts", 5),
        ("text_integer_feature", changed(2, 4, "3.5"), "int_3", 2),
        ("reserved_product_key", changed(1, 10, CRITEO_CONTEXT_KEY), "cat_1", 1),
    ],
)
def test_bad_criteo_log_is_refused(tmp_path, case, rows, column, row):
    assert_refused(write_log(tmp_path / f"{case}.txt", rows), column, row)


def test_missing_or_empty_file_is_refused(tmp_path):
    for path in (tmp_path / "absent.txt", tmp_path / "empty.txt"):
        if path.name == "empty.txt":
            path.write_text("")
        with pytest.raises(DataError, match=re.escape(path.name)):
            read_criteo_log(path)


def test_delay_stage_runs_on_the_criteo_log(tmp_path):
    log = read_criteo_log(write_log(tmp_path / "criteo.txt"))
    impressions = io.validate(log.impressions.assign(split="train"), schemas.IMPRESSIONS, "criteo")
    # A month after the last event: old enough for the stage's maturity rule (label_delay.wait_days).
    snapshot = impressions[["shown_at", "clicked_at", "converted_at"]].max().max() + pd.Timedelta(days=30)
    cfg = config("label_delay")
    # The one call into the stage (label_delay.weigh is being reworked; adapt only this line).
    weighted = label_delay.weigh(impressions, snapshot, cfg)[0]
    io.validate(weighted, schemas.WEIGHTED, "weighted")
    assert weighted["impression_id"].tolist() == log.impressions["impression_id"].tolist()
    assert weighted["label"].tolist() == [1, 0, 1, 0, 1, 0]
    assert (weighted["clicked"] == 1).all()
    assert (weighted["carted"] == 0).all()
    assert (weighted.loc[weighted["label"] == 1, "p_flip"] == 0).all()
    weights = weighted.filter(like="weight_")
    assert len(weights.columns)
    assert np.isfinite(weights.to_numpy()).all()
