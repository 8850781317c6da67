"""Every `nextbuy bench <name>` runs end to end at its smallest size, as a user runs it (the
command, its JSON read back), so none can break unseen: the product's benchmarks here, the
research ones in benchmarks/tests. ``END_TO_END`` names the test that runs each; a bench that
`nextbuy bench --help` lists without one fails the first test.

These take minutes in all (each builds a store or a project of its own): `make test-benches`,
which CI runs after `make test`."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nextbuy.orchestration.names import PROJECT_DIR_ENV
from nextbuy.presets import read_preset
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import copy_finished_project

# bench -> "test file::test function" that runs it end to end at its smallest size
REAL_STORES = "benchmarks/tests/test_real_stores_end_to_end.py::test_each_real_store_bench_on_a_slice"
END_TO_END = {
    "serve": "tests/bench/test_end_to_end.py::test_serve_on_the_smallest_catalogue",
    "monitor": "tests/bench/test_end_to_end.py::test_monitor_on_the_tiny_store",
    "dag": "tests/bench/test_dag.py::test_the_dag_bench_runs_both_ways_and_they_did_the_same_work",
    "faults": "tests/bench/test_end_to_end.py::test_faults_with_one_case_of_each_kind",
    "scale": "tests/bench/test_end_to_end.py::test_scale_at_one_small_size",
    "events": (
        "tests/bench/test_events_bench.py::"
        "test_each_size_reports_time_memory_and_finds_the_planted_conversions"
    ),
    "engines": "tests/bench/test_end_to_end.py::test_engines_at_the_smallest_store",
    "preset": "tests/bench/test_end_to_end.py::test_preset_and_real_monitor_on_a_real_store",
    "real-monitor": "tests/bench/test_end_to_end.py::test_preset_and_real_monitor_on_a_real_store",
    "linkpred": "benchmarks/tests/test_linkpred.py::test_json_has_every_method_and_metric",
    "model": "tests/test_cli.py::test_seeded_store_benches_run_on_the_params_file_given",
    "delay": "tests/test_cli.py::test_seeded_store_benches_run_on_the_params_file_given",
    "thresholds": "benchmarks/tests/test_thresholds.py::test_json_maps_each_estimator_to_rows_per_target",
    "real-ranking": REAL_STORES,
    "real-delay": REAL_STORES,
    "real-thresholds": REAL_STORES,
}
NOT_BENCHES = {"report", "record", "record-all"}  # commands of the group that render or record


def bench(*args: str, cwd: Path, env: dict | None = None) -> dict:
    """``nextbuy bench <args> --out`` in ``cwd``, as a user runs it: its JSON, or the failure's output."""
    out = cwd / f"bench-{args[0]}.json"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("nextbuy")), "bench", *args, "--out", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_bench_has_a_test_that_runs_it_end_to_end():
    from typer.main import get_command

    from nextbuy.cli import app

    group = get_command(app).commands["bench"]  # type: ignore[attr-defined]
    listed = set(group.commands) - NOT_BENCHES
    assert listed == set(END_TO_END), "a bench without an end-to-end test, or one that is gone"
    for name, test in END_TO_END.items():
        file, function = test.split("::")
        module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, function, None)), f"{name}: {test} does not exist"


@pytest.mark.bench
def test_serve_on_the_smallest_catalogue(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")  # its serving settings
    figures = bench("serve", "--products", "100", cwd=tmp_path)
    assert figures["n_products"] == 100
    assert 0 < figures["rest_p50_ms"] <= figures["rest_p99_ms"]
    assert 0.0 <= figures["topk_recall_vs_exact"] <= 1.0


@pytest.mark.bench
def test_monitor_on_the_tiny_store(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    figures = bench("monitor", cwd=tmp_path)
    assert figures["false_alarms"] >= 0
    assert figures["naive_false_alarms"] >= 0
    assert figures["detect_days"] is None or figures["detect_days"] > 0


@pytest.mark.bench
def test_faults_with_one_case_of_each_kind(tmp_path):
    """A bad params file, a malformed request and a kill -9 of one stage, on the bench's own
    tiny project: each judged, none lost."""
    only = "typo key|empty body|calibrate: kill -9 at 60%"
    figures = bench("faults", "--only", only, cwd=tmp_path, env={**os.environ, PROJECT_DIR_ENV: str(ROOT)})
    groups = {row["group"] for row in figures["rows"]}
    assert {"kill", "request"} <= groups, groups
    assert len(groups) >= 3, groups
    assert figures["clear_errors"] >= 2
    for counter in ("silent_accepts", "tracebacks", "unclear", "outputs_lost", "orphans"):
        assert figures[counter] == 0, (counter, figures["rows"])


@pytest.mark.bench
def test_scale_at_one_small_size(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    figures = bench("scale", "--sizes", "2000", cwd=tmp_path)
    (size,) = figures["sizes"]
    assert size["n_products"] == 2000, size
    assert size["total_s"] > 0
    assert figures["sampler_edges_per_s"] > 0


@pytest.mark.bench
def test_engines_at_the_smallest_store(tmp_path):
    if shutil.which("java") is None:
        pytest.skip("no Java 17: the Spark engine cannot start (apt install openjdk-17-jre-headless)")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    figures = bench("engines", "--sizes", "20000", "--work", str(tmp_path), cwd=tmp_path)
    ran = {(r["engine"], r["stage"]) for r in figures["runs"] if "stage_s" in r}
    assert {engine for engine, _ in ran} == {"pandas", "spark"}
    assert len(ran) == len(figures["runs"]), figures["runs"]  # none failed or was stopped


@pytest.mark.bench
def test_preset_and_real_monitor_on_a_real_store(tmp_path, finished_tiny_project):
    """The pipeline on Online Retail's export (its committed slice) with a tiny training budget,
    as `make run-preset` runs it, then what the monitor saw in the months after its snapshot."""
    project = copy_finished_project(finished_tiny_project, tmp_path)
    export = project / "inputs" / "online-retail" / "online_retail.parquet"
    shutil.copy(ROOT / "tests" / "data" / "online_retail_slice.parquet", export)
    preset = read_preset(ROOT / "presets" / "online-retail.yaml")
    preset["train"] = TINY_PARAMS["train"] | {"ensemble_members": 2, "ensemble_epochs": 1, "em_rounds": 0}
    (project / "presets" / "online-retail.yaml").write_text(yaml.safe_dump(preset))
    figures = bench("preset", "--preset", "presets/online-retail.yaml", cwd=project)
    assert figures["data"]["exposures"] == "replayed"
    assert figures["deploy"]["model_name"] == preset["deploy"]["model_name"]
    watched = bench("real-monitor", "--store", "online-retail", cwd=project)
    assert watched["data"]["store"] == "online-retail"
    assert watched["months"]
    assert all(m["exposures"] > 0 for m in watched["months"])
