"""Shared by the research benchmarks' tests: they train tiny models, on the tiny store and the
shared Cora-ML graph of the product's tests (tests/conftest.py), one torch thread each as the
product's benchmark tests do (tests/bench/conftest.py)."""

from __future__ import annotations

from tests.bench.conftest import _one_thread  # noqa: F401 - the product's bench tests' autouse fixture
from tests.conftest import cora_npz, tiny_params  # noqa: F401 - fixtures of the product's tests
