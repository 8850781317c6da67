"""Serving bundle: scores, uncertainty, decisions, cold start, malformed requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.uncertainty import fit_bucket_calibration
from nextbuy.mlops.serving import ServingBundle, validate_request


@pytest.fixture
def bundle() -> ServingBundle:
    rng = np.random.default_rng(0)
    n, d = 50, 4
    moments = {
        "s_mean": rng.normal(size=(n, d)).astype(np.float32),
        "t_mean": rng.normal(size=(n, d)).astype(np.float32),
        "s_var": rng.uniform(0, 0.1, (n, d)).astype(np.float32),
        "t_var": rng.uniform(0, 0.1, (n, d)).astype(np.float32),
        "head_w": np.ones(d, np.float32),
        "head_b": np.zeros(1, np.float32),
    }
    score = rng.uniform(size=500)
    unc = rng.uniform(size=500)
    calibration = fit_bucket_calibration(score, unc, (rng.uniform(size=500) < score).astype(int), 2, 20)
    return ServingBundle.from_arrays(moments, calibration, Thresholds(np.array([0.5, 0.8]), 0.5))


def test_scores_known_pairs(bundle):
    out = bundle.score(np.array([0, 1, 2]), np.array([3, 4, 5]))
    assert out["score"].between(0, 1).all() and (out["uncertainty"] > 0).all()
    assert not out["cold_start"].any()
    expected = out["score"] >= np.array([0.5, 0.8])[out["bucket"]]
    assert (out["decision"] == expected).all()


def test_unknown_ids_fall_back_to_the_prior_with_more_uncertainty(bundle):
    known = bundle.score(np.arange(10), np.arange(10, 20))
    cold = bundle.score(np.full(10, 10**6), np.arange(10, 20))
    assert cold["cold_start"].all()
    assert cold["uncertainty"].mean() > known["uncertainty"].mean()
    neg = bundle.score(np.array([-1]), np.array([0]))
    assert neg["cold_start"].item()


@pytest.mark.parametrize(
    "frame, fragment",
    [
        (pd.DataFrame({"source_id": [1]}), "missing column"),
        (pd.DataFrame({"source_id": ["a"], "candidate_id": [1]}), "integer product ids"),
        (pd.DataFrame({"source_id": [1.5], "candidate_id": [1]}), "integer product ids"),
        (pd.DataFrame({"source_id": [], "candidate_id": []}), "empty request"),
        (pd.DataFrame({"source_id": np.zeros(11, int), "candidate_id": np.zeros(11, int)}), "limit is 10"),
    ],
)
def test_malformed_requests_say_what_to_send(frame, fragment):
    with pytest.raises(MlflowException, match=fragment) as err:
        validate_request(frame, max_rows=10)
    assert err.value.get_http_status_code() == 400


def test_top_k_matches_brute_force_ranking(bundle):
    k = 7
    recs = bundle.top_k(np.array([0, 3, 10**6]), k)
    assert len(recs) == 3 * k
    for source, got in recs.groupby("source_id", sort=False):
        candidates = np.arange(bundle.n_products)
        if source < bundle.n_products:
            candidates = candidates[candidates != source]
        pairs = bundle.score(np.full(candidates.size, source), candidates).assign(candidate_id=candidates)
        best = pairs.sort_values(["decision", "prob_calibrated", "score"], ascending=False).head(k)
        assert got["candidate_id"].tolist() == best["candidate_id"].tolist()
        np.testing.assert_allclose(got["score"], best["score"], rtol=1e-5)
        assert got["rank"].tolist() == list(range(1, k + 1))
        # Accepted candidates come first.
        assert got["decision"].is_monotonic_decreasing
    assert recs.loc[recs["source_id"] == 10**6, "cold_start"].all()
    assert 0 not in recs.loc[recs["source_id"] == 0, "candidate_id"].tolist()


def test_top_k_chunks_give_the_same_answer(bundle, monkeypatch):
    import nextbuy.mlops.serving as serving

    whole = bundle.top_k(np.arange(20), 5)
    monkeypatch.setattr(serving, "TOPK_CHUNK_CELLS", 60)  # 1 source per chunk
    pd.testing.assert_frame_equal(whole, bundle.top_k(np.arange(20), 5))


def test_empty_top_k_has_the_columns_and_types_of_a_full_one(bundle):
    full = bundle.top_k(np.array([0]), 3)
    for empty in (bundle.top_k(np.array([], dtype=np.int64), 3), bundle.top_k(np.array([0]), 0)):
        assert empty.empty
        assert empty.dtypes.to_dict() == full.dtypes.to_dict()
