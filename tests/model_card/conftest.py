"""The model card tests' MLflow store: one per test module, the cwd its project dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbuy.bench.serving_fixtures import mlflow_store
from nextbuy.mlops import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """One MLflow store for the module (creating one takes seconds); the cwd is its project dir."""
    import os

    from mlflow.tracking import MlflowClient

    root, before = tmp_path_factory.mktemp("cards"), Path.cwd()
    os.chdir(root)
    try:
        with mlflow_store(new_mlflow_store(root / "mlflow.db")):
            tracking.configure(root)
            yield MlflowClient()
    finally:
        os.chdir(before)


@pytest.fixture
def client(store):
    return store


@pytest.fixture
def name(request) -> str:
    """A registered model of this test's own in the module's store (its versions start at 1)."""
    return f"m-{request.node.name[5:45]}"
