"""deploy gate: floors, non-inferiority against the champion, readable reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain import gate
from tests.helpers import config


def predictions(score: np.ndarray, threshold: float = 0.6) -> pd.DataFrame:
    return pd.DataFrame({"score": score, "prob_calibrated": score, "decision": score >= threshold})


def data(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    label = (rng.uniform(size=n) < p).astype(float)
    return p, label


def test_figures_on_soft_labels_match_hard_ones_when_labels_are_hard():
    p, label = data()
    fig = gate.figures(predictions(p), label)
    accepted = p >= 0.6
    assert np.isclose(fig["recall"], label[accepted].sum() / label.sum())
    assert np.isclose(fig["precision"], label[accepted].mean())
    assert 0.7 < fig["auc"] < 0.9 and fig["ece"] < 0.05


def test_identical_models_pass_and_a_shuffled_model_is_refused():
    p, label = data()
    cfg = config("deploy", min_recall=0.1, tolerance=0.02, bootstrap_samples=100)
    good = predictions(p)
    same = gate.paired_bootstrap(label, good, good, ("auc", "recall"), 100, 0.95, 0)
    assert all(ci["lo"] == ci["hi"] == 0.0 for ci in same.values())
    fig = gate.figures(good, label)
    assert gate.decide(fig, fig, same, cfg) == (True, [])

    shuffled = predictions(np.random.default_rng(1).permutation(p))
    worse = gate.figures(shuffled, label)
    comparison = gate.paired_bootstrap(label, shuffled, good, ("auc", "recall"), 100, 0.95, 0)
    assert comparison["auc"]["hi"] < -0.2
    passed, reasons = gate.decide(worse, fig, comparison, cfg)
    assert not passed
    assert any(r.startswith("auc") and "champion" in r for r in reasons)


def test_first_deployment_is_judged_on_floors_alone():
    p, label = data()
    fig = gate.figures(predictions(p), label)
    assert gate.decide(fig, None, {}, config("deploy", min_recall=0.1))[0]
    passed, reasons = gate.decide(
        fig, None, {}, config("deploy", min_recall=0.99, max_calibration_error=0.001)
    )
    assert not passed and len(reasons) == 2
    assert "recall" in reasons[0] and "ece" in reasons[1]


def test_slightly_worse_within_tolerance_passes():
    p, label = data(6000)
    rng = np.random.default_rng(3)
    noisy = np.clip(p + rng.normal(0, 0.02, p.size), 0, 1)
    good, near = predictions(p), predictions(noisy)
    comparison = gate.paired_bootstrap(label, near, good, ("auc", "recall"), 100, 0.95, 0)
    cfg = config("deploy", tolerance=0.03)
    assert gate.decide(gate.figures(near, label), gate.figures(good, label), comparison, cfg)[0]
