"""Shared by the research benchmarks' tests: they train tiny models, on the tiny store and the
shared Cora-ML graph of the product's tests (tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import cora_npz, tiny_params  # noqa: F401 - fixtures of the product's tests


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads (a busy 2-core box gets much slower);
    train.train_rounds also switches torch to deterministic algorithms: switch back after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
