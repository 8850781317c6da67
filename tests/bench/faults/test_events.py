"""Every bad raw log of bench faults (orders-only exports too), run through the stage it
targets (no DVC, no training): refused naming the file, the column and the rows, or cleaned
with the count warned."""

from __future__ import annotations

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from nextbuy.bench.faults.events import EVENT_CASES, ORDERS_ONLY_CASES
from nextbuy.bench.faults.project import Project, write_store_logs
from nextbuy.bench.faults.verdicts import judge
from nextbuy.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_params_module):
    root = tmp_path_factory.mktemp("store")
    (root / "inputs").mkdir()
    project = Project(root, tiny_params_module, {})
    write_store_logs(project)
    return project


@pytest.fixture(scope="module")
def tiny_params_module():
    from tests.conftest import TINY_PARAMS

    return TINY_PARAMS


@pytest.mark.parametrize("case", [*EVENT_CASES, *ORDERS_ONLY_CASES], ids=lambda c: c.name)
def test_each_bad_raw_log_is_refused_or_cleaned_clearly(store, case, tmp_path, monkeypatch, caplog):
    root = tmp_path / "project"
    root.mkdir()
    (root / "inputs").symlink_to(store.root / "inputs", target_is_directory=False)
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text(yaml.safe_dump(case.params(store.params)))
    added = set((root / "inputs").iterdir())
    try:
        if case.files:
            case.files(root)
        stages = ["ingest", "traffic"] if case.stage == "traffic" else ["ingest"]
        for stage in stages:
            result = CliRunner().invoke(app, [stage])
            if result.exit_code:
                break
    finally:
        for path in set((root / "inputs").iterdir()) - added:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert stage == case.stage, result.output  # an earlier stage did not refuse instead
    verdict = judge(case, result.exit_code, result.output + caplog.text, outputs_same=True)
    assert verdict["clear"], (verdict, result.output + caplog.text)
