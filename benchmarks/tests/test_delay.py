"""`nextbuy bench delay` on the tiny simulated store: the JSON a user scripts against, the
oracle's labels, the post-snapshot test traffic and the relative-improvement arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy.config import IngestConfig, section_config
from nextbuy.stages import ingest
from nextbuy_lab import delay
from tests.conftest import TINY_PARAMS

SEEDS = 2


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-delay")
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(TINY_PARAMS))
    out = folder / "bench-delay.json"
    returned = delay.run(out, seeds=SEEDS, params_file=str(params_file))
    return json.loads(out.read_text()), returned, out


def test_json_maps_every_method_to_its_metrics(bench_run):
    figures, returned, _ = bench_run
    assert figures == json.loads(json.dumps(returned))
    for key in delay.KEYS:
        row = figures[key]
        assert set(row) == {*delay.METRICS, "std", "seeds"}, key
        assert row["seeds"] == SEEDS
        assert set(row["std"]) == set(delay.METRICS)
        assert 0.0 <= row["auc"] <= 1.0
        assert row["nll"] > 0
        assert 0.0 <= row["ece"] <= 1.0
    methods = [k for k in delay.KEYS if k != "oracle"]
    assert set(figures["ri_auc"]) == set(figures["ri_nll"]) == set(methods)
    assert figures["ri_auc"]["naive"] == 0.0
    assert figures["ri_nll"]["naive"] == 0.0
    assert figures["gap_auc_std"] >= 0.0
    data = figures["data"]
    assert data["train_positives_eventual"] >= data["train_positives_observed"] > 0
    assert data["test_impressions"] == delay.TEST_IMPRESSIONS
    # The delay model's flip estimate beside the truth, per engagement x elapsed bin.
    flips = pd.DataFrame(figures["flip_by_engagement"])
    assert {"engagement", "elapsed_bin", "estimated_flip", "true_flip", "count"} <= set(flips.columns)
    assert flips["count"].sum() == data["train_impressions"] - data["train_positives_observed"]
    # Each delay model judged on the flips themselves.
    scores = figures["flip_scores"]
    assert set(scores) == set(delay.FLIP_ESTIMATES)
    for by_scope in scores.values():
        everyone, carted = by_scope["negatives"], by_scope["carted_negatives"]
        assert everyone["count"] == flips["count"].sum() >= carted["count"]
        assert everyone["flips"] == data["train_positives_eventual"] - data["train_positives_observed"]
        assert everyone["nll"] > 0
        assert everyone["estimated_flips"] > 0


def test_the_flip_plot_beside_the_json_draws_the_estimate_against_the_truth(bench_run):
    figures, _, out = bench_run
    plot = pd.read_csv(delay.flip_plot_path(out))
    assert delay.flip_plot_path(out).name == "bench-delay.flip.csv"
    assert list(plot.columns) == ["engagement", "elapsed_days", "flip", "count"]
    flips = pd.DataFrame(figures["flip_by_engagement"])
    for level in flips["engagement"].unique():
        one = flips[flips["engagement"] == level].sort_values("elapsed_days")
        for estimate, column in (("estimated", "estimated_flip"), ("true", "true_flip")):
            line = plot[plot["engagement"] == f"{level}: {estimate}"]
            np.testing.assert_allclose(line["flip"], one[column])
            np.testing.assert_allclose(line["elapsed_days"], one["elapsed_days"])
    assert len(plot) == 2 * len(flips)


def test_flip_scores_prefer_the_estimate_that_knows_who_flips():
    flipped = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    carted = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    sharp = np.where(flipped == 1, 0.8, 0.1)
    weighted = pd.DataFrame(
        {
            "split": ["train"] * 9 + ["calib"],
            "label": [0] * 8 + [1, 0],  # an observed positive and a calibration row: not scored
            "carted": [*carted, 1, 1],
            "target_importance": [*sharp, 1.0, 0.5],
            "target_importance_no_engagement": [*np.full(8, 0.4), 1.0, 0.5],
            "target_importance_no_features": [*np.where(carted == 1, 0.6, 0.05), 1.0, 0.5],
        }
    )
    eventual = pd.Series([*flipped, 1])
    scores = delay.flip_scores(weighted, eventual)
    nll = {m: scores[m]["negatives"]["nll"] for m in delay.FLIP_ESTIMATES}
    assert nll["importance"] < nll["importance_no_features"] < nll["importance_no_engagement"]
    assert scores["importance"]["negatives"]["auc"] == 1.0
    assert scores["importance_no_engagement"]["negatives"]["auc"] == 0.5
    assert scores["importance"]["carted_negatives"] | {"nll": None} == {
        "nll": None,
        "auc": 1.0,
        "estimated_flips": pytest.approx(0.8 * 3 + 0.1),
        "flips": 3,
        "count": 4,
    }


def test_ri_is_the_share_of_the_naive_to_oracle_gap():
    per_seed = [
        {k: {"auc": 0.6, "nll": 0.3, "pr_auc": 0.1, "ece": 0.01} for k in delay.KEYS} for _ in range(3)
    ]
    for i, row in enumerate(per_seed):
        row["oracle"] = {"auc": 0.70 + 0.01 * i, "nll": 0.20, "pr_auc": 0.1, "ece": 0.01}
        row["importance"] = {"auc": 0.65 + 0.01 * i, "nll": 0.25, "pr_auc": 0.1, "ece": 0.01}
    figures = delay._aggregate(per_seed)
    assert figures["ri_auc"]["importance"] == pytest.approx(0.06 / 0.11)  # from the seed means
    assert figures["ri_nll"]["importance"] == pytest.approx(0.5)
    assert figures["gap_auc"] == pytest.approx(0.11)
    assert figures["gap_auc_std"] == pytest.approx(0.01)
    gap = figures["paired_vs_importance"]["auc"]["naive"]
    assert gap["mean"] == pytest.approx(0.06)
    assert gap["ci95"][0] < 0.06 < gap["ci95"][1]


def test_oracle_rows_carry_eventual_labels_and_nothing_else_changes():
    data = ingest.ingest(section_config(TINY_PARAMS, IngestConfig))
    weighted = data.impressions[["impression_id", "source_id", "shown_id"]].assign(
        label=data.impressions["converted_at"].notna().astype(np.int8)
    )
    oracle = delay.oracle_rows(weighted, data.truth_impressions)
    truth = data.truth_impressions.set_index("impression_id").loc[weighted["impression_id"], "label_eventual"]
    np.testing.assert_array_equal(oracle["label"].to_numpy(), truth.to_numpy())
    np.testing.assert_array_equal(oracle["target_naive"].to_numpy(), truth.to_numpy())  # what naive trains on
    assert (oracle["label"] >= weighted["label"]).all()
    assert (oracle["label"] > weighted["label"]).any()
    pd.testing.assert_frame_equal(
        oracle.drop(columns=["label", "target_naive"]), weighted.drop(columns="label")
    )
    with pytest.raises(ValueError, match="no ground truth"):
        delay.oracle_rows(
            weighted.assign(impression_id=weighted["impression_id"] + 10**9), data.truth_impressions
        )


def test_test_traffic_comes_after_the_snapshot_with_eventual_labels():
    cfg = section_config(TINY_PARAMS, IngestConfig)
    data = ingest.ingest(cfg)
    test = delay.future_traffic(data, cfg)
    assert len(test) == delay.TEST_IMPRESSIONS
    assert test["impression_id"].is_unique
    assert not set(test["impression_id"]) & set(data.impressions["impression_id"])
    assert set(test["label_eventual"].unique()) == {0, 1}


def test_a_method_subset_keeps_what_every_comparison_needs():
    assert delay.selected(None) == delay.KEYS
    assert delay.selected(("importance_ipw",)) == ("naive", "importance", "importance_ipw", "oracle")
    with pytest.raises(ValueError, match="no_such"):
        delay.selected(("no_such",))


def test_sweep_regimes_are_chosen_by_name_in_their_declared_order():
    assert delay.sweep_regimes(None) == tuple(delay.REGIMES)
    assert delay.sweep_regimes(("no_launches", "short_delay")) == ("short_delay", "no_launches")
    with pytest.raises(ValueError, match="no_such"):
        delay.sweep_regimes(("no_such",))


def test_a_sweep_without_the_default_store_holds_the_chosen_regimes_alone(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(delay, "regime", lambda params, seeds, keys: ran.append(params) or {"data": {}})
    monkeypatch.setattr(delay, "_print", lambda *args: None)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(TINY_PARAMS))
    out = tmp_path / "sweep.json"
    figures = delay.run(
        out, seeds=1, sweep=True, params_file=str(params_file), regimes=("short_delay",), default_store=False
    )
    assert set(figures) == {"sweep", "seconds"}
    assert set(figures["sweep"]) == {"short_delay"}
    assert [p["ingest"]["simulator"]["delay_median_hours"] for p in ran] == [
        delay.REGIMES["short_delay"]["ingest"]["simulator"]["delay_median_hours"]
    ]
    assert json.loads(out.read_text())["sweep"] == {"short_delay": {"data": {}}}
