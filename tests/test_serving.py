"""Serving bundle: scores, uncertainty, decisions, cold start, malformed requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.decisions import Thresholds
from nextbuy.serving import ServingBundle, validate_request
from nextbuy.uncertainty import fit_bucket_calibration


@pytest.fixture
def bundle() -> ServingBundle:
    rng = np.random.default_rng(0)
    n, d = 50, 4
    moments = {"s_mean": rng.normal(size=(n, d)).astype(np.float32), "t_mean": rng.normal(size=(n, d)).astype(np.float32),
               "s_var": rng.uniform(0, 0.1, (n, d)).astype(np.float32), "t_var": rng.uniform(0, 0.1, (n, d)).astype(np.float32),
               "head_w": np.ones(d, np.float32), "head_b": np.zeros(1, np.float32)}
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


@pytest.mark.parametrize("frame, fragment", [
    (pd.DataFrame({"source_id": [1]}), "missing column"),
    (pd.DataFrame({"source_id": ["a"], "candidate_id": [1]}), "integer product ids"),
    (pd.DataFrame({"source_id": [1.5], "candidate_id": [1]}), "integer product ids"),
])
def test_malformed_requests_say_what_to_send(frame, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_request(frame)
