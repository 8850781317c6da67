"""A store's raw logs as files: parquet, partitioned folders and CSV read alike; what the field
cleans is counted; everything else is refused naming the file, the column and the rows."""

from __future__ import annotations

import pandas as pd
import pytest

from nextbuy.data.sources import read_event_logs, read_log
from nextbuy.mlops.io import DataError

T0 = pd.Timestamp("2026-03-01")


def write(tmp_path, name: str, frame: pd.DataFrame, suffix: str = ".csv") -> str:
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def store(tmp_path, **changes: pd.DataFrame) -> dict[str, str | None]:
    frames = {
        "orders": pd.DataFrame(
            {
                "customer": ["ann", "ann", "bob", "bob"],
                "product": ["sku-1", "sku-2", "sku-1", "sku-3"],
                "ordered_at": [T0, T0 + pd.Timedelta(days=1), T0, T0 + pd.Timedelta(days=2)],
                "quantity": [1, 2, 1, 1],
            }
        ),
        "impressions": pd.DataFrame(
            {
                "impression_id": [10, 11],
                "customer": ["cyd", "ann"],
                "source_product": ["sku-1", "sku-1"],
                "shown_product": ["sku-2", "sku-3"],
                "shown_at": ["2026-03-01 10:00", "2026-03-01 11:00"],
            }
        ),
        "interactions": pd.DataFrame(
            {"customer": ["cyd"], "product": ["sku-2"], "kind": [" Click"], "at": ["2026-03-01 10:05"]}
        ),
    } | changes
    paths = {name: write(tmp_path, name, frame) for name, frame in frames.items()}
    return {
        "orders_path": paths["orders"],
        "impressions_path": paths["impressions"],
        "interactions_path": paths["interactions"],
        "catalogue_path": paths.get("catalogue"),
    }


def read(paths, snapshot=None, max_gap_days=365.0):
    return read_event_logs(**paths, snapshot=snapshot, max_gap_days=max_gap_days)


def test_logs_are_coded_with_products_in_order_of_appearance_and_customers_across_logs(tmp_path):
    logs = read(store(tmp_path))
    assert logs.products["product_key"].tolist() == ["sku-1", "sku-2", "sku-3"]
    assert logs.impressions["shown_id"].tolist() == [1, 2]
    # ann orders and sees an impression: one customer in both logs
    ann = logs.orders["customer"].iloc[0]
    assert logs.impressions["customer"].iloc[1] == ann
    assert logs.interactions["kind"].tolist() == ["click"]  # " Click" is a click
    assert logs.last_event == T0 + pd.Timedelta(days=2)
    assert logs.cleaning["customers"] == 3


def test_a_partitioned_parquet_folder_reads_as_one_log(tmp_path):
    frame = pd.DataFrame({"customer": ["a", "b", "c"], "ordered_at": [T0, T0, T0 + pd.Timedelta(days=40)]})
    frame.assign(month=frame["ordered_at"].dt.strftime("%Y-%m")).to_parquet(
        tmp_path / "orders", partition_cols=["month"]
    )
    read_back = read_log(tmp_path / "orders")
    assert sorted(read_back["customer"]) == ["a", "b", "c"]
    assert read_back["month"].dtype == object  # a partition value is plain text, as in a file
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.parquet file"):
        read_log(tmp_path / "empty")


def test_duplicate_rows_and_returns_are_cleaned_and_counted(tmp_path):
    orders = pd.DataFrame(
        {
            "customer": ["ann", "ann", "ann", "bob", "bob"],
            "product": ["sku-1", "sku-1", "sku-2", "sku-1", "sku-3"],
            "ordered_at": [T0, T0, T0 + pd.Timedelta(days=1), T0, T0 + pd.Timedelta(days=2)],
            "quantity": [1, 1, -1, 1, 0],
        }
    )
    logs = read(store(tmp_path, orders=orders))
    assert logs.cleaning["orders_duplicate_rows_dropped"] == 1
    assert logs.cleaning["orders_returns_dropped"] == 2
    assert len(logs.orders) == 2


def test_a_catalogue_adds_products_nobody_ordered_and_codes_text_categories(tmp_path):
    catalogue = pd.DataFrame(
        {
            "product": ["sku-1", "sku-2", "sku-3", "sku-9", "sku-late"],
            "category": ["shoes", "socks", "shoes", None, "hats"],
            "price": [50.0, 5.0, 60.0, None, 20.0],
            "launched_at": [None, None, None, "2026-01-01", "2026-06-01"],
        }
    )
    logs = read(store(tmp_path, catalogue=catalogue))
    products = logs.products.set_index("product_key")
    # sku-9 was never ordered nor shown: a product all the same, numbered at its launch (before
    # the logs begin); sku-late launches after the snapshot (the logs' end) and nothing names
    # it: not a product yet
    assert products.index.tolist() == ["sku-9", "sku-1", "sku-2", "sku-3"]
    assert products["category"].tolist() == [-1, 1, 2, 1]  # hats=0, shoes=1, socks=2
    assert products.loc["sku-2", "price"] == 5.0
    assert logs.cleaning["catalogue_launched_after_snapshot_dropped"] == 1


def refused(paths, column: str, *words: str) -> str:
    with pytest.raises(DataError) as info:
        read(paths)
    assert info.value.column == column
    for word in words:
        assert word in info.value.message
    return info.value.message


def test_a_product_the_catalogue_does_not_list_is_refused_with_its_rows(tmp_path):
    catalogue = pd.DataFrame({"product": ["sku-1", "sku-2"]})
    message = refused(store(tmp_path, catalogue=catalogue), "product", "orders.csv", "sku-3")
    assert "first offending rows" in message


@pytest.mark.parametrize(
    ("log", "change", "column", "words"),
    [
        ("interactions", {"kind": ["view"]}, "kind", ("interactions.csv", "view", "isin")),
        ("impressions", {"shown_at": ["2026-03-01 10:00", "soon"]}, "shown_at", ("unparseable", "soon")),
        ("impressions", {"shown_at": ["2026-03-01 10:00", "2099-01-01"]}, "shown_at", ("after now", "2099")),
        ("impressions", {"customer": ["cyd", None]}, "customer", ("missing values",)),
        ("impressions", {"impression_id": [10, 10]}, "impression_id", ("share an impression_id",)),
        ("orders", {"quantity": [1, "two", 1, 1]}, "quantity", ("not a number", "two")),
    ],
)
def test_bad_rows_are_refused_naming_file_column_and_rows(tmp_path, log, change, column, words):
    paths = store(tmp_path)
    frame = pd.read_csv(paths[f"{log}_path"]).assign(**change)
    frame.to_csv(paths[f"{log}_path"], index=False)
    refused(paths, column, f"{log}.csv", *words)


def test_a_log_without_a_required_column_is_refused_naming_it(tmp_path):
    paths = store(tmp_path)
    pd.read_csv(paths["orders_path"]).drop(columns="ordered_at").to_csv(paths["orders_path"], index=False)
    refused(paths, "ordered_at", "orders.csv", "missing column")


def test_parquet_and_csv_logs_read_the_same(tmp_path):
    csv = read(store(tmp_path))
    pq = tmp_path / "pq"
    pq.mkdir()
    paths = store(pq)
    for key in ("orders_path", "impressions_path", "interactions_path"):
        frame = pd.read_csv(paths[key])
        paths[key] = write(pq, key, frame, ".parquet")
    parquet = read(paths)
    pd.testing.assert_frame_equal(csv.orders, parquet.orders)
    pd.testing.assert_frame_equal(csv.impressions, parquet.impressions)


def test_an_order_years_away_from_the_rest_of_the_log_is_refused_with_its_row(tmp_path):
    orders = pd.DataFrame(
        {
            "customer": ["ann", "ann", "bob"],
            "product": ["sku-1", "sku-2", "sku-1"],
            "ordered_at": ["2026-02-01 09:00", "2026-02-03 09:00", "1970-01-01 00:00"],
        }
    )
    paths = store(tmp_path, orders=orders)
    with pytest.raises(DataError, match=r"1 row\(s\) lie more than 365 days from the rest") as err:
        read(paths)
    assert err.value.column == "ordered_at"
    assert "1970-01-01" in str(err.value)
    assert len(read(paths, max_gap_days=365 * 60).orders) == 3  # a wider gap allowed: read


def test_a_partition_with_other_columns_is_refused_naming_it(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    frame = pd.DataFrame({"customer": ["a", "b"], "product": ["x", "y"], "ordered_at": [T0, T0]})
    frame.to_parquet(folder / "2026-01.parquet")
    frame.rename(columns={"product": "sku"}).to_parquet(folder / "2026-02.parquet")
    with pytest.raises(
        DataError, match=r"2026-02\.parquet.*other columns than 2026-01\.parquet.*has sku.*lacks product"
    ):
        read_log(folder)


def test_an_id_written_as_a_number_in_one_part_and_as_text_in_another_is_one_key(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    pd.DataFrame({"customer": [17850.0, None], "product": [22423, 85123], "ordered_at": [T0, T0]}).to_parquet(
        folder / "2026-01.parquet"
    )
    pd.DataFrame(
        {"customer": ["17850", "12"], "product": ["22423", "85123A"], "ordered_at": [T0, T0]}
    ).to_parquet(folder / "2026-02.parquet")
    read_back = read_log(folder)
    assert read_back["customer"].tolist() == ["17850", None, "17850", "12"]
    assert read_back["product"].tolist() == ["22423", "85123", "22423", "85123A"]
