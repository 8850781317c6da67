"""Shared fixtures: the repo root, the shared real data, a tiny simulator config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nextbuy.config import merge, read_params

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CORA_NPZ = SHARED_DATA / "cora_ml" / "cora_ml.npz"

# The tiny store of presets/tiny.yaml on top of the repo's params.yaml: every knob set.
TINY_PARAMS = merge(
    read_params(ROOT / "params.yaml"), yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
)


@pytest.fixture
def tiny_params() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def cora_npz() -> Path:
    if not CORA_NPZ.exists():
        pytest.skip(f"{CORA_NPZ} not present (shared data only on dev/CI machines)")
    return CORA_NPZ
