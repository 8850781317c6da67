"""`nextbuy bench thresholds --graph`: per-bucket thresholds on a directed graph's test pairs,
cross-fitted over halves. End to end on the small community graph of the linkpred tests (budgets
shrunk), and its parts: the halves, the edge bootstrap, the unit head, and that no pair is
decided by policies fitted on it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml
from test_linkpred import community_graph, save_ppnp, shrink_budget

from nextbuy.config import ThresholdsConfig
from nextbuy_lab import linkpred_models as models
from nextbuy_lab import linkpred_split as lp
from nextbuy_lab import thresholds, thresholds_graph
from tests.conftest import TINY_PARAMS

SEEDS = 2


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-thresholds-graph")
    npz = save_ppnp(folder / "communities.npz", *community_graph())
    params = copy.deepcopy(TINY_PARAMS)
    params["train"].update(ensemble_members=2, mc_samples=3)
    params["calibrate"].update(n_buckets=2, min_bucket_size=10)
    params["thresholds"]["min_bucket_positives"] = 5
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = folder / "bench-thresholds.json"
    with pytest.MonkeyPatch.context() as mp:
        shrink_budget(mp)
        mp.setattr(thresholds_graph, "MEMBER_EPOCHS", 3)
        returned = thresholds.run(out, seeds=SEEDS, params_file=str(params_file), graph=npz)
    return json.loads(out.read_text()), returned


def test_graph_json_maps_each_estimator_to_cross_fitted_rows(graph_run):
    figures, returned = graph_run
    assert figures == json.loads(json.dumps(returned))
    assert figures["seeds"] == SEEDS
    assert len(figures["test_pairs"]) == SEEDS
    assert figures["split"] is None
    for name in thresholds.ESTIMATORS:
        rows = figures[name]
        assert [row["target_fraction"] for row in rows] == list(thresholds_graph.TARGET_FRACTIONS)
        targets = [row["target"] for row in rows]
        assert targets == sorted(targets)
        assert 0.5 < targets[0] < targets[-1] < 1.0
        for row in rows:
            assert {"single_recall", "bucket_recall", "mist_recall", "feasible", "gain_ci_low"} <= set(row)
            for policy in thresholds.POLICIES:
                assert 0.0 <= row[f"{policy}_recall"] <= 1.0
                assert 0.0 <= row[f"{policy}_precision"] <= 1.0
        # the model ranks links: at the loosest target the single threshold keeps most positives
        assert rows[0]["single_recall"] > 0.5
        assert rows[0]["single_precision"] > 0.6
        assert set(figures["coefficient"][name]) == {"mean", "ci95_over_seeds"}
        assert "by_in_degree" in figures["by_history"][name]


def test_halves_take_half_of_each_label_at_random():
    label = np.r_[np.ones(11), np.zeros(20)]
    first = thresholds_graph.halves(label, seed=0)
    assert first[label == 1].sum() == 5
    assert first[label == 0].sum() == 10
    assert not np.array_equal(first, thresholds_graph.halves(label, seed=1))
    np.testing.assert_array_equal(first, thresholds_graph.halves(label, seed=0))


def test_every_pair_is_decided_by_policies_fitted_on_the_other_half(monkeypatch):
    """The score is the pair's row number, so the spy sees which rows each fit and decision used."""
    n = 400
    rng = np.random.default_rng(0)
    label = (rng.random(n) < 0.5).astype(float)
    score = np.arange(n) / n
    uncertainty = rng.random(n)
    first = thresholds_graph.halves(label, seed=0)
    seen = []
    real = thresholds_graph.policy_decisions

    def spy(fit, n_buckets, test, targets, cfg):
        seen.append((set(np.rint(fit["score"] * n).astype(int)), set(np.rint(test["score"] * n).astype(int))))
        return real(fit, n_buckets, test, targets, cfg)

    monkeypatch.setattr(thresholds_graph, "policy_decisions", spy)
    calibrate_cfg = type("C", (), {"n_buckets": 2, "min_bucket_size": 10})
    thresholds_cfg = ThresholdsConfig.model_validate(
        {
            "target_precision": 0.5,
            "n_candidates": None,
            "min_bucket_positives": 5,
            "cross_fit_folds": 5,
            "seed": 0,
        }
    )
    rows = thresholds_graph.cross_fit(score, uncertainty, label, first, calibrate_cfg, thresholds_cfg)
    assert len(seen) == 2
    for fit_rows, judged in seen:
        assert not fit_rows & judged
        assert len(fit_rows | judged) == n
    assert seen[0][1] | seen[1][1] == set(range(n))  # every pair judged, once
    assert len(rows) == len(thresholds_graph.TARGET_FRACTIONS)


def test_bootstrap_keeps_a_resample_of_the_observed_edges():
    edges = np.c_[np.arange(200), (np.arange(200) + 1) % 200]
    split = lp.LinkSplit(201, edges, edges[:2], edges[:2], edges[:2], edges[:2], edges[:2], edges[:2])
    kept = thresholds_graph.bootstrap(split, seed=3).observed
    assert 0.5 * len(edges) < len(kept) < 0.75 * len(edges)  # about 1 - 1/e of them
    assert {tuple(e) for e in kept} <= {tuple(e) for e in edges}
    np.testing.assert_array_equal(kept, thresholds_graph.bootstrap(split, seed=3).observed)


def test_unit_head_scores_a_link_as_s_dot_t():
    from nextbuy.domain.graph.scoring import pair_logit_moments

    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    zero = np.zeros_like(s)
    moments = thresholds_graph.unit_head({"s_mean": s, "s_var": zero, "t_mean": t, "t_var": zero})
    mean, var = pair_logit_moments(moments, np.array([0, 2]), np.array([1, 0]))
    np.testing.assert_allclose(mean, [s[0] @ t[1], s[2] @ t[0]], rtol=1e-5)
    assert (var == 0).all()


def test_link_blade_continues_from_an_initial_model_without_early_stopping(monkeypatch):
    shrink_budget(monkeypatch)
    adj, attr = community_graph()
    edges = np.c_[adj.nonzero()]
    split = lp.make_split(edges, adj.shape[0], 0)
    base, _, _history, _ = models.link_blade(split, attr, 0, models.BLADE_DEFAULT)
    member, _, more, _ = models.link_blade(
        split, attr, 1, models.BLADE_DEFAULT, epochs=2, initial=base, early_stopping=False
    )
    assert len(more) == 2
    assert all("validation" not in row for row in more)
    assert member is not base
