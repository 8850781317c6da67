"""Model cards in MLflow's store: written as the version's Description, artifacts and search
tags; read back; a version without the card deploy writes refused in one line; found by
snapshot, hash, param and metric with MLflow's search; two versions diffed; recent versions
re-scored on matured traffic, a version below the floors flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, mlflow_store, write_bundle_files
from nextbuy.mlops import io, registry, schemas, tracking
from nextbuy.model_card import maturity, mlflow_cards, search
from nextbuy.model_card.record import Card, Gate, MaturedRow, Snapshot, flat_params
from tests.helpers import config


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """One MLflow store for the module (creating one takes seconds); the cwd is its project dir."""
    import os

    from mlflow.tracking import MlflowClient

    root, before = tmp_path_factory.mktemp("cards"), Path.cwd()
    os.chdir(root)
    try:
        with mlflow_store(new_mlflow_store(root / "mlflow.db")):
            tracking.configure(root)
            yield MlflowClient()
    finally:
        os.chdir(before)


@pytest.fixture
def client(store):
    return store


@pytest.fixture
def name(request) -> str:
    """A registered model of this test's own in the module's store (its versions start at 1)."""
    return f"m-{request.node.name[5:45]}"


def register(client, name: str, tags: dict[str, str]) -> str:
    """A complete version of ``name`` with ``tags``, its run holding no card (:func:`carded` writes one)."""
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id)
    base = {registry.COMPLETE: "true", registry.PASSED: "true"}
    return str(
        client.create_model_version(name, "file:///m", run_id=run.info.run_id, tags={**base, **tags}).version
    )


def a_card(name: str, version: str, run_id: str, snapshot: str, lr: float, auc: float = 0.7) -> Card:
    return Card(
        model_name=name,
        version=version,
        run_id=run_id,
        snapshot=Snapshot(
            snapshot=snapshot, ingested_md5=f"aa{version}ff.dir", weighted_md5=f"bb{version}ee.dir"
        ),
        params=flat_params({"train": {"lr": lr}}),
        gate=Gate(passed=True, candidate={"auc": auc, "recall": 0.3}),
    )


def carded(client, name: str, snapshot: str, lr: float, auc: float = 0.7) -> Card:
    """A complete version whose card is written as deploy writes it (with the run's params)."""
    version = register(client, name, {"candidate.auc": f"{auc:.4f}"})
    card = a_card(name, version, client.get_model_version(name, version).run_id, snapshot, lr, auc)
    mlflow_cards.write(client, card, log_params=True)
    return card


def test_a_written_card_is_the_versions_description_artifacts_and_search_tags(client, name, tmp_path):
    card = carded(client, name, "2026-02-10 00:00:00", 0.005)
    mv = client.get_model_version(name, card.version)
    assert mv.description.startswith(f"# {name} v{card.version}")
    assert mv.tags[mlflow_cards.SNAPSHOT] == "2026-02-10 00:00:00"
    assert mv.tags[mlflow_cards.WEIGHTED_MD5] == "bb1ee.dir"
    readme = client.download_artifacts(mv.run_id, "model_card/README.md", str(tmp_path))
    assert Path(readme).read_text().startswith("---\nlibrary_name: nextbuy\n")
    assert client.get_run(mv.run_id).data.params["train.lr"] == "0.005"
    assert mlflow_cards.read(client, name, card.version) == card


def test_a_version_without_the_card_deploy_writes_is_refused_in_one_line_saying_how_to_register_it(
    client, name
):
    version = register(client, name, {registry.TRAINING_DATA: '{"snapshot": "2026-01-20 00:00:00"}'})
    with pytest.raises(MlflowException) as refused:
        mlflow_cards.read(client, name, version)
    assert refused.value.message == (
        f"{name} v{version} has no model card (model_card/card.json in its run, which deploy writes): "
        "register the model again by running its deploy stage (`nextbuy deploy`)"
    )


def test_find_by_snapshot_hash_param_and_metric_and_the_blast_radius(client, name):
    first = carded(client, name, "2026-02-10 00:00:00", 0.005, auc=0.62)
    second = carded(client, name, "2026-02-17 00:00:00", 0.01, auc=0.74)
    older = register(client, name, {registry.TRAINING_DATA: json.dumps({"snapshot": "2026-02-10 00:00:00"})})
    assert search.by_snapshot(client, name, "2026-02-10") == {first.version, older}
    assert search.by_snapshot(client, name, "2026-02-17 00:00") == {second.version}
    assert search.by_hash(client, name, "bb2") == {second.version}
    assert search.by_hash(client, name, "aa1ff.dir") == {first.version}
    assert search.by_param(client, name, "train.lr=0.01") == {second.version}
    assert search.by_param(client, name, "train.lr=1") == set()
    assert search.by_metric(client, name, "candidate.auc>=0.7") == {second.version}
    assert search.by_metric(client, name, "candidate.auc < 0.7") == {first.version}
    with pytest.raises(ValueError, match="METRIC OP VALUE"):
        search.by_metric(client, name, "candidate.auc about 0.7")
    changes = search.diff(client, name, first.version, second.version)
    assert changes["params"] == [("train.lr", "0.005", "0.01")]
    assert ("snapshot", "2026-02-10 00:00:00", "2026-02-17 00:00:00") in changes["data"]
    assert ("candidate.auc", "0.6200", "0.7400") in changes["metrics"]


def test_the_listing_shows_alias_snapshot_release_and_matured_auc_and_flags(client, name):
    card = carded(client, name, "2026-02-10 00:00:00", 0.005)
    client.set_registered_model_alias(name, registry.CHAMPION, card.version)
    row = MaturedRow(
        checked_at="2026-03-10 00:00:00", maturity_days=14, rows=900, conversions=30, auc=0.45, recall=0.2,
        release_auc=0.7, release_recall=0.3, below_floor=["auc 0.450 < 0.500"],
    )  # fmt: skip
    mlflow_cards.write(client, card.model_copy(update={"matured": [row]}))
    assert search.listing(client, name) == [
        {
            "version": card.version,
            "alias": "champion",
            "snapshot": "2026-02-10 00:00:00",
            "release_auc": "0.7000",
            "matured_auc": "0.4500 @14d",
            "status": "passed, FLAGGED",
        }
    ]


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
    from nextbuy.mlops.publishing import log_serving_model

    files = write_bundle_files(tmp_path / "bundle", n_products=60, d=8, seed=0, n_fit=2000)
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
            load_bundle(files), name, files.moments, files.calibration, files.thresholds, tags=tags
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
    assert mv.tags[mlflow_cards.MATURED_DAYS] == "14"
    assert "FLAGGED" in mv.description
    assert "| 2026-03-29 | 7 days |" in mv.description
    card = mlflow_cards.read(client, name, version)  # deploy's card, now with its matured rows
    assert [r.maturity_days for r in card.matured] == [7, 14]
    assert [r.release_auc for r in card.matured] == [0.7, 0.7]
    assert card.gate == gate
