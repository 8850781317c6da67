"""bench engines: its stores hold what ingest and traffic write (valid tables), its sizes are read
from the command line or refused naming the entry, and its exponents and sizing follow the runs."""

from __future__ import annotations

import numpy as np
import pytest

from nextbuy import paths
from nextbuy.bench import engines, engines_data
from nextbuy.mlops import io, schemas


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
    per_hour = 10**7 / (2 * 20.0 * 2) * 3600
    assert sizing["impressions_per_executor_hour"] == round(per_hour)
    assert sizing["executors_for_1e9_a_day_in_1_hour"] == int(np.ceil(1e9 / per_hour))
