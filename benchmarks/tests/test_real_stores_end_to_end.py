"""The real-store benches end to end at their smallest size, as a user runs them: `nextbuy bench
real-ranking | real-delay | real-thresholds --store online-retail --seeds 1` on Online Retail's
committed slice (150 customers' order lines, its export's own columns) in place of the full
export, each reading the store through the pipeline's ingest with the store's preset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY_PARAMS

SLICE = ROOT / "tests" / "data" / "online_retail_slice.parquet"


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory) -> Path:
    """A folder laid out as the project for the benches: params.yaml (the tiny store's model
    sizes), presets/online-retail.yaml as shipped, the slice where the preset reads the export."""
    folder = tmp_path_factory.mktemp("online-retail")
    (folder / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    (folder / "presets").mkdir()
    shutil.copy(ROOT / "presets" / "online-retail.yaml", folder / "presets")
    export = folder / "inputs" / "online-retail" / "online_retail.parquet"
    export.parent.mkdir(parents=True)
    shutil.copy(SLICE, export)
    return folder


@pytest.mark.bench
@pytest.mark.parametrize("kind", ["ranking", "delay", "thresholds"])
def test_each_real_store_bench_on_a_slice(kind, store_folder):
    out = store_folder / f"real-{kind}.json"
    command = [str(Path(sys.executable).with_name("nextbuy")), "bench", f"real-{kind}"]
    result = subprocess.run(
        [*command, "--store", "online-retail", "--seeds", "1", "--out", str(out)],
        cwd=store_folder,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["seeds"] == 1
    assert figures["data"]["store"] == "online-retail"
    assert figures["bench_seconds"] > 0
