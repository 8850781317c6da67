"""Shared evaluation definitions: which rows fit, the delay-corrected labels, soft log loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from nextbuy.domain import evaluation


def scored(**columns) -> pd.DataFrame:
    base = {
        "split": ["calib", "calib", "test", "test", "calib"],
        "matured": [True, False, True, False, True],
        "label": np.array([1, 0, 0, 0, 0], dtype=np.int8),
        "p_flip": [0.0, 0.4, 0.1, 0.3, 0.0],
    }
    return pd.DataFrame({**base, **columns})


def test_fit_rows_are_only_matured_calibration_rows():
    mask = evaluation.fit_rows(scored())
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, False, False, True]


def test_fit_rows_is_empty_when_nothing_has_matured():
    assert not evaluation.fit_rows(scored(matured=[False] * 5)).any()


def test_evaluation_labels_keep_positives_and_count_negatives_by_flip_probability():
    label = evaluation.evaluation_labels(scored())
    np.testing.assert_allclose(label, [1.0, 0.4, 0.1, 0.3, 0.0])
    # An observed positive stays 1 whatever its (stale) flip probability.
    assert evaluation.evaluation_labels(scored(p_flip=[0.9, 0.4, 0.1, 0.3, 0.0]))[0] == 1.0


def test_soft_log_loss_equals_sklearn_on_hard_labels():
    rng = np.random.default_rng(0)
    prob = rng.uniform(0.01, 0.99, 500)
    label = (rng.uniform(size=500) < prob).astype(float)
    assert evaluation.soft_log_loss(prob, label) == pytest.approx(log_loss(label, prob), rel=1e-9)


def test_soft_log_loss_of_a_fractional_label_is_the_mix_of_both_hard_losses():
    prob = np.array([0.3, 0.8])
    soft = evaluation.soft_log_loss(prob, np.array([0.25, 0.25]))
    hard = 0.25 * evaluation.soft_log_loss(prob, np.ones(2)) + 0.75 * evaluation.soft_log_loss(
        prob, np.zeros(2)
    )
    assert soft == pytest.approx(hard)


def test_soft_log_loss_is_minimal_at_the_label_itself():
    label = np.full(3, 0.3)
    at_label = evaluation.soft_log_loss(np.full(3, 0.3), label)
    assert all(at_label < evaluation.soft_log_loss(np.full(3, p), label) for p in (0.1, 0.29, 0.31, 0.6))


def test_soft_log_loss_stays_finite_for_confident_mistakes():
    loss = evaluation.soft_log_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert np.isfinite(loss)
    assert loss > 10
