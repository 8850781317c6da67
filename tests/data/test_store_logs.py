"""The simulated store written as raw logs and read back by ingest (source: events) gives the
graph and the labels the simulator knows: exactly, when attribution reaches as far as the logs;
with a shorter attribution window the only difference is the conversions it leaves out."""

from __future__ import annotations

import pandas as pd
import pytest

from nextbuy.config import IngestConfig, SimulatorConfig
from nextbuy.data import store_logs
from nextbuy.data.simulator import simulate_store
from nextbuy.stages import ingest

COLUMNS = ["impression_id", "source_id", "shown_id", "shown_at", "clicked_at", "carted_at", "converted_at"]


@pytest.fixture(scope="module")
def tiny():
    from tests.conftest import TINY_PARAMS

    params = TINY_PARAMS["ingest"]
    cfg = SimulatorConfig.model_validate(params["simulator"])
    world, traffic = simulate_store(cfg, params["seed"])
    # the logs go on 6 days past the snapshot, as a store's export would
    logs = store_logs.simulated_logs(cfg, params["seed"], world.snapshot + pd.Timedelta(days=6))
    return params, world, traffic, logs


def ingested(tmp_path, params, logs, form="parquet", **events):
    written = store_logs.write_logs(logs, tmp_path / "store", form)
    catalogue = written.pop("catalogue")
    paths = {f"{name}_path": path for name, path in written.items()}
    cfg = IngestConfig.model_validate(
        params
        | {
            "source": "events",
            "catalogue_path": catalogue,
            "snapshot": "2026-02-10",  # the simulated store's own snapshot (start + 40 days)
            "events": params["events"] | paths | events,
        }
    )
    return ingest.ingest(cfg)


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[COLUMNS].sort_values("impression_id").reset_index(drop=True)


def in_world_ids(result, world):
    """The ingested tables with their products numbered as the simulator numbers them: ingest
    numbers a store's products in order of appearance, the simulator by key; a product is its
    key in both."""
    world_id = world.products.set_index("product_key")["product_id"]
    to_world = world_id.reindex(result.products["product_key"]).to_numpy()
    products = result.products.assign(product_id=to_world).sort_values("product_id", ignore_index=True)
    edges = result.edges.assign(src=to_world[result.edges["src"]], dst=to_world[result.edges["dst"]])
    impressions = result.impressions.assign(
        source_id=to_world[result.impressions["source_id"]], shown_id=to_world[result.impressions["shown_id"]]
    )
    return products, edges.sort_values(["src", "dst"], ignore_index=True), impressions


@pytest.mark.parametrize("form", ["parquet", "csv", "partitioned"])
def test_graph_and_labels_from_the_written_logs_are_the_simulators(tmp_path, tiny, form):
    params, world, traffic, logs = tiny
    assert world.snapshot == pd.Timestamp("2026-02-10")
    result = ingested(tmp_path, params, logs, form, attribution_days=60)
    products, edges, impressions = in_world_ids(result, world)
    pd.testing.assert_frame_equal(products, world.products)
    pd.testing.assert_frame_equal(edges, world.edges.sort_values(["src", "dst"], ignore_index=True))
    pd.testing.assert_frame_equal(by_id(impressions), by_id(traffic.impressions))
    assert result.cleaning["impressions_after_snapshot_dropped"] > 0  # the 6 days after it


def test_a_shorter_attribution_window_leaves_out_exactly_the_later_conversions(tmp_path, tiny):
    params, world, traffic, logs = tiny
    result = by_id(in_world_ids(ingested(tmp_path, params, logs, attribution_days=10), world)[2])
    expected = by_id(traffic.impressions)
    later = expected["converted_at"] - expected["shown_at"] > pd.Timedelta(days=10)
    assert later.sum() > 10  # the simulated delays are heavy-tailed: some convert after 10 days
    expected.loc[later, "converted_at"] = pd.NaT
    pd.testing.assert_frame_equal(result, expected)
