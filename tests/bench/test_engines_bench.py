"""bench engines: its stores hold what ingest and traffic write (valid tables) and the same
history as raw logs that ingest reads, a stage's run in its child process reports what it
handled, its sizes are read from the command line or refused naming the entry, and its
exponents and sizing follow the runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nextbuy import paths
from nextbuy.bench import engines, engines_data
from nextbuy.config import IngestConfig, load_section, read_params
from nextbuy.mlops import io, schemas
from nextbuy.stages import ingest

REPO = Path(__file__).resolve().parents[2]


def _logs(root: Path, n: int) -> dict:
    written = engines_data.write_logs(root, n)
    params = engines_data.logs_params(read_params(REPO / "params.yaml"))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return written


def test_a_store_holds_valid_tables_of_the_asked_size(tmp_path):
    sizes = engines_data.write_store(tmp_path, 20_000)
    impressions = io.read_table(tmp_path / paths.IMPRESSIONS, schemas.IMPRESSIONS)
    traffic = io.read_table(tmp_path / paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    edges = io.read_table(tmp_path / paths.EDGES, schemas.EDGES)
    assert len(impressions) == len(traffic) == 20_000
    assert len(io.read_table(tmp_path / paths.PRODUCTS, schemas.PRODUCTS)) == sizes["products"]
    assert len(edges) <= sizes["edges"]
    assert set(impressions["split"]) == {"train", "calib", "test"}
    assert impressions["converted_at"].notna().any()


def test_a_stores_raw_logs_ingest_into_the_stores_sizes(tmp_path, monkeypatch):
    written = _logs(tmp_path, 30_000)
    monkeypatch.chdir(tmp_path)
    got = ingest.ingest_events(load_section(IngestConfig))
    n = engines_data.sizes(30_000)
    assert written["impressions"] == len(got.impressions) == 30_000
    assert len(got.products) == written["catalogue"] == n["products"]
    # one edge per co-purchase, less the pairs drawn twice, plus those customers' conversions make
    assert 0.8 * n["edges"] < len(got.edges) < 1.2 * n["edges"]
    assert set(got.impressions["split"]) == {"train", "calib", "test"}
    converted = got.impressions["converted_at"].notna().mean()
    assert 0.02 < converted < 0.06
    assert got.cleaning["customers"] <= written["customers_at_most"]
    assert got.snapshot == engines_data.SNAPSHOT


def test_a_measured_ingest_reports_the_impressions_it_wrote(tmp_path):
    _logs(tmp_path / engines_data.LOGS, 20_000)
    cmd = [sys.executable, "-m", "nextbuy.bench.engines_core", str(tmp_path), "pandas", "ingest"]
    got = engines.measured(cmd, 16 * engines.GIB, tmp_path / "ingest.log")
    assert got["rows"] == 20_000, got
    assert got["stage_s"] > 0
    ingested = io.read_table(tmp_path / engines_data.LOGS / paths.IMPRESSIONS, schemas.IMPRESSIONS)
    assert len(ingested) == 20_000


def test_sizes_are_read_or_refused_naming_the_entry():
    assert engines.parse_sizes("1e6, 10000000") == [1_000_000, 10_000_000]
    with pytest.raises(ValueError, match="'ten'"):
        engines.parse_sizes("1e6,ten")


def test_exponents_and_sizing_follow_the_runs():
    n = [10**6, 10**7]
    runs = [
        {
            "impressions": k,
            "engine": "spark",
            "stage": stage,
            "stage_s": 2.0 * k / 1e6,
            "peak_tree_gib": 3.0,
            "peak_process_gib": 2.0,
        }
        for k in n
        for stage in engines.STAGES
    ]
    fits = engines.exponents(runs)
    assert fits["spark.label_delay"]["time"] == pytest.approx(1.0)
    assert fits["spark.label_delay"]["peak_tree_memory"] == pytest.approx(0.0)
    sizing = engines.sizing(runs, cores=2)
    assert sizing["measured_at_impressions"] == 10**7
    assert sizing["stages"] == ["ingest", "label_delay", "monitor"]
    per_hour = 10**7 / (3 * 20.0 * 2) * 3600
    assert sizing["impressions_per_executor_hour"] == round(per_hour)
    assert sizing["executors_for_1e9_a_day_in_1_hour"] == int(np.ceil(1e9 / per_hour))
