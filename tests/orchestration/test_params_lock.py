"""Run-only params.yaml overrides and the workspace lock (no Airflow)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from nextbuy.orchestration import params_lock as lock
from nextbuy.orchestration.names import BACKUP_FILE
from tests.conftest import ROOT

PARAMS_TEXT = (ROOT / "params.yaml").read_text()  # every knob set, with its comments


def _project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text(PARAMS_TEXT)
    return tmp_path


def _epochs(project: Path) -> int:
    return yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"]


def test_training_overrides_from_form_and_logical_date():
    form = {
        "target_precision": 0.25,
        "epochs": None,
        "source": None,
        "graph_path": None,
        "overrides": {"train.lr": 0.005, "thresholds.target_precision": 0.4},
    }
    snapshot = lock.snapshot_iso(datetime(2026, 3, 1, 6, 30, tzinfo=timezone(timedelta(hours=2))))
    assert snapshot == "2026-03-01T04:30:00"
    assert lock.training_overrides(form, snapshot) == {
        "ingest.snapshot": snapshot,
        "thresholds.target_precision": 0.4,
        "train.lr": 0.005,
    }
    assert lock.training_overrides({}, None) == {}


def test_a_preset_applies_first_and_the_run_wins_over_it(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "store.yaml").write_text(
        "ingest:\n  snapshot: '2011-09-01'\n  source: events\n"
        "train:\n  epochs: 10\ndeploy:\n  model_name: store\n"
    )
    preset = lock.preset_overrides(tmp_path, {"preset": "presets/store.yaml"})
    assert preset == {
        "ingest.snapshot": "2011-09-01",
        "ingest.source": "events",
        "train.epochs": 10,
        "deploy.model_name": "store",
    }
    out = lock.training_overrides({"epochs": 2}, "2011-09-03T00:00:00", preset)
    assert out["ingest.snapshot"] == "2011-09-03T00:00:00"  # the run's day, not the preset's
    assert out["train.epochs"] == 2
    assert out["deploy.model_name"] == "store"
    assert lock.preset_overrides(tmp_path, {"preset": None}) == {}
    with pytest.raises(lock.InvalidOverrides, match=r"presets/nowhere\.yaml"):
        lock.preset_overrides(tmp_path, {"preset": "presets/nowhere.yaml"})
    watched = lock.monitoring_overrides(tmp_path, {}, preset)  # nothing ingested yet: the preset's store
    assert watched["ingest.source"] == "events"
    assert watched["deploy.model_name"] == "store"


def test_apply_overrides_sets_dotted_keys_on_a_copy():
    params = {"train": {"epochs": 4}, "ingest": {"simulator": {"n_products": 10}}}
    overrides = {"train.epochs": 1, "ingest.simulator.seed_extra": 3, "traffic.drift.kind": "x"}
    out = lock.apply_overrides(params, overrides)
    assert out == {
        "train": {"epochs": 1},
        "ingest": {"simulator": {"n_products": 10, "seed_extra": 3}},
        "traffic": {"drift": {"kind": "x"}},
    }
    assert params["train"]["epochs"] == 4
    with pytest.raises(ValueError, match="not a section"):
        lock.apply_overrides(params, {"train.epochs.x": 1})


def test_acquire_and_restore_put_back_the_exact_file(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    owner = {"dag_id": "d", "run_id": "r1"}
    params = lock.acquire_params(project, owner, {"train.epochs": 1}, lambda o: True)
    assert params == lock.apply_overrides(yaml.safe_load(original), {"train.epochs": 1})
    assert yaml.safe_load((project / "params.yaml").read_text()) == params
    # A retry of the same run starts again from the original, not from its own overrides.
    assert lock.acquire_params(project, owner, {"train.epochs": 2}, lambda o: True)["train"]["epochs"] == 2
    assert lock.restore_params(project, {"dag_id": "d", "run_id": "other"}).endswith("untouched")
    assert lock.restore_params(project, owner) == "params.yaml restored"
    assert (project / "params.yaml").read_text() == original
    assert not (project / BACKUP_FILE).exists()
    assert lock.restore_params(project, owner).startswith("no params backup")


def test_a_live_run_holds_the_workspace_a_dead_one_does_not(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    first, second = {"dag_id": "d", "run_id": "r1"}, {"dag_id": "e", "run_id": "r2"}
    lock.acquire_params(project, first, {"train.epochs": 1}, lambda o: True)
    assert lock.acquire_params(project, second, {"train.epochs": 2}, lambda o: True) is None  # wait
    assert _epochs(project) == 1
    # The holder died without its teardown: its backup is restored, then the new run takes over.
    assert lock.acquire_params(project, second, {"train.epochs": 2}, lambda o: False)["train"]["epochs"] == 2
    assert lock.read_backup(project)["owner"] == second
    lock.restore_params(project, second)
    assert (project / "params.yaml").read_text() == original


def test_invalid_overrides_fail_before_anything_is_written(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    for bad in ({"train.epoch": 3}, {"train.epochs": 0}, {"trian.epochs": 3}):
        with pytest.raises(ValueError, match="invalid run overrides"):
            lock.acquire_params(project, {"dag_id": "d", "run_id": "r"}, bad, lambda o: True)
        assert (project / "params.yaml").read_text() == original
        assert not (project / BACKUP_FILE).exists()


def test_monitoring_pins_ingest_to_the_last_ingest_in_dvc_lock(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "ingest": {
                        "params": {"params.yaml": {"ingest": {"seed": 3, "snapshot": "2026-11-15T00:00:00"}}}
                    }
                }
            }
        )
    )
    out = lock.monitoring_overrides(tmp_path, {"overrides": {"traffic.days": 5}})
    assert out == {"ingest": {"seed": 3, "snapshot": "2026-11-15T00:00:00"}, "traffic.days": 5}
    assert lock.monitoring_overrides(tmp_path / "nowhere", {}) == {}
    preset = {"ingest.source": "events", "deploy.model_name": "store"}
    assert lock.monitoring_overrides(tmp_path, {}, preset) == {  # ingest as ingested, whole
        "deploy.model_name": "store",
        "ingest": {"seed": 3, "snapshot": "2026-11-15T00:00:00"},
    }


def test_restore_any_puts_back_whoevers_backup(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    assert lock.restore_any(project).startswith("no params backup")
    lock.acquire_params(project, {"dag_id": "d", "run_id": "dead"}, {"train.epochs": 1}, lambda o: True)
    assert "'run_id': 'dead'" in lock.restore_any(project)
    assert (project / "params.yaml").read_text() == original
    assert not (project / BACKUP_FILE).exists()


def test_a_foreign_backup_file_is_refused(tmp_path):
    project = _project(tmp_path)
    (project / BACKUP_FILE).write_text("something: else\n")
    with pytest.raises(ValueError, match="not a params backup"):
        lock.restore_any(project)
