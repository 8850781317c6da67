"""Shared fixtures: the repo root, the shared real data, a tiny simulator config."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CORA_NPZ = SHARED_DATA / "cora_ml" / "cora_ml.npz"

# Small enough that the whole pipeline runs in seconds, big enough that every
# split has matured conversions in every uncertainty bucket.
TINY_PARAMS = {
    "ingest": {
        "seed": 3,
        "snapshot": None,
        "simulator": {"n_products": 300, "n_categories": 8, "n_purchases": 6000, "n_impressions": 12000,
                      "history_days": 40},
        "split": {"calib_days": 12, "test_days": 6},
    },
    "label_delay": {},
    "train": {"embedding_dim": 8, "hidden_dim": 16, "epochs": 2, "batch_size": 1024, "mc_samples": 4},
    "calibrate": {"n_buckets": 2, "maturity_days": 4, "min_bucket_size": 30},
    "thresholds": {"target_precision": 0.2, "n_candidates": 50},
    "deploy": {"min_recall": 0.0, "max_calibration_error": 0.5},
    "traffic": {"days": 6, "impressions_per_day": 1500},
    "monitor": {"min_volume": 100},
}


@pytest.fixture
def tiny_params() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def cora_npz() -> Path:
    if not CORA_NPZ.exists():
        pytest.skip(f"{CORA_NPZ} not present (shared data only on dev/CI machines)")
    return CORA_NPZ
