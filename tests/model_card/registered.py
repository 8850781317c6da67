"""Versions registered in the tests' MLflow store: complete ones, with or without the card deploy
writes."""

from __future__ import annotations

from nextbuy.mlops import tracking
from nextbuy.model_card import mlflow_cards
from nextbuy.model_card.record import Card, Gate, Snapshot, flat_params
from nextbuy.release import registry


def register(client, name: str, tags: dict[str, str]) -> str:
    """A complete version of ``name`` with ``tags``, its run holding no card (:func:`carded` writes one)."""
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id)
    base = {registry.COMPLETE: "true", registry.PASSED: "true"}
    return str(
        client.create_model_version(name, "file:///m", run_id=run.info.run_id, tags={**base, **tags}).version
    )


def gate_tags(auc: float) -> dict[str, str]:
    """The gate's record tag of a candidate whose AUC was ``auc`` (as publishing writes it)."""
    return {registry.GATE: registry.json_text({"candidate": {"auc": auc}})}


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
    version = register(client, name, gate_tags(auc))
    card = a_card(name, version, client.get_model_version(name, version).run_id, snapshot, lr, auc)
    mlflow_cards.write(client, card, log_params=True)
    return card
