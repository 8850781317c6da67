"""Metrics that mature: the recent versions re-scored on the traffic whose labels matured, a
dated row per maturity on each card, a version below the floors flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, stored_files, write_bundle_files
from nextbuy.mlops import io, schemas
from nextbuy.model_card import maturity, mlflow_cards
from nextbuy.model_card.record import Card, Gate
from nextbuy.release import registry
from tests.helpers import config


def traffic(n_products: int, now: pd.Timestamp, rows: int = 6000, seed: int = 0) -> pd.DataFrame:
    """28 days of impressions before ``now``; about one in five converts within a week."""
    rng = np.random.default_rng(seed)
    shown = now - pd.to_timedelta(rng.uniform(0, 28, rows), unit="D")
    converted = pd.Series(shown + pd.to_timedelta(rng.uniform(0, 7, rows), unit="D"))
    converted[(rng.random(rows) > 0.2) | (converted > now)] = pd.NaT
    return pd.DataFrame(
        {
            "impression_id": np.arange(rows),
            "source_id": rng.integers(0, n_products, rows),
            "shown_id": rng.integers(0, n_products, rows),
            "shown_at": shown.to_numpy(),
            "clicked_at": pd.NaT,
            "carted_at": pd.NaT,
            "converted_at": converted.to_numpy(),
        }
    )


def test_recent_versions_are_rescored_on_matured_traffic_and_one_below_the_floors_is_flagged(
    client, name, tmp_path, monkeypatch
):
    import mlflow

    from nextbuy.domain import catalogue
    from nextbuy.release.publishing import log_serving_model

    files = stored_files(
        write_bundle_files(tmp_path / "bundle", n_products=60, d=8, seed=0, n_fit=2000), tmp_path / "stored"
    )
    products = pd.DataFrame(
        {
            "product_id": np.arange(60),
            "product_key": [f"p{i}" for i in range(60)],
            "category": 0,
            "price": 1.0,
        }
    )
    tags = {
        registry.COMPLETE: "true",
        registry.PASSED: "true",
        registry.CATALOGUE: catalogue.identity(products),
    }
    with mlflow.start_run():
        version = log_serving_model(
            load_bundle(files),
            name,
            files.moments,
            files.calibration,
            files.thresholds,
            files.ranking,
            tags=tags,
        )
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    run_id = client.get_model_version(name, version).run_id
    gate = Gate(passed=True, candidate={"auc": 0.7, "recall": 0.3})
    mlflow_cards.write(client, Card(model_name=name, version=version, run_id=run_id, gate=gate))  # deploy's
    now = pd.Timestamp("2026-03-29")
    io.write_table(traffic(60, now), paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    io.write_json({"now": str(now)}, paths.TRAFFIC_META)
    monitor = config("monitor", matured_days=[7, 14, 28], matured_min_conversions=20)
    strict = config("deploy", min_auc=0.99)  # random traffic: AUC about 0.5, below this floor
    files_ = (paths.TRAFFIC_IMPRESSIONS, paths.TRAFFIC_META)
    matured = maturity.mature_recent(client, name, products, files_, (monitor, strict))
    assert [m["version"] for m in matured] == [version]
    assert matured[0]["alias"] == "champion"
    days = [r["maturity_days"] for r in matured[0]["rows"]]
    assert days == [7, 14]  # 28 days of traffic: nothing has had 28 days to mature yet
    assert matured[0]["below_floor"][0].startswith("7d: auc")
    assert maturity.flags(matured)[0]["version"] == version
    mv = client.get_model_version(name, version)
    assert mv.tags[mlflow_cards.FLAG] == "below_floor"
    assert registry.json_tag(mv.tags, mlflow_cards.MATURED)["days"] == 14
    assert "FLAGGED" in mv.description
    assert "| 2026-03-29 | 7 days |" in mv.description
    card = mlflow_cards.read(client, name, version)  # deploy's card, now with its matured rows
    assert [r.maturity_days for r in card.matured] == [7, 14]
    assert [r.release_auc for r in card.matured] == [0.7, 0.7]
    assert card.gate == gate
