"""`nextbuy bench thresholds` on the tiny simulated store: the JSON a user scripts against (one list
of rows per estimator), out-of-sample policies, and the gain interval arithmetic."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import yaml

from nextbuy_lab import threshold_policies, thresholds
from tests.conftest import TINY_PARAMS

SEEDS = 2
ROW_KEYS = {
    "target",
    "single_recall",
    "bucket_recall",
    "mist_recall",
    "single_precision",
    "bucket_precision",
    "mist_precision",
    "feasible",
    "gain_ci_low",
    "gain_ci_high",
}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-thresholds")
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(TINY_PARAMS))
    out = folder / "bench-thresholds.json"
    returned = thresholds.run(out, seeds=SEEDS, params_file=str(params_file))
    return json.loads(out.read_text()), returned


def test_json_maps_each_estimator_to_rows_per_target(bench_run):
    figures, returned = bench_run
    assert figures == json.loads(json.dumps(returned))
    for name in (*thresholds.ESTIMATORS, thresholds.ORACLE):
        rows = figures[name]
        assert len(rows) == len(thresholds.TARGET_LIFTS)
        targets = [row["target"] for row in rows]
        assert targets == sorted(targets)
        assert targets[0] > 0
        for row in rows:
            assert set(row) >= ROW_KEYS
            for policy in thresholds.POLICIES:
                assert 0.0 <= row[f"{policy}_recall"] <= 1.0
                assert 0.0 <= row[f"{policy}_precision"] <= 1.0
        # Stricter targets accept less: recall of the single threshold does not rise with the target.
        single = [row["single_recall"] for row in rows]
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(single))
        assert set(figures["coefficient"][name]) == {"mean", "ci95_over_seeds"}
        assert "by_in_degree" in figures["by_history"][name]
    assert figures["seeds"] == SEEDS


def test_gain_interval_is_a_t_interval_over_seeds():
    low, high = threshold_policies._t_interval(np.array([0.1, 0.2, 0.3]))
    assert low < 0.2 < high
    assert high - 0.2 == pytest.approx(0.2 - low)
    assert threshold_policies._t_interval(np.array([0.1, np.nan])) == (None, None)  # JSON null, not NaN


def test_each_estimator_reports_how_well_it_tracks_the_true_error_and_the_oracle_tracks_it_exactly(bench_run):
    figures, _ = bench_run
    rho = figures["error_rho"]
    assert set(rho) == {*thresholds.ESTIMATORS, thresholds.ORACLE}
    for name in thresholds.ESTIMATORS:
        assert -1.0 <= rho[name]["mean"] <= 1.0
    # The reference's uncertainty *is* the size of the error: rank correlation 1 in every seed.
    assert rho[thresholds.ORACLE]["mean"] == pytest.approx(1.0)


def test_logit_error_is_the_distance_in_log_odds():
    score = np.array([0.5, 0.5, np.exp(1) / (1 + np.exp(1))])
    p_true = np.array([0.5, np.exp(-1) / (1 + np.exp(-1)), 0.5])
    assert thresholds.logit_error(score, p_true) == pytest.approx([0.0, 1.0, 1.0])


def test_targets_are_lifts_of_the_positive_rate_and_stay_below_one():
    assert thresholds.precision_targets(0.05, (2.0, 4.0)) == pytest.approx([0.1, 0.2])
    # A store converting at 15% cannot ask for 8x its rate: the target is capped, not an error.
    assert thresholds.precision_targets(0.15, (2.0, 8.0)) == pytest.approx([0.3, thresholds.MAX_TARGET])
