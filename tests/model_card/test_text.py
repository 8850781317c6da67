"""Model cards, pure: what a card computes (label maturity, calibration per bucket, cold sources,
DVC's folder hash, metrics once labels matured) and how it reads (Hugging Face front matter,
Markdown body, a description that fits MLflow's column)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy.model_card import facts
from nextbuy.model_card.record import (
    Card,
    Gate,
    MaturedRow,
    Snapshot,
    TopKOrder,
    add_matured,
    flagged,
    flat_params,
    latest_matured,
    param_text,
    params_diff,
)
from nextbuy.model_card.text import DESCRIPTION_LIMIT, description, render


def a_card(**changes) -> Card:
    fields = {
        "model_name": "nextbuy-tiny",
        "version": "2",
        "snapshot": Snapshot(
            snapshot="2026-02-10 00:00:00", rows={"train": 700, "test": 200}, weighted_md5="ab12.dir"
        ),
        "params_against": "1",
        "params_diff": params_diff({"train.lr": "0.005"}, {"train.lr": "0.01"}),
        "label_maturity": 0.25,
        "gate": Gate(
            passed=True,
            candidate={"auc": 0.71, "recall": 0.3, "precision": 0.2, "ece": 0.02, "rows": 200.0},
            champion={"auc": 0.7, "recall": 0.31, "precision": 0.2, "ece": 0.03, "rows": 200.0},
            champion_version="1",
            comparison={"auc": {"diff": 0.01, "lo": -0.01, "hi": 0.03}},
            confidence=0.95,
            floors={"min_auc": 0.5, "min_recall": 0.05},
        ),
    }
    return Card(**{**fields, **changes})


def matured(day: str, days: int, auc: float, below: list[str] | None = None) -> MaturedRow:
    return MaturedRow(
        checked_at=day,
        maturity_days=days,
        rows=1000,
        conversions=40,
        auc=auc,
        recall=0.3,
        release_auc=0.71,
        release_recall=0.3,
        below_floor=below or [],
    )


def test_params_flatten_to_dotted_text_that_a_search_matches():
    flat = flat_params(
        {"train": {"lr": 0.005, "weighting": "importance", "id_embeddings": True}, "x": [1, 2]}
    )
    assert flat == {
        "train.lr": "0.005",
        "train.weighting": "importance",
        "train.id_embeddings": "true",
        "x": "[1, 2]",
    }
    assert param_text(yaml.safe_load("0.005")) == flat["train.lr"]  # `models find --param train.lr=0.005`
    assert param_text(None) == "null"


def test_params_diff_lists_changed_added_and_removed_keys():
    diff = params_diff({"a": "1", "b": "2", "gone": "x"}, {"a": "1", "b": "3", "new": "y"})
    assert [(c.key, c.before, c.after) for c in diff] == [
        ("b", "2", "3"),
        ("gone", "x", None),
        ("new", None, "y"),
    ]


def test_the_card_file_has_hugging_face_front_matter_and_every_section():
    text = render(a_card(matured=[matured("2026-03-10 00:00:00", 7, 0.66)]))
    head, body = text.split("---\n", 2)[1:]
    meta = yaml.safe_load(head)
    assert meta["library_name"] == "nextbuy"
    assert meta["datasets"] == ["nextbuy-tiny@2026-02-10 00:00:00"]
    release, later = meta["model-index"][0]["results"]
    assert release["dataset"] == {
        "type": "nextbuy-snapshot",
        "name": "nextbuy-tiny@2026-02-10 00:00:00",
        "split": "test",
        "revision": "ab12.dir",
    }
    assert {"type": "auc", "value": 0.71, "name": "auc (release, delay-corrected labels)"} in release[
        "metrics"
    ]
    assert later["dataset"]["split"] == "matured 7d"
    assert [m["value"] for m in later["metrics"] if m["type"] == "auc"] == [0.66]
    for section in ("## Data", "## Code and params", "## Release gate", "## Calibration and thresholds"):
        assert section in body
    assert "25.0% of the training impressions' eventual conversions were still unseen" in body
    assert "| `train.lr` | 0.005 | 0.01 |" in body
    assert "+0.010 [-0.010, +0.030]" in body  # the gate's CI against champion v1


def test_what_is_not_known_reads_unknown_with_the_reason():
    card = Card(model_name="m", version="1", unknown=["label maturity at training: not recorded"])
    body = description(card)
    assert "Label maturity at training**: unknown" in body
    assert "## Not known\n\n- label maturity at training: not recorded" in body


def test_matured_rows_append_and_a_recheck_of_the_same_day_replaces_its_rows():
    card = add_matured(a_card(), [matured("2026-03-10 00:00:00", 7, 0.66)])
    card = add_matured(
        card, [matured("2026-03-10 00:00:00", 7, 0.64), matured("2026-03-10 00:00:00", 14, 0.65)]
    )
    card = add_matured(card, [matured("2026-03-17 00:00:00", 7, 0.45, ["auc 0.450 < 0.500"])])
    assert [(r.checked_at[:10], r.maturity_days, r.auc) for r in card.matured] == [
        ("2026-03-10", 7, 0.64),
        ("2026-03-10", 14, 0.65),
        ("2026-03-17", 7, 0.45),
    ]
    assert latest_matured(card).auc == 0.45
    assert flagged(card) == ["7d: auc 0.450 < 0.500"]
    assert description(card).startswith("# nextbuy-tiny v2\n\n> **FLAGGED**")


def test_the_description_fits_mlflows_column_by_leaving_out_the_oldest_matured_rows():
    rows = [matured(str(pd.Timestamp("2026-03-01") + pd.Timedelta(days=i)), 7, 0.6) for i in range(120)]
    card = a_card(matured=rows)
    text = description(card)
    assert len(text) <= DESCRIPTION_LIMIT < len(render(card))
    assert "older rows are in the artifact model_card/README.md" in text
    assert rows[-1].checked_at[:10] in text
    assert rows[0].checked_at[:10] not in text


def test_label_maturity_is_the_expected_unseen_share_of_eventual_conversions():
    label = np.array([1, 1, 0, 0, 0])
    p_flip = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    assert facts.label_maturity(label, p_flip) == pytest.approx(2.0 / 4.0)
    assert facts.label_maturity(np.zeros(3), np.zeros(3)) is None


def test_dvc_folder_hash_is_what_dvc_computes(tmp_path):
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    files = {"a.parquet": b"abc", "sub/b.json": b"{}"}
    tree = Tree()
    for rel, data in files.items():
        tree.add(tuple(rel.split("/")), None, HashInfo("md5", hashlib.md5(data).hexdigest()))
    tree.digest()
    ours = facts.dvc_dir_md5([(rel, hashlib.md5(d).hexdigest()) for rel, d in files.items()])
    assert ours == tree.hash_info.value


def test_ece_per_bucket_and_none_for_an_empty_bucket():
    prob = np.array([0.1, 0.1, 0.9, 0.9])
    label = np.array([0.0, 0.0, 0.0, 0.0])
    ece = facts.ece_by_bucket(prob, label, np.array([0, 0, 1, 1]), 3)
    assert ece["0"] == pytest.approx(0.1)
    assert ece["1"] == pytest.approx(0.9)
    assert ece["2"] is None


def test_cold_sources_are_those_with_few_out_edges_and_unknown_ids():
    degree = facts.out_degree(np.array([0, 0, 0, 1]), 3)  # product 0: 3 out-edges, 1: 1, 2: 0
    assert degree.tolist() == [3, 1, 0]
    source = np.array([0, 0, 1, 2, 7])  # 7: not in the graph
    predictions = pd.DataFrame({"score": [0.9, 0.1, 0.8, 0.2, 0.7], "decision": [1, 0, 1, 0, 0]})
    low = facts.low_degree_quality(source, degree, predictions, np.array([1.0, 0, 1, 0, 1]), 1)
    assert (low.rows, low.sources) == (3, 3)
    assert low.recall == pytest.approx(0.5)
    assert low.auc == pytest.approx(1.0)


def test_matured_metrics_use_only_traffic_old_enough_labelled_within_the_maturity():
    now = pd.Timestamp("2026-03-29")
    shown = pd.to_datetime(
        ["2026-03-01", "2026-03-01", "2026-03-10", "2026-03-10", "2026-03-25", "2026-03-01"]
    )
    converted = pd.to_datetime(["2026-03-03", "2026-03-20", "2026-03-12", None, "2026-03-26", None])
    traffic = pd.DataFrame({"shown_at": shown, "converted_at": converted})
    predictions = pd.DataFrame({"score": [0.9, 0.6, 0.8, 0.1, 0.7, 0.2], "decision": [1, 0, 1, 0, 1, 0]})
    floors = {"min_auc": 0.5, "min_recall": 0.9}
    rows = facts.matured_rows(traffic, predictions, now, [7, 14, 28], 1, {"auc": 0.7}, floors)
    by_days = {r.maturity_days: r for r in rows}
    # 7 days: rows shown by 03-22 (5 of them); converted within 7 days: rows 0 and 2.
    assert (by_days[7].rows, by_days[7].conversions) == (5, 2)
    assert by_days[7].recall == pytest.approx(1.0)
    assert by_days[7].below_floor == []
    # 14 days: shown by 03-15; row 1 (converted after 19 days) is still a negative.
    assert (by_days[14].rows, by_days[14].conversions) == (5, 2)
    # 28 days: shown by 03-01; now row 1's conversion counts, and the decision missed it.
    assert (by_days[28].rows, by_days[28].conversions) == (3, 2)
    assert by_days[28].recall == pytest.approx(0.5)
    assert by_days[28].below_floor == ["recall 0.500 < 0.900"]
    assert by_days[28].release_auc == 0.7
    too_few = facts.matured_rows(traffic, predictions, now, [28], 3, {}, floors)
    assert too_few == []  # fewer matured conversions than asked: no row yet
    # Per row, what the Spark engine sums: the same counts.
    columns = facts.maturity_columns(traffic, predictions, now, [7, 28])
    assert columns[["rows0", "conversions0", "rows1", "conversions1"]].sum().tolist() == [5, 2, 3, 2]
    assert columns["hits1"].sum() == 1  # recall 0.5 of 2


def test_a_card_of_replayed_exposures_says_so_and_what_its_figures_measure():
    snapshot = Snapshot(snapshot="2011-09-01 00:00:00", rows={"train": 700}, exposures="replayed")
    body = render(a_card(snapshot=snapshot))
    assert "| exposures | replayed |" in body
    assert "**Replayed exposures**" in body
    assert "not the effect of showing" in body
    logged = render(a_card(snapshot=Snapshot(snapshot="2026-02-10 00:00:00", exposures="logged")))
    assert "**Replayed exposures**" not in logged


def test_the_card_says_which_top_k_order_is_served_and_why():
    order = TopKOrder(
        served="popularity",
        reason="popularity ranked the held-out purchases better than the model",
        judged_on="next purchases of the calibration split's sessions",
        k=20,
        hits={"model": 0.05, "popularity": 0.08},
    )
    body = render(a_card(top_k_order=order))
    assert "## Top-K order" in body
    assert "Served: **popularity**: popularity ranked the held-out purchases better" in body
    assert "| popularity | 0.0800 |" in body
    assert "decision are the model's" in body
    assert "Top-K order: unknown" in render(a_card())  # a version from before the choice
    smoothed = order.model_copy(
        update={"served": "co_purchase", "prior": 30.0, "prior_hits": {"0": 0.06, "30": 0.07}}
    )
    smoothed_body = render(a_card(top_k_order=smoothed))
    assert "the prior served: 30 pseudo-counts" in smoothed_body
    assert "| 30 | 0.0700 |" in smoothed_body
