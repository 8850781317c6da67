"""deploy stage cores: fresh evaluation rows with delay-corrected labels, the input example,
and judging candidate vs champion on the same rows (the gate itself: tests/domain/test_gate.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.serving_fixtures import load_bundle, write_bundle_files
from nextbuy.stages import deploy
from tests.helpers import config


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    good = load_bundle(write_bundle_files(root / "good", n_products=60, d=8, seed=0, n_fit=4000))
    other = load_bundle(write_bundle_files(root / "other", n_products=60, d=8, seed=5, n_fit=4000))
    return good, other


def rows_scored_by(bundle, n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Test rows whose hard labels follow the bundle's calibrated probability."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"source_id": rng.integers(0, 60, n), "shown_id": rng.integers(0, 60, n)})
    prob = bundle.score(rows["source_id"], rows["shown_id"])["prob_calibrated"].to_numpy()
    return rows, (rng.uniform(size=n) < prob).astype(float)


def test_evaluation_rows_are_the_test_split_with_delay_corrected_labels():
    weighted = pd.DataFrame(
        {
            "split": ["train", "test", "calib", "test", "test"],
            "source_id": [0, 1, 2, 3, 4],
            "label": np.array([1, 1, 0, 0, 0], dtype=np.int8),
            "p_flip": [0.0, 0.0, 0.7, 0.25, 0.0],
        }
    )
    rows, label = deploy.evaluation_rows(weighted)
    assert rows["source_id"].tolist() == [1, 3, 4]
    assert rows.index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(label, [1.0, 0.25, 0.0])


def test_input_example_is_five_valid_pairs_and_deterministic():
    example = deploy.input_example(7)
    assert list(example.columns) == ["source_id", "candidate_id"] and len(example) == 5
    assert ((example >= 0) & (example < 7)).all().all()
    pd.testing.assert_frame_equal(example, deploy.input_example(7))


def test_serving_requirements_pin_every_serving_package():
    pins = deploy.serving_requirements()
    assert [p.split("==")[0] for p in pins] == list(deploy.SERVING_PACKAGES)
    assert all(p.split("==")[1] for p in pins)


def test_first_candidate_is_judged_without_a_champion(bundles):
    good, _ = bundles
    rows, label = rows_scored_by(good)
    blessing = deploy.judge(good, None, rows, label, config("deploy", min_recall=0.0))
    assert blessing["champion"] is None and blessing["comparison"] is None
    assert blessing["passed"] and blessing["reasons"] == []
    assert blessing["candidate"]["rows"] == len(rows) and blessing["candidate"]["auc"] > 0.6


def test_candidate_equal_to_champion_passes_with_zero_difference(bundles):
    good, _ = bundles
    rows, label = rows_scored_by(good)
    cfg = config("deploy", min_recall=0.0, bootstrap_samples=50)
    blessing = deploy.judge(good, good, rows, label, cfg)
    assert blessing["passed"], blessing["reasons"]
    assert blessing["candidate"] == blessing["champion"]
    assert set(blessing["comparison"]) == set(cfg.compare_metrics)
    assert all(ci["diff"] == ci["lo"] == ci["hi"] == 0.0 for ci in blessing["comparison"].values())


def test_unrelated_candidate_is_refused_against_the_champion_that_fits_the_labels(bundles):
    good, other = bundles
    rows, label = rows_scored_by(good)
    cfg = config("deploy", min_recall=0.0, min_auc=0.0, max_calibration_error=1.0, bootstrap_samples=50)
    blessing = deploy.judge(other, good, rows, label, cfg)
    assert not blessing["passed"]
    assert blessing["comparison"]["auc"]["hi"] < 0
    assert any(r.startswith("auc") and "vs champion" in r for r in blessing["reasons"])
