"""What a card computes, pure: label maturity, calibration per bucket, cold sources, DVC's folder
hash, and a version's metrics once its traffic's labels matured."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from nextbuy.model_card import facts


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
