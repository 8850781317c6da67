"""`nextbuy bench dag` end to end at its smallest size (the tiny preset): the training DAG's
dag.test() and `dvc repro` of the same stages both finish, and both record the same stage
params in their dvc.lock (the DAG's in the Airflow workspace)."""

from __future__ import annotations

import json

import pytest

from nextbuy.bench import dag
from tests.conftest import ROOT


@pytest.mark.bench
def test_the_dag_bench_runs_both_ways_and_they_did_the_same_work(tmp_path):
    out = tmp_path / "dag.json"
    figures = dag.run(out, ROOT)
    assert figures["same_params"]
    assert figures["dag_s"] > 0
    assert figures["repro_s"] > 0
    assert set(figures["task_s"]) >= {"ingest", "train", "deploy"}
    assert json.loads(out.read_text())["ratio"] == figures["ratio"]
