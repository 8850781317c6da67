"""A store that exports orders only, through the stage commands: Online Retail's slice as it
comes (its own columns, guest lines, cancellations), exposures replayed up to the snapshot, the
months after it handed to the monitor, and the figures saying the exposures were replayed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from nextbuy import paths
from nextbuy.cli import app
from nextbuy.config import merge
from nextbuy.mlops import io, schemas
from nextbuy.presets import read_preset

SLICE = Path(__file__).parents[1] / "data" / "online_retail_slice.parquet"
ROOT = Path(__file__).parents[2]


def test_an_orders_only_export_is_ingested_with_replayed_exposures_and_its_later_months_monitored(
    tmp_path, monkeypatch, tiny_params
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inputs").mkdir()
    shutil.copy(SLICE, tmp_path / "inputs" / "online_retail.parquet")
    events = read_preset(ROOT / "presets" / "online-retail.yaml")["ingest"]["events"]
    events |= {"orders_path": "inputs/online_retail.parquet"}
    ingest = {"source": "events", "snapshot": "2011-09-01", "events": events}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(tiny_params, {"ingest": ingest})))

    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(paths.metrics_file("ingest").read_text())
    assert metrics["exposures"] == "replayed"
    assert "not the effect of showing" in metrics["exposures_note"]
    cleaning = metrics["cleaning"]
    assert cleaning["orders_cancellations_dropped"] > 0
    assert cleaning["orders_missing_customer_dropped"] > 0
    impressions = io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)
    assert impressions["shown_at"].max() <= pd.Timestamp("2011-09-01")
    assert 0 < impressions["converted_at"].notna().mean() < 0.5
    policy = io.read_table(paths.REPLAY_POLICY, schemas.REPLAY_POLICY)
    assert set(policy["impression_id"]) == set(impressions["impression_id"])
    assert json.loads(paths.INGEST_META.read_text())["exposures"] == "replayed"

    result = CliRunner().invoke(app, ["traffic"])
    assert result.exit_code == 0, result.output
    traffic = io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    assert traffic["shown_at"].min() > pd.Timestamp("2011-09-01")
    assert traffic["shown_at"].max() > pd.Timestamp("2011-11-15")  # the run-up to December
    assert not set(traffic["impression_id"]) & set(impressions["impression_id"])
