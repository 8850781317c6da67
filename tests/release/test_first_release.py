"""No silent re-seed of a lost registry: a first release is refused while the release record
(blessing.json) or dvc.lock says an earlier deploy released the model, unless asked for."""

from __future__ import annotations

import json

import pytest
import yaml

from nextbuy import paths
from nextbuy.config import DeployConfig, load_section
from nextbuy.mlops import io
from nextbuy.presets import params_with
from nextbuy.release import first_release, registry
from tests.conftest import ROOT
from tests.release.records import judged_release


def write_blessing(version: int | None, model_name: str = "nextbuy") -> None:
    """The release record a deploy of ``version`` leaves (None: judged, never published)."""
    release = judged_release(True, model_name=model_name)
    if version is not None:
        release = release.published(str(version), {}, f"v{version} is champion")
    paths.BLESSING.parent.mkdir(parents=True, exist_ok=True)
    paths.BLESSING.write_text(json.dumps(release.to_json()))


def write_lock(model_name: str = "nextbuy") -> None:
    stage = {"cmd": "nextbuy deploy", "params": {"params.yaml": {"deploy": {"model_name": model_name}}}}
    with open("dvc.lock", "w") as f:
        yaml.safe_dump({"schema": "2.0", "stages": {"deploy": stage}}, f)


def test_a_first_release_with_nothing_on_record_goes_ahead(store):
    first_release.check_first_release(store, "nextbuy")
    write_blessing(None)  # a blessing without a version is no release
    first_release.check_first_release(store, "nextbuy")


@pytest.mark.parametrize("evidence", ["blessing", "lock"])
def test_a_lost_registry_with_an_earlier_release_on_record_is_refused(store, evidence):
    write_blessing(7) if evidence == "blessing" else write_lock()
    with pytest.raises(io.DataError) as err:
        first_release.check_first_release(store, "nextbuy")
    message = err.value.message
    assert ("blessing.json records v7" if evidence == "blessing" else "dvc.lock records") in message
    assert "--first-release" in message
    assert first_release.FIRST_RELEASE_ENV in message
    assert "mlflow.db" in message  # the store it looked in


def test_first_release_env_lets_it_through(store, monkeypatch):
    write_lock()
    monkeypatch.setenv(first_release.FIRST_RELEASE_ENV, "1")
    first_release.check_first_release(store, "nextbuy")
    monkeypatch.setenv(first_release.FIRST_RELEASE_ENV, "0")
    with pytest.raises(io.DataError):
        first_release.check_first_release(store, "nextbuy")


def test_evidence_of_another_model_or_a_store_with_a_release_is_no_reason_to_refuse(store):
    write_blessing(3, model_name="other")
    write_lock(model_name="other")
    first_release.check_first_release(store, "nextbuy")
    write_blessing(3)
    store.create_registered_model("nextbuy")
    store.create_model_version("nextbuy", "file:///m", tags={"passed": "true", "complete": "true"})
    first_release.check_first_release(store, "nextbuy")


def test_a_store_holding_only_orphans_has_no_release(store):
    write_lock()
    store.create_registered_model("nextbuy")
    store.create_model_version("nextbuy", "file:///m", tags={"passed": "true", "complete": "false"})
    with pytest.raises(io.DataError):
        first_release.prepare_registry(store, "nextbuy")
    assert store.get_model_version("nextbuy", "1").tags[registry.ORPHANED] == "true"


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_presets_first_release_is_not_blocked_by_the_default_stores_record(store, preset):
    """Each preset registers under its own deploy.model_name, so the default store's release
    on record (blessing.json, dvc.lock) neither blocks its first release nor is re-seeded."""
    default = load_section(DeployConfig, ROOT / "params.yaml").model_name
    own = params_with(preset, ROOT / "params.yaml")["deploy"]["model_name"]
    assert own != default
    write_blessing(1, model_name=default)
    write_lock(model_name=default)
    first_release.check_first_release(store, own)
    with pytest.raises(io.DataError):
        first_release.check_first_release(store, default)
