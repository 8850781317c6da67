"""`nextbuy bench model` on the tiny simulated store (presets/tiny.yaml over params.yaml): the JSON
a user scripts against, the truth merge of the test rows, category_lr's held-out choice of C and
the paired AUC gaps."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy.config import IngestConfig, LabelDelayConfig, section_config
from nextbuy.stages import ingest, label_delay
from nextbuy_lab import model
from tests.conftest import TINY_PARAMS

SEEDS = 2
SIMULATOR = section_config(TINY_PARAMS, IngestConfig).simulator
EXTRA = {"paired_auc_gap_vs_blade", "test_impressions", "seconds"}


@pytest.fixture(scope="module")
def tiny_store():
    data = ingest.ingest(section_config(TINY_PARAMS, IngestConfig))
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, section_config(TINY_PARAMS, LabelDelayConfig)
    )
    return data, weighted


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-model")
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(TINY_PARAMS))
    out = folder / "bench-model.json"
    returned = model.run(out, seeds=SEEDS, params_file=str(params_file))
    return json.loads(out.read_text()), returned


def test_json_maps_every_method_to_its_metrics(bench_run):
    figures, returned = bench_run
    assert set(figures) == {*model.KEYS, *EXTRA}
    for key in model.KEYS:
        row = figures[key]
        assert set(row) == {*model.METRICS, "std", "seeds"}, key
        assert set(row["std"]) == set(model.METRICS), key
        assert row["seeds"] == SEEDS
        assert 0.0 <= row["auc"] <= 1.0, (key, row)
        assert 0.0 <= row["pr_auc"] <= 1.0, (key, row)
        assert row["nll"] > 0.0, (key, row)
        assert math.isfinite(row["nll"]), (key, row)
        assert all(v >= 0.0 for v in row["std"].values()), (key, row)
    assert json.loads(json.dumps(returned)) == figures


def test_extra_keys(bench_run, tiny_store):
    figures, _ = bench_run
    _data, weighted = tiny_store
    assert figures["test_impressions"] == int((weighted["split"] == "test").sum()) > 0
    assert figures["seconds"] >= 0.0
    gaps = figures["paired_auc_gap_vs_blade"]
    assert set(gaps) == set(model.KEYS) - {"blade"}
    for key, gap in gaps.items():
        assert np.isclose(gap["mean"], figures["blade"]["auc"] - figures[key]["auc"]), key
        low, high = gap["ci95"]
        assert low <= gap["mean"] <= high, key


def test_oracle_is_the_ceiling(bench_run):
    figures, _ = bench_run
    oracle = figures["oracle"]
    assert oracle["auc"] > 0.6  # the simulator's own probabilities (0.80 on the tiny store)
    assert oracle["std"] == {m: 0.0 for m in model.METRICS}  # the truth does not depend on the seed
    assert oracle["auc"] > figures["category_lr"]["auc"]
    assert oracle["nll"] < figures["category_lr"]["nll"]


def test_oracle_without_pair_noise(bench_run):
    figures, _ = bench_run
    smooth = figures["oracle_no_pair_noise"]
    assert smooth["std"] == {m: 0.0 for m in model.METRICS}
    # the noise is a fixed draw per pair: leaving it out costs the truth some AUC, but the rest
    # (products' latent vectors and popularity) still ranks far above chance
    assert 0.6 < smooth["auc"] < figures["oracle"]["auc"]


def test_oracle_with_pair_history(bench_run):
    figures, _ = bench_run
    memory = figures["oracle_pair_history"]
    assert memory["std"] == {m: 0.0 for m in model.METRICS}
    # a pair's few impressions can only nudge the smooth truth (its noise has sd 0.3)
    assert abs(memory["auc"] - figures["oracle_no_pair_noise"]["auc"]) < 0.02


def past(pairs: list[tuple[int, int, int, int]]) -> tuple:
    """(source, shown) pairs with n impressions of which k converted, as past rows."""
    src = np.concatenate([[u] * n for u, _, n, _ in pairs]).astype(np.int64)
    dst = np.concatenate([[v] * n for _, v, n, _ in pairs]).astype(np.int64)
    label = np.concatenate([[1.0] * k + [0.0] * (n - k) for _, _, n, k in pairs])
    return (src, dst), label


def test_pair_posterior_without_history_is_the_prior_mean():
    (src, dst), label = past([(0, 1, 5, 1)])
    smooth = np.array([-2.0, -1.0, 0.0])
    prob = model.pair_posterior_probability(
        smooth, (np.array([7, 7, 7]), np.array([8, 9, 10])), (src, dst), label, 0.3
    )
    # E[sigmoid(x + b)], b ~ N(0, 0.3²), by Monte Carlo
    b = np.random.default_rng(0).normal(0.0, 0.3, 400_000)
    expected = [np.mean(1 / (1 + np.exp(-(x + b)))) for x in smooth]
    np.testing.assert_allclose(prob, expected, atol=1e-3)


def test_pair_posterior_follows_the_pair_own_history():
    # three pairs with the same smooth logit: never shown, shown 40 times with 0 and with 12 conversions
    (src, dst), label = past([(0, 1, 40, 0), (0, 2, 40, 12)])
    prob = model.pair_posterior_probability(
        np.full(3, -1.5),
        (np.array([0, 0, 0]), np.array([3, 1, 2])),
        (src, dst),
        label,
        0.3,
    )
    never, cold, hot = prob
    assert cold < never < hot
    # the noise is bounded by its prior: 12/40 = 0.30 pulls 0.18 up, not all the way
    assert 0.19 < hot < 0.30


def test_pair_posterior_with_no_noise_is_the_smooth_probability():
    (src, dst), label = past([(0, 1, 40, 30)])
    prob = model.pair_posterior_probability(
        np.array([0.5]), (np.array([0]), np.array([1])), (src, dst), label, 0.0
    )
    np.testing.assert_allclose(prob, [1 / (1 + np.exp(-0.5))])


def test_test_rows_carry_the_truth_one_to_one(tiny_store):
    data, weighted = tiny_store
    assert "label_eventual" not in weighted
    assert "p_convert" not in weighted
    rows = model.scored_test_rows(data, weighted, SIMULATOR)
    test = weighted[weighted["split"] == "test"]
    assert len(rows) == len(test)
    assert rows["impression_id"].is_unique
    assert set(rows["impression_id"]) == set(test["impression_id"])
    assert rows["label_eventual"].notna().all()
    assert set(rows["label_eventual"].unique()) <= {0, 1}
    assert rows["p_convert"].between(0.0, 1.0, inclusive="neither").all()
    assert rows["p_no_pair_noise"].between(0.0, 1.0, inclusive="neither").all()
    assert not np.allclose(rows["p_no_pair_noise"], rows["p_convert"])
    assert rows["p_pair_history"].between(0.0, 1.0, inclusive="neither").all()
    # an observed conversion is an eventual one
    assert (rows.loc[rows["label"] == 1, "label_eventual"] == 1).all()


def test_test_rows_refuse_duplicated_truth(tiny_store):
    data, weighted = tiny_store
    truth = data.truth_impressions
    doubled = type("Data", (), {"truth_impressions": pd.concat([truth, truth.iloc[:1]])})()
    with pytest.raises(pd.errors.MergeError):
        model.scored_test_rows(doubled, weighted, SIMULATOR)


# -- category_lr ----------------------------------------------------------------


def category_rows(n: int, seed: int, flip: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Products in 4 categories (one unknown, -1); a pair converts with probability 0.8 when the shown
    category follows the source's, 0.05 otherwise (reversed with ``flip``)."""
    rng = np.random.default_rng(seed)
    products = pd.DataFrame({"category": np.r_[np.arange(40) % 4, -1]})
    src, dst = rng.integers(0, len(products), n), rng.integers(0, len(products), n)
    cat = products["category"].to_numpy()
    follows = (cat[src] >= 0) & ((cat[src] + 1) % 4 == cat[dst])
    p = np.where(follows != flip, 0.8, 0.05)
    label = (rng.random(n) < p).astype(int)
    return products, pd.DataFrame({"source_id": src, "shown_id": dst, "label": label})


def log_loss(label: np.ndarray, prob: np.ndarray) -> float:
    prob = np.clip(prob, 1e-6, 1 - 1e-6)
    return float(-np.mean(label * np.log(prob) + (1 - label) * np.log(1 - prob)))


def ones(rows: pd.DataFrame) -> np.ndarray:
    return np.ones(len(rows))


def test_category_lr_learns_category_pairs():
    products, fit = category_rows(3000, 0)
    _, held = category_rows(500, 1)
    _, test = category_rows(2000, 2)
    prob = model.category_lr(products, fit, held, test, ones, seed=0)
    label = test["label"].to_numpy()
    assert prob.shape == (len(test),)
    assert ((prob > 0) & (prob < 1)).all()
    constant = np.full(len(test), fit["label"].mean())
    assert log_loss(label, prob) < log_loss(label, constant) - 0.1
    assert model.scores_of(label, prob)["auc"] > 0.8


def test_category_lr_picks_c_on_the_held_out_rows(monkeypatch):
    """With C = 1e-6 the model is (nearly) constant, with C = 10 it fits the pairs: the held-out log
    loss decides, so held-out rows that contradict the training rows make it pick the constant."""
    monkeypatch.setattr(model, "LR_C", (1e-6, 10.0))
    products, fit = category_rows(3000, 0)
    _, test = category_rows(2000, 2)
    _, agreeing = category_rows(500, 1)
    _, contradicting = category_rows(500, 1, flip=True)
    sharp = model.category_lr(products, fit, agreeing, test, ones, seed=0)
    flat = model.category_lr(products, fit, contradicting, test, ones, seed=0)
    assert sharp.std() > 0.2
    assert flat.std() < 0.01


def test_category_lr_uses_the_weights():
    """Zero weight on every converting training row: the model cannot predict a conversion."""
    products, fit = category_rows(3000, 0)
    _, held = category_rows(500, 1)
    _, test = category_rows(2000, 2)

    def no_positives(rows: pd.DataFrame) -> np.ndarray:
        return np.where(rows["label"].to_numpy() == 1, 1e-6, 1.0)

    prob = model.category_lr(products, fit, held, test, no_positives, seed=0)
    assert prob.max() < 0.1


# -- paired gaps ------------------------------------------------------------------


def per_seed(aucs: dict[str, list[float]]) -> list[dict[str, dict]]:
    n = len(next(iter(aucs.values())))
    return [{key: {"auc": values[i]} for key, values in aucs.items()} for i in range(n)]


def test_paired_gaps_mean_and_ci():
    aucs = {
        "blade": [0.70, 0.72, 0.74],
        "blade_fixed": [0.69, 0.70, 0.71],
        "dual_mf": [0.60, 0.61, 0.65],
        "category_lr": [0.70, 0.72, 0.74],
        "oracle": [0.80, 0.80, 0.80],
        "oracle_no_pair_noise": [0.79, 0.79, 0.79],
        "oracle_pair_history": [0.795, 0.795, 0.795],
    }
    gaps = model.paired_gaps(per_seed(aucs))
    assert set(gaps) == set(model.KEYS) - {"blade"}
    expected = {"blade_fixed": 0.02, "dual_mf": 0.1, "category_lr": 0.0, "oracle": -0.08,
                "oracle_no_pair_noise": -0.07, "oracle_pair_history": -0.075}  # fmt: skip
    for key, mean in expected.items():
        assert gaps[key]["mean"] == pytest.approx(mean), key
        low, high = gaps[key]["ci95"]
        assert low <= gaps[key]["mean"] <= high, key
        assert high - gaps[key]["mean"] == pytest.approx(gaps[key]["mean"] - low)
    assert gaps["category_lr"]["ci95"] == pytest.approx([0.0, 0.0])  # identical every seed
    # blade_fixed's gaps 0.01, 0.02, 0.03: sd 0.01, t(0.975, 2 df) = 4.303
    half = 4.302652729911275 * 0.01 / np.sqrt(3)
    assert gaps["blade_fixed"]["ci95"] == pytest.approx([0.02 - half, 0.02 + half])
    # another base
    assert model.paired_gaps(per_seed(aucs), base="oracle")["blade"]["mean"] == pytest.approx(0.08)


def test_paired_gaps_with_one_seed_have_no_ci():
    gaps = model.paired_gaps(per_seed({key: [0.6] for key in model.KEYS}))
    for gap in gaps.values():
        assert gap["mean"] == 0.0
        assert all(math.isnan(x) for x in gap["ci95"])
