"""A store's raw logs read on Spark (local[2]): parquet logs split into row groups, partitioned
folders included, are cleaned, counted and coded exactly as the pandas reader does (duplicate
rows across row groups, returns, product ids in key order, customers in order of first
appearance); a bad row refuses the logs with the pandas engine's message and exit code, and the
last good outputs stay in place."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from nextbuy import paths
from nextbuy.config import IngestConfig
from nextbuy.data.sources import read_event_logs
from nextbuy.engines.spark import logs as spark_logs
from tests.conftest import TINY_PARAMS
from tests.engines.spark import parity

T0 = pd.Timestamp("2026-01-20")
ROW_GROUP_ROWS = 40  # every log of raw_frames in 4 to 8 row groups; the spoilt rows past the first


def raw_frames(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Logs over two months: text keys, returns, kinds in mixed case, a catalogue with products
    nobody names; the last rows of orders and interactions repeat earlier ones (a delivery twice)."""
    rng = np.random.default_rng(seed)

    def times(n: int) -> pd.Series:
        return pd.Series(T0 + pd.to_timedelta(rng.integers(0, 40 * 24, n), unit="h"))

    orders = pd.DataFrame(
        {
            "customer": [f"c{i}" for i in rng.integers(0, 40, 300)],
            "product": [f"sku-{i}" for i in rng.integers(0, 25, 300)],
            "ordered_at": times(300),
            "quantity": rng.choice([1, 1, 1, 2, 0, -1], 300),
        }
    )
    impressions = pd.DataFrame(
        {
            "impression_id": rng.permutation(200) + 500,
            "customer": [f"v{i}" if i % 3 else f"c{i}" for i in rng.integers(0, 60, 200)],
            "source_product": [f"sku-{i}" for i in rng.integers(0, 25, 200)],
            "shown_product": [f"sku-{i}" for i in rng.integers(0, 25, 200)],
            "shown_at": times(200),
        }
    )
    interactions = pd.DataFrame(
        {
            "customer": [f"c{i}" for i in rng.integers(0, 70, 150)],
            "product": [f"sku-{i}" for i in rng.integers(0, 25, 150)],
            "kind": rng.choice(["click", " Click", "CART "], 150),
            "at": times(150),
        }
    )
    catalogue = pd.DataFrame({"product": [f"sku-{i}" for i in range(30)], "price": np.arange(30) + 1.0})
    return {
        "orders": pd.concat([orders, orders.iloc[[3, 40, 41]]], ignore_index=True),
        "impressions": impressions,
        "interactions": pd.concat([interactions, interactions.iloc[[7]]], ignore_index=True),
        "catalogue": catalogue,
    }


def write_logs(root: Path, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """orders as a folder partitioned by month, the others one parquet file each; row groups of
    40 rows, so every log spans several (each a task on Spark)."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, frame in frames.items():
        if name == "orders":
            folder = root / name
            for month, part in frame.groupby(frame["ordered_at"].dt.strftime("%Y-%m"), sort=True):
                (folder / f"month={month}").mkdir(parents=True)
                table = arrow.Table.from_pandas(part, preserve_index=False)
                part_file = folder / f"month={month}" / "part-0.parquet"
                pq.write_table(table, part_file, row_group_size=ROW_GROUP_ROWS)
            out[name] = str(folder)
        else:
            table = arrow.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table, root / f"{name}.parquet", row_group_size=ROW_GROUP_ROWS)
            out[name] = str(root / f"{name}.parquet")
    return out


def ingest_config(files: dict[str, str], snapshot: str | None = None) -> IngestConfig:
    ingest = copy.deepcopy(TINY_PARAMS["ingest"]) | {
        "source": "events",
        "catalogue_path": files.get("catalogue"),
        "snapshot": snapshot,
    }
    ingest["events"] |= {f"{n}_path": files.get(n) for n in ("orders", "impressions", "interactions")}
    return IngestConfig.model_validate(ingest)


@pytest.mark.parametrize("given", [("interactions", "catalogue"), ()])
def test_logs_read_on_spark_are_cleaned_counted_and_coded_as_the_pandas_reader_does(
    local_spark, tmp_path, given
):
    frames = raw_frames()
    files = write_logs(
        tmp_path / "logs", {n: f for n, f in frames.items() if n in ("orders", "impressions", *given)}
    )
    cfg = ingest_config(files)
    expected = read_event_logs(
        files["orders"], files["impressions"], files.get("interactions"), files.get("catalogue"), None, 365.0
    )
    with spark_logs.folder_near(tmp_path / "data") as folder:
        got = spark_logs.read_on_spark(cfg, local_spark, folder)
        assert got is not None
        pd.testing.assert_frame_equal(got.products, expected.products, check_exact=True)
        assert got.cleaning == expected.cleaning
        assert list(got.cleaning) == list(expected.cleaning)  # the same order in metrics/ingest.json
        assert got.last_event == expected.last_event
        for name, time in (("orders", "ordered_at"), ("impressions", "shown_at"), ("interactions", "at")):
            mine = getattr(got, name).toPandas().sort_values("row").set_index("row")
            theirs = getattr(expected, name)
            theirs = theirs.assign(**{time: theirs[time].to_numpy("datetime64[ns]").view(np.int64)})
            mine = mine.rename(columns={"at": time})[list(theirs.columns)]
            assert mine.index.tolist() == theirs.index.tolist(), name  # the same rows kept, in order
            mine.index.name = theirs.index.name
            pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    assert expected.cleaning["orders_duplicate_rows_dropped"] == 3
    assert expected.cleaning["orders_returns_dropped"] > 0
    assert not list((tmp_path / "data").iterdir())  # the staged rows are gone


def test_a_csv_log_is_left_to_the_pandas_reader(local_spark, tmp_path):
    frames = raw_frames()
    files = write_logs(tmp_path / "logs", frames)
    frames["impressions"].to_csv(tmp_path / "impressions.csv", index=False)
    cfg = ingest_config(files | {"impressions": str(tmp_path / "impressions.csv")})
    assert spark_logs.read_on_spark(cfg, local_spark, tmp_path) is None


def in_project(root: Path) -> dict:
    root.mkdir(parents=True)
    os.chdir(root)
    files = write_logs(Path("inputs") / "store", raw_frames())
    params = copy.deepcopy(TINY_PARAMS)
    params["ingest"] = ingest_config(files).model_dump(mode="json")
    params["ingest"]["split"] = params["ingest"]["split"] | {"test_share": 0.2, "calib_share": 0.2}
    return params


def spoil(frame: pd.DataFrame, log: str, fault: str) -> pd.DataFrame:
    """One bad row (or pair) well inside the log: a row group other than the first refuses it."""
    frame = frame.copy()
    if fault == "unlisted":
        frame.loc[150, "product"] = "gadget-x"
    elif log == "orders":
        frame["quantity"] = frame["quantity"].astype(str)  # a text column, as a CSV export's
        frame.loc[150, "quantity"] = "two"
    elif log == "impressions":
        frame.loc[120, "impression_id"] = frame.loc[30, "impression_id"]
    else:
        frame.loc[90, "at"] = pd.Timestamp("1990-01-01")
    return frame


def spoil_in_place(params: dict, log: str, fault: str) -> Path:
    """The project's ``log`` replaced by one with a bad row; its path."""
    frames = raw_frames()
    frames[log] = spoil(frames[log], log, fault)
    write_logs(Path("bad"), {log: frames[log]})
    target = Path(params["ingest"]["events"][f"{log}_path"])
    (target.rename(Path("old")) if target.is_dir() else target.unlink())
    Path("bad", Path(target).name).rename(target)
    return target


@pytest.mark.parametrize(
    ("log", "fault"), [("orders", "unlisted"), ("impressions", "row"), ("interactions", "row")]
)
def test_a_bad_row_refuses_the_logs_with_the_pandas_engines_message(local_spark, tmp_path, log, fault):
    from nextbuy.config import EngineConfig
    from nextbuy.mlops import io
    from nextbuy.stages import ingest

    before = Path.cwd()
    try:
        params = in_project(tmp_path / "store")
        target = spoil_in_place(params, log, fault)
        cfg = IngestConfig.model_validate(params["ingest"])
        messages = {}
        for kind in ("pandas", "spark"):
            engine = EngineConfig.model_validate({"kind": kind, "spark": local_spark.model_dump()})
            with pytest.raises(io.DataError) as refused:
                ingest.ingest(cfg, engine)
            messages[kind] = str(refused.value)
        assert messages["spark"] == messages["pandas"]
        assert target.name in messages["spark"]
        assert "first offending rows" in messages["spark"]
        assert not [p for p in Path("data").iterdir() if p.name.startswith(".spark")]
    finally:
        os.chdir(before)


def test_the_stage_writes_what_pandas_writes_and_a_bad_row_then_exits_as_on_pandas(
    local_spark, tmp_path, monkeypatch
):
    """``nextbuy ingest`` on the logs: on Spark (the reader on Spark too) the pandas engine's
    tables and metrics; then, with a bad row in the orders, both engines exit alike and the last
    good outputs stay."""
    from nextbuy.cli import app

    on_spark = parity.record_spark_reads(monkeypatch)
    tables = (paths.PRODUCTS, paths.EDGES, paths.IMPRESSIONS)
    before = Path.cwd()
    try:
        params = in_project(tmp_path / "store")
        good = {}
        for kind in ("pandas", "spark"):
            parity.set_engine(params, kind, local_spark)
            result = CliRunner().invoke(app, ["ingest"])
            assert result.exit_code == 0, result.output
            metrics = yaml.safe_load(Path(paths.metrics_file("ingest")).read_text())
            good[kind] = {p: pd.read_parquet(p) for p in tables}, metrics
        assert on_spark == [True]  # the stage's reader ran on Spark, not left to pandas
        for p in tables:
            pd.testing.assert_frame_equal(good["spark"][0][p], good["pandas"][0][p], check_exact=True)
        assert good["spark"][1] == good["pandas"][1]
        assert not [p for p in Path("data").iterdir() if p.name.startswith(".spark")]  # parts removed
        written = {p: Path(p).read_bytes() for p in tables}
        target = spoil_in_place(params, "orders", "row")
        answers = {}
        for kind in ("pandas", "spark"):
            parity.set_engine(params, kind, local_spark)
            answers[kind] = CliRunner().invoke(app, ["ingest"])
        assert answers["pandas"].exit_code != 0
        assert answers["spark"].exit_code == answers["pandas"].exit_code
        assert answers["spark"].output == answers["pandas"].output
        assert target.name in answers["spark"].output
        assert "first offending rows" in answers["spark"].output
        assert {p: Path(p).read_bytes() for p in written} == written  # the last good outputs stay
        assert not [p for p in Path("data").iterdir() if p.name.startswith(".spark")]
    finally:
        os.chdir(before)


def test_an_orders_only_export_ingests_on_spark_as_on_pandas(local_spark, tmp_path, monkeypatch):
    """Online Retail's slice as it comes: read by the pandas reader (its own columns and
    cleaning), co-purchases and the replayed exposures' attribution built on Spark, every
    table equal to the pandas engine's."""
    from nextbuy.config import EngineConfig, merge
    from nextbuy.presets import read_preset
    from nextbuy.stages import ingest
    from tests.conftest import ROOT as root

    monkeypatch.chdir(tmp_path)
    events = read_preset(root / "presets" / "online-retail.yaml")["ingest"]["events"]
    events |= {"orders_path": str(root / "tests" / "data" / "online_retail_slice.parquet")}
    params = merge(TINY_PARAMS["ingest"], {"source": "events", "snapshot": "2011-09-01", "events": events})
    cfg = IngestConfig.model_validate(params)
    on_pandas = ingest.ingest(cfg)
    on_spark = ingest.ingest(
        cfg, EngineConfig.model_validate({"kind": "spark", "spark": local_spark.model_dump()})
    )
    pd.testing.assert_frame_equal(on_spark.products, on_pandas.products)
    pd.testing.assert_frame_equal(on_spark.edges, on_pandas.edges)
    pd.testing.assert_frame_equal(on_spark.impressions, on_pandas.impressions)
    pd.testing.assert_frame_equal(on_spark.replay_policy, on_pandas.replay_policy)
    assert on_spark.cleaning == on_pandas.cleaning
