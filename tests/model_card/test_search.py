"""The model catalogue's queries on MLflow's search: versions found by snapshot, hash, param and
metric, two versions diffed, and the listing with alias, snapshot, release and matured AUC."""

from __future__ import annotations

import json

import pytest

from nextbuy.model_card import mlflow_cards, search
from nextbuy.model_card.record import MaturedRow, Snapshot, Thresholds
from nextbuy.release import registry
from tests.model_card.registered import a_card, carded, gate_tags, register


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


def test_a_diff_reads_as_a_person_would_say_it(client, name):
    """Times to the minute, an unset param as the default that applied, and the served
    thresholds, which move with every release's data even when no param does."""
    cards = []
    for snapshot, threshold, shown in (
        ("None", 0.161, "2026-02-20 08:15:42.123456789"),
        ("2026-02-27", 0.114, "2026-02-27 09:01:07.987654321"),
    ):
        version = register(client, name, gate_tags(0.7))
        card = a_card(
            name, version, client.get_model_version(name, version).run_id, "2026-02-27 00:00:00", 0.01
        )
        card = card.model_copy(
            update={
                "params": {**(card.params or {}), "ingest.snapshot": snapshot},
                "thresholds": Thresholds(served=[threshold, None]),
                "snapshot": Snapshot(
                    snapshot="2026-02-27 00:00:00",
                    first_shown_at="2026-01-01 00:00:00.5",
                    last_shown_at=shown,
                ),
            }
        )
        mlflow_cards.write(client, card, log_params=True)
        cards.append(card)
    changes = search.diff(client, name, cards[0].version, cards[1].version)
    assert ("ingest.snapshot", "null (unset: the default applied)", "2026-02-27") in changes["params"]
    assert changes["thresholds"] == [("bucket 0 (re-fitted each release)", "0.161", "0.114")]
    window = dict((k, (a, b)) for k, a, b in changes["data"])["window"]
    assert window == ("2026-01-01 00:00 → 2026-02-20 08:15", "2026-01-01 00:00 → 2026-02-27 09:01")


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


def test_a_version_whose_deploy_run_is_deleted_is_still_found_by_param_and_its_card_says_so(client, name):
    card = carded(client, name, "2026-02-10 00:00:00", 0.02)
    lineage = registry.json_text({"params": {"train": {"lr": 0.02}}})
    client.set_model_version_tag(name, card.version, registry.LINEAGE, lineage)
    assert search.by_param(client, name, "train.lr=0.02") == {card.version}
    client.delete_run(card.run_id)
    assert search.by_param(client, name, "train.lr=0.02") == {card.version}  # from its lineage tag
    shown = mlflow_cards.read(client, name, card.version)
    assert any(f"deploy run {card.run_id} is deleted" in line for line in shown.unknown)
