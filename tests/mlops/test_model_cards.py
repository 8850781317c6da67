"""Model cards in the MLflow registry: written as the version's Description, artifacts and search
tags; read back; built on demand for versions registered before cards; found by snapshot, hash,
param and metric with MLflow's search; two versions diffed; recent versions re-scored on matured
traffic, a version below the floors flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, mlflow_store, write_bundle_files
from nextbuy.domain.model_card import Card, Gate, MaturedRow, Snapshot, flat_params
from nextbuy.mlops import io, model_cards, model_maturity, model_search, registry, schemas, tracking
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


def register(
    client, name: str, tags: dict[str, str], params: dict | None = None, blessing: dict | None = None
) -> str:
    """A complete version of ``name`` whose deploy run logged ``params`` (flat) and ``blessing``."""
    from mlflow.entities import Param

    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id)
    if params:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat_params(params).items()])
    if blessing is not None:
        path = Path("blessing.json")
        path.write_text(json.dumps(blessing))
        client.log_artifact(run.info.run_id, str(path))
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
    version = register(client, name, {"candidate.auc": f"{auc:.4f}"})
    card = a_card(name, version, client.get_model_version(name, version).run_id, snapshot, lr, auc)
    model_cards.write(client, card, log_params=True)
    return card


def test_a_written_card_is_the_versions_description_artifacts_and_search_tags(client, name, tmp_path):
    card = carded(client, name, "2026-02-10 00:00:00", 0.005)
    mv = client.get_model_version(name, card.version)
    assert mv.description.startswith(f"# {name} v{card.version}")
    assert mv.tags[model_cards.SNAPSHOT] == "2026-02-10 00:00:00"
    assert mv.tags[model_cards.WEIGHTED_MD5] == "bb1ee.dir"
    readme = client.download_artifacts(mv.run_id, "model_card/README.md", str(tmp_path))
    assert Path(readme).read_text().startswith("---\nlibrary_name: nextbuy\n")
    assert client.get_run(mv.run_id).data.params["train.lr"] == "0.005"
    assert model_cards.read(client, name, card.version) == card


def test_a_version_registered_before_cards_gets_one_from_its_tags_and_blessing(client, name):
    training = {
        "snapshot": "2026-01-20 00:00:00",
        "first_shown_at": "2026-01-01",
        "last_shown_at": "2026-01-19",
    }
    blessing = {
        "passed": False,
        "reasons": ["auc 0.48 breaks the floor (>= 0.500)"],
        "candidate": {"auc": 0.48, "recall": 0.1},
        "champion": None,
        "comparison": None,
        "champion_version": None,
        "lineage": {"git_commit": "abc", "params": {"train": {"lr": 0.01}}},
    }
    tags = {
        registry.PASSED: "false",
        "lineage.git_commit": "abc",
        registry.TRAINING_DATA: json.dumps(training),
    }
    version = register(client, name, tags, blessing=blessing)
    card = model_cards.read(client, name, version)
    assert card.generated == "on demand"
    assert card.snapshot.snapshot == "2026-01-20 00:00:00"
    assert card.snapshot.weighted_md5 is None
    assert card.gate.passed is False
    assert card.gate.reasons == blessing["reasons"]
    assert card.params == {"train.lr": "0.01"}
    assert card.params_diff == []
    assert any("label maturity at training" in u for u in card.unknown)
    bare = model_cards.read(client, name, register(client, name, {}))  # no blessing, no training data
    assert bare.snapshot is None
    assert any("no blessing.json" in u for u in bare.unknown)


def test_find_by_snapshot_hash_param_and_metric_and_the_blast_radius(client, name):
    first = carded(client, name, "2026-02-10 00:00:00", 0.005, auc=0.62)
    second = carded(client, name, "2026-02-17 00:00:00", 0.01, auc=0.74)
    older = register(client, name, {registry.TRAINING_DATA: json.dumps({"snapshot": "2026-02-10 00:00:00"})})
    assert model_search.by_snapshot(client, name, "2026-02-10") == {first.version, older}
    assert model_search.by_snapshot(client, name, "2026-02-17 00:00") == {second.version}
    assert model_search.by_hash(client, name, "bb2") == {second.version}
    assert model_search.by_hash(client, name, "aa1ff.dir") == {first.version}
    assert model_search.by_param(client, name, "train.lr=0.01") == {second.version}
    assert model_search.by_param(client, name, "train.lr=1") == set()
    assert model_search.by_metric(client, name, "candidate.auc>=0.7") == {second.version}
    assert model_search.by_metric(client, name, "candidate.auc < 0.7") == {first.version}
    with pytest.raises(ValueError, match="METRIC OP VALUE"):
        model_search.by_metric(client, name, "candidate.auc about 0.7")
    changes = model_search.diff(client, name, first.version, second.version)
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
    model_cards.write(client, card.model_copy(update={"matured": [row]}))
    assert model_search.listing(client, name) == [
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

    from nextbuy.bench.serving_fixtures import stored_files
    from nextbuy.domain import catalogue
    from nextbuy.mlops.publishing import log_serving_model

    bundle = write_bundle_files(tmp_path / "bundle", n_products=60, d=8, seed=0, n_fit=2000)
    files = stored_files(bundle, tmp_path / "stored")  # what deploy logs
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
    now = pd.Timestamp("2026-03-29")
    io.write_table(traffic(60, now), paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    io.write_json({"now": str(now)}, paths.TRAFFIC_META)
    monitor = config("monitor", matured_days=[7, 14, 28], matured_min_conversions=20)
    strict = config("deploy", min_auc=0.99)  # random traffic: AUC about 0.5, below this floor
    files_ = (paths.TRAFFIC_IMPRESSIONS, paths.TRAFFIC_META)
    matured = model_maturity.mature_recent(client, name, products, files_, (monitor, strict))
    assert [m["version"] for m in matured] == [version]
    assert matured[0]["alias"] == "champion"
    days = [r["maturity_days"] for r in matured[0]["rows"]]
    assert days == [7, 14]  # 28 days of traffic: nothing has had 28 days to mature yet
    assert matured[0]["below_floor"][0].startswith("7d: auc")
    assert model_maturity.flags(matured)[0]["version"] == version
    mv = client.get_model_version(name, version)
    assert mv.tags[model_cards.FLAG] == "below_floor"
    assert mv.tags[model_cards.MATURED_DAYS] == "14"
    assert "FLAGGED" in mv.description
    assert "| 2026-03-29 | 7 days |" in mv.description
    # The card was built on demand (no deploy card) and now keeps its matured rows.
    assert [r.maturity_days for r in model_cards.read(client, name, version).matured] == [7, 14]
