"""Bad raw logs of ``nextbuy bench faults`` (``ingest.source: events``): the tiny store written
as a store's export (``STORE``: orders, impressions, interactions, catalogue, six days past the
snapshot), one log broken one way per case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from nextbuy.bench.faults.base import INPUTS, SNAPSHOT, Case, setting

STORE = INPUTS / "store"  # the valid logs every case starts from (written once per project)
LOGS = ("orders", "impressions", "interactions")
TIME = {"orders": "ordered_at", "impressions": "shown_at", "interactions": "at"}


def store_params(**changes: object) -> Callable[[dict], dict]:
    """ingest.source: events over STORE, snapshot at the tiny store's, with ``changes`` on top."""
    logs = {f"ingest__events__{name}_path": str(STORE / f"{name}.parquet") for name in LOGS}
    base = {
        "ingest__source": "events",
        "ingest__snapshot": SNAPSHOT,
        "ingest__catalogue_path": str(STORE / "catalogue.parquet"),
        **logs,
    }
    return setting(**(base | changes))


def _broken(log: str, file: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        frame = change(pd.read_parquet(root / STORE / f"{log}.parquet"))
        path = root / INPUTS / file
        frame.to_csv(path, index=False) if file.endswith(".csv") else frame.to_parquet(path, index=False)

    return write


def _case(
    name: str,
    log: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    fragments: tuple[str, ...],
    rows: bool = False,
    expect: str = "refuse",
    suffix: str = ".parquet",
) -> Case:
    file = "raw_" + name.replace(" ", "_") + suffix
    key = "ingest__catalogue_path" if log == "catalogue" else f"ingest__events__{log}_path"
    return Case(
        name,
        "input",
        "ingest",
        (file, *fragments),
        params=store_params(**{key: str(INPUTS / file)}),
        files=_broken(log, file, change),
        rows=rows,
        expect=expect,
    )


def _at_row(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.astype({column: object})
        out.loc[row, column] = value
        return out

    return change


def _one_order_each(orders: pd.DataFrame) -> pd.DataFrame:
    """Every order line a customer of its own: no one orders twice, so no co-purchase edge."""
    return orders.assign(customer=[f"c{i}" for i in range(len(orders))])


def _empty_folder(root: Path) -> None:
    (root / INPUTS / "orders_folder").mkdir()


EVENT_CASES = [
    _case(
        "orders without ordered_at",
        "orders",
        lambda f: f.drop(columns="ordered_at"),
        ("'ordered_at'", "missing"),
    ),
    _case(
        "order time unparseable",
        "orders",
        _at_row("ordered_at", 4, "last tuesday"),
        ("'ordered_at'", "last tuesday"),
        True,
        suffix=".csv",
    ),
    _case(
        "order in 2099",
        "orders",
        _at_row("ordered_at", 2, pd.Timestamp("2099-03-01")),
        ("'ordered_at'", "after now"),
        True,
    ),
    _case(
        "order in 1970",
        "orders",
        _at_row("ordered_at", 2, pd.Timestamp("1970-01-01")),
        ("'ordered_at'", "days from the rest"),
        True,
    ),
    _case(
        "quantity as text",
        "orders",
        _at_row("quantity", 6, "a few"),
        ("'quantity'", "a few"),
        True,
        suffix=".csv",
    ),
    _case(
        "order of an unlisted product",
        "orders",
        _at_row("product", 3, "gadget-x"),
        ("'product'", "gadget-x"),
        True,
    ),
    _case("impression without customer", "impressions", _at_row("customer", 5, None), ("'customer'",), True),
    _case(
        "impression ids repeated",
        "impressions",
        lambda f: f.assign(impression_id=f["impression_id"].where(f.index != 9, f["impression_id"].iloc[0])),
        ("'impression_id'",),
        True,
    ),
    _case(
        "interaction kind view",
        "interactions",
        _at_row("kind", 1, "view"),
        ("'kind'", "view"),
        True,
        suffix=".csv",
    ),
    _case("catalogue price negative", "catalogue", _at_row("price", 2, -3.0), ("'price'",), True),
    _case("orders that make no edge", "orders", _one_order_each, ("too small to train on", "0 edge(s)")),
    _case(
        "orders delivered twice",
        "orders",
        lambda f: pd.concat([f, f.iloc[:9]], ignore_index=True),
        ("dropped 9 exact duplicate row(s)",),
        expect="warn",
    ),
    _case(  # the catalogue says every product launched at the snapshot: earlier orders are counted
        "orders before launch",
        "catalogue",
        lambda f: f.assign(launched_at=pd.Timestamp(SNAPSHOT)),
        ("launched_at", "orders_before_launch"),
        expect="warn",
    ),
    _case(
        "interactions never shown",
        "interactions",
        lambda f: pd.concat([f, f.iloc[:3].assign(customer="never-shown")], ignore_index=True),
        ("dropped 3 interaction(s) of 1 customer(s) never shown",),
        expect="warn",
    ),
    _case(
        "returns among the orders",
        "orders",
        lambda f: f.assign(quantity=f["quantity"].where(f.index % 50 != 0, -1)),
        ("quantity <= 0", "orders_returns_dropped"),
        expect="warn",
    ),
    Case(
        "orders folder without parquet",
        "input",
        "ingest",
        ("orders_folder", "no .parquet file"),
        params=store_params(ingest__events__orders_path=str(INPUTS / "orders_folder")),
        files=_empty_folder,
    ),
    Case(
        "snapshot before every impression",
        "input",
        "ingest",
        ("impressions.parquet", "'shown_at'", "no impression shown by the snapshot"),
        params=store_params(ingest__snapshot="2020-01-01"),
    ),
    Case(
        "raw logs end at the snapshot",
        "input",
        "traffic",
        ("impressions.parquet", "no impression after the snapshot", "traffic.impressions_path"),
        params=store_params(ingest__snapshot=None),
    ),
]


def orders_only(**changes: object) -> Callable[[dict], dict]:
    """:func:`store_params` of a store that exports its orders only: exposures replayed from them."""
    return store_params(
        ingest__events__impressions_path=None, ingest__events__interactions_path=None, **changes
    )


def _in_milliseconds(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.assign(
        ordered_at=pd.to_datetime(orders["ordered_at"]).astype("datetime64[ms]").astype("int64")
    )


def _parts(folder: str, second: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """The orders as a folder of two parts, the second changed by ``second``."""

    def write(root: Path) -> None:
        orders = pd.read_parquet(root / STORE / "orders.parquet")
        (root / INPUTS / folder).mkdir()
        half = len(orders) // 2
        orders.iloc[:half].to_parquet(root / INPUTS / folder / "part-1.parquet", index=False)
        second(orders.iloc[half:]).to_parquet(root / INPUTS / folder / "part-2.parquet", index=False)

    return write


def _orders_only_case(
    name: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    fragments: tuple[str, ...],
    rows: bool = False,
    **changes: object,
) -> Case:
    file = "raw_" + name.replace(" ", "_") + ".parquet"
    return Case(
        name,
        "input",
        "ingest",
        (file, *fragments),
        params=orders_only(ingest__events__orders_path=str(INPUTS / file), **changes),
        files=_broken("orders", file, change),
        rows=rows,
    )


# An orders-only export as a store hands it over: what it gets wrong is refused in one line.
ORDERS_ONLY_CASES = [
    _orders_only_case(
        "orders-only times in milliseconds",
        _in_milliseconds,
        ("'ordered_at'", "look like milliseconds"),
        True,
    ),
    _orders_only_case(
        "orders-only export lacks its time column",
        lambda f: f,  # orders_columns names a column the export does not have
        ("'InvoiceDate'", "orders_columns"),
        ingest__events__orders_columns={
            "customer": "customer",
            "product": "product",
            "ordered_at": "InvoiceDate",
        },
    ),
    _orders_only_case(
        "orders-only export shorter than the graph window",
        lambda f: f,
        ("'ordered_at'", "graph_window_days"),
        ingest__events__graph_window_days=365,
    ),
    Case(
        "orders-only part with other columns",
        "input",
        "ingest",
        ("part-2.parquet", "other columns than part-1.parquet", "sku"),
        params=orders_only(ingest__events__orders_path=str(INPUTS / "orders_parts")),
        files=_parts("orders_parts", lambda f: f.rename(columns={"product": "sku"})),
    ),
]
