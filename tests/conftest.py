"""Shared fixtures: the repo root, the shared real data, a tiny simulator config."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbuy.presets import params_with

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CORA_NPZ = SHARED_DATA / "cora_ml" / "cora_ml.npz"

# The tiny store of presets/tiny.yaml on top of the repo's params.yaml: every knob set.
TINY_PARAMS = params_with(ROOT / "presets" / "tiny.yaml", ROOT / "params.yaml")


@pytest.fixture
def tiny_params() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def cora_npz() -> Path:
    if not CORA_NPZ.exists():
        pytest.skip(f"{CORA_NPZ} not present (shared data only on dev/CI machines)")
    return CORA_NPZ
