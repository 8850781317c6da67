"""End to end from a store's raw logs: the simulated tiny store written as logs under inputs/,
`ingest.source: events`, and every stage of both DAGs to a champion and a monitored month,
with the graph, labels and traffic built from the logs and no empty DVC output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nextbuy.stage_list import dag_stages
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import project_copy, project_env

pytestmark = pytest.mark.slow


def run(cmd: list[str], dest: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    dest = project_copy(tmp_path_factory.mktemp("events"), TINY_PARAMS)
    env = project_env(dest)
    written = run(["nextbuy", "simulate-logs", "inputs/store", "--format", "partitioned"], dest, env)
    assert written.returncode == 0, written.stderr
    params = yaml.safe_load((dest / "params.yaml").read_text())
    printed = yaml.safe_load(written.stdout)["ingest"]
    params["ingest"] |= {k: printed[k] for k in ("source", "snapshot", "catalogue_path")}
    params["ingest"]["events"] |= printed["events"]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro = run(["dvc", "repro"], dest, env)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    return dest, env, params, repro.stdout + repro.stderr


def test_raw_logs_run_every_stage_to_a_champion(pipeline):
    dest, _, params, output = pipeline
    for stage in dag_stages(ROOT, "training") + dag_stages(ROOT, "monitoring"):
        assert json.loads((dest / "metrics" / f"{stage}.json").read_text()), stage
    deploy = json.loads((dest / "metrics" / "deploy.json").read_text())
    assert deploy["passed"]
    assert deploy["champion_version"] == 1
    ingest = json.loads((dest / "metrics" / "ingest.json").read_text())
    assert ingest["cleaning"]["orders_duplicate_rows_dropped"] == 0
    assert ingest["snapshot"] == str(pd.Timestamp(params["ingest"]["snapshot"]))
    assert ingest["products"] == params["ingest"]["simulator"]["n_products"]  # the catalogue's
    assert "is empty" not in output  # no empty DVC output (data/truth holds typed, empty tables)


def test_traffic_is_the_logs_part_after_the_snapshot(pipeline):
    dest, _, params, _ = pipeline
    traffic = pd.read_parquet(dest / "data" / "traffic" / "impressions.parquet")
    snapshot = pd.Timestamp(params["ingest"]["snapshot"])
    assert (traffic["shown_at"] > snapshot).all()
    metrics = json.loads((dest / "metrics" / "traffic.json").read_text())
    assert metrics["days"] == pytest.approx(params["traffic"]["days"], abs=0.1)
    assert metrics["drift"] is None
    assert metrics["observed_positivity"] > 0
