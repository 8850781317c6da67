"""The serving tests' bundle: 50 products, two uncertainty buckets, no retrieval settings;
and the pyfunc around it."""

from __future__ import annotations

import numpy as np
import pytest

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.uncertainty import fit_bucket_calibration
from nextbuy.serving.bundle import ServingBundle
from nextbuy.serving.model import NextbuyModel


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


@pytest.fixture
def model(bundle) -> NextbuyModel:
    model = NextbuyModel()
    model.bundle = bundle  # what load_context would load
    return model
