"""The release gate: soft-label figures, paired bootstrap, floors, non-inferiority, readable reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain import catalogue
from nextbuy.release import gate
from tests.helpers import config


def predictions(score: np.ndarray, threshold: float = 0.6) -> pd.DataFrame:
    return pd.DataFrame({"score": score, "prob_calibrated": score, "decision": score >= threshold})


def data(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    label = (rng.uniform(size=n) < p).astype(float)
    return p, label


# --- figures ----------------------------------------------------------------


def test_figures_on_soft_labels_match_hard_ones_when_labels_are_hard():
    p, label = data()
    fig = gate.figures(predictions(p), label)
    accepted = p >= 0.6
    assert np.isclose(fig["recall"], label[accepted].sum() / label.sum())
    assert np.isclose(fig["precision"], label[accepted].mean())
    assert 0.7 < fig["auc"] < 0.9
    assert fig["ece"] < 0.05


def test_figures_without_positives_or_acceptances():
    p = np.array([0.1, 0.2, 0.3])
    fig = gate.figures(predictions(p), np.zeros(3))
    assert fig["recall"] is None
    assert fig["auc"] is None
    assert fig["rows"] == 3.0
    assert gate.figures(predictions(p, threshold=0.9), np.array([0.0, 1.0, 1.0]))["precision"] == 0.0


# --- paired bootstrap ---------------------------------------------------------


def test_paired_bootstrap_is_seeded_and_computes_only_the_asked_metrics():
    p, label = data(400)
    other = predictions(np.random.default_rng(4).permutation(p))
    a = gate.paired_bootstrap(label, predictions(p), other, ("recall",), 50, 0.9, seed=7)
    assert set(a) == {"recall"}
    assert a == gate.paired_bootstrap(label, predictions(p), other, ("recall",), 50, 0.9, seed=7)
    assert a["recall"]["lo"] <= a["recall"]["diff"] <= a["recall"]["hi"]


# --- decide -------------------------------------------------------------------


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
    assert not passed
    assert len(reasons) == 2
    assert "recall" in reasons[0]
    assert "ece" in reasons[1]


def test_a_missing_figure_breaks_its_floor_and_reads_n_a():
    fig = {"recall": None, "precision": 1.0, "auc": 0.9, "ece": 0.0}
    passed, reasons = gate.decide(fig, None, {}, config("deploy", min_recall=0.0))
    assert not passed
    assert reasons == ["recall n/a breaks the floor (>= 0.000)"]


def test_slightly_worse_within_tolerance_passes():
    p, label = data(6000)
    rng = np.random.default_rng(3)
    noisy = np.clip(p + rng.normal(0, 0.02, p.size), 0, 1)
    good, near = predictions(p), predictions(noisy)
    comparison = gate.paired_bootstrap(label, near, good, ("auc", "recall"), 100, 0.95, 0)
    cfg = config("deploy", tolerance=0.03)
    assert gate.decide(gate.figures(near, label), gate.figures(good, label), comparison, cfg)[0]


# --- champion comparability ---------------------------------------------------


def store(n: int) -> pd.DataFrame:
    """A products table of n products."""
    ids = np.arange(n, dtype=np.int64)
    return pd.DataFrame(
        {"product_id": ids, "product_key": ids.astype(str), "category": ids % 5, "price": 1.0}
    )


SMALL, LARGE = store(5000), store(100_000).assign(category=lambda t: t["category"] + 1)


def test_a_champion_of_the_candidates_catalogue_is_comparable():
    assert gate.champion_incomparable("3", catalogue.identity(SMALL), SMALL) is None
    assert gate.champion_comparable(True, None) is True


def test_no_champion_is_neither_comparable_nor_not():
    assert gate.champion_incomparable(None, None, LARGE) is None
    assert gate.champion_comparable(False, None) is None


def test_a_champion_of_another_catalogue_is_not_comparable_and_the_reason_names_both():
    why = gate.champion_incomparable("1", catalogue.identity(SMALL), LARGE)
    assert why.startswith("champion v1 is not comparable")
    assert "5,000 products" in why
    assert "100,000 products" in why
    assert "floors alone" in why
    assert gate.champion_comparable(False, why) is False


def test_a_champion_recording_no_catalogue_is_not_comparable():
    why = gate.champion_incomparable("1", None, LARGE)
    assert why is not None
    assert "unknown catalogue" in why


def test_an_underpowered_comparison_says_the_test_split_is_too_small_and_how_many_rows_it_needs():
    wide = {"auc": {"diff": 0.0, "lo": -0.05, "hi": 0.05}, "recall": {"diff": 0.0, "lo": -0.01, "hi": 0.01}}
    notes = gate.power_notes(wide, rows=2_000, tolerance=0.02, confidence=0.95)
    assert len(notes) == 1
    assert notes[0].startswith("auc:")
    assert "too small to judge non-inferiority" in notes[0]
    assert "12,500 test rows" in notes[0]  # 2,000 x (0.05 / 0.02)^2: the CI narrows as 1/sqrt(n)
    # An equal candidate with that CI is refused: the note explains the refusal.
    cand = {"recall": 0.5, "precision": 0.5, "auc": 0.7, "ece": 0.01}
    passed, _ = gate.decide(cand, cand, wide, config("deploy", min_recall=0.0, tolerance=0.02))
    assert not passed
    assert gate.power_notes({"auc": {"diff": 0.0, "lo": -0.01, "hi": 0.01}}, 2_000, 0.02, 0.95) == []
    # Wide but decided by the data: clearly worse (a shuffled-label model), or passing.
    worse = {"auc": {"diff": -0.16, "lo": -0.18, "hi": -0.136}}
    better = {"recall": {"diff": 0.1, "lo": 0.08, "hi": 0.13}}
    assert gate.power_notes(worse, 2_000, 0.02, 0.95) == []
    assert gate.power_notes(better, 2_000, 0.02, 0.95) == []


def test_a_champion_that_learned_test_rows_or_records_nothing_is_not_comparable():
    assert gate.training_incomparable("3", 0, 100) is None
    why = gate.training_incomparable("3", 17, 100)
    assert why.startswith("champion v3 is not comparable")
    assert "17 of the 100 test rows" in why
    assert "records no training data" in gate.training_incomparable("3", None, 100)
