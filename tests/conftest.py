"""Shared fixtures: the repo root, the shared real data, a tiny simulator config."""

from __future__ import annotations

import os
from pathlib import Path

# `make test` runs one pytest process per core (xdist), and many tests start pipeline stages as
# subprocesses: one math thread per process (torch, BLAS), inherited by every child, keeps them
# from competing for the same cores; oversubscribed, torch's threads spin and a tiny training
# costs several times the CPU. Set before anything imports torch or numpy.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402 - after the thread settings above

from nextbuy.presets import params_with  # noqa: E402

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding end-to-end (``slow``) tests first, each file's tests in their own order:
    `make test` hands whole files to its workers in this order (xdist ``--dist loadfile``), so
    the long files start at once and the short ones fill in around them, instead of one long
    file running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)
