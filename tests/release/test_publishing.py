"""Publishing a release: the candidate registered with its verdict in one write and
``complete`` last (a deploy dying after registration leaves a version readers ignore and the
next deploy orphans), the SHA-256 of every file of the logged model on the version and in the
release record (loads checked against it: tests/mlops/test_serving.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, stored_files, write_bundle_files
from nextbuy.release import Release, first_release, publishing, registry
from nextbuy.serving import ServingBundle, integrity
from tests.helpers import config
from tests.release.records import judged_release


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    good = load_bundle(
        write_bundle_files(tmp_path_factory.mktemp("good"), n_products=60, d=8, seed=0, n_fit=4000)
    )
    return good, None


def test_input_example_is_five_valid_pairs_and_deterministic():
    example = publishing.input_example(7)
    assert list(example.columns) == ["source_id", "candidate_id"]
    assert len(example) == 5
    assert ((example >= 0) & (example < 7)).all().all()
    pd.testing.assert_frame_equal(example, publishing.input_example(7))


def test_serving_requirements_pin_every_serving_package():
    pins = publishing.serving_requirements()
    assert [p.split("==")[0] for p in pins] == list(publishing.SERVING_PACKAGES)
    assert all(p.split("==")[1] for p in pins)


def a_release(passed: bool) -> Release:
    return judged_release(passed, lineage={"git_commit": "abc", "params": {"deploy": {"min_auc": 0.6}}})


def test_a_deploy_dying_after_registration_leaves_a_version_readers_ignore_until_orphaned(
    store, tmp_path, monkeypatch
):
    import mlflow

    bundle = write_bundle_files(tmp_path / "bundle", n_products=60, d=8, seed=0, n_fit=2000)
    files = stored_files(bundle, tmp_path / "stored")  # what train and calibrate write
    for name, path in (("GNN_MOMENTS", "moments"), ("CALIBRATION_MODEL", "calibration")):
        monkeypatch.setattr(paths, name, getattr(files, path))
    monkeypatch.setattr(paths, "THRESHOLDS_MODEL", files.thresholds)
    monkeypatch.setattr(paths, "SERVED_RANKING", files.ranking)
    good = load_bundle(files).with_retrieval(config("deploy.retrieval", candidates=123))  # as run() sets it
    with mlflow.start_run():
        release = publishing.publish(store, good, a_release(True))
    assert release.version == "1"
    assert release.action is not None
    tags = store.get_model_version("nextbuy", "1").tags
    assert tags[registry.COMPLETE] == "true"
    assert tags[registry.CATALOGUE] == "60:0123456789abcdef"  # what the gate and the monitor check
    assert registry.catalogue_of(store, "nextbuy", "1") == "60:0123456789abcdef"
    # The files as logged: digest on the version (the anchor), every file in the release record.
    assert release.artifacts["artifact_sha256"] == tags["artifact_sha256"]
    assert {"MLmodel", "python_model.pkl", "artifacts/moments.npz"} <= set(release.artifacts["files"])
    assert "artifacts/retrieval.json" in release.artifacts["files"]  # top-K settings, digest recorded
    assert ServingBundle.from_model_uri("models:/nextbuy/1").retrieval == good.retrieval
    assert integrity.manifest_digest(release.artifacts["files"]) == tags["artifact_sha256"]
    assert integrity.verify_model_uri("models:/nextbuy/1") == ("1", tags["artifact_sha256"])
    # No input schema: MLflow hands predict the columns as sent (extra ones are refused there,
    # text/csv works); top_k keeps its declared type and default.
    signature = mlflow.models.get_model_info("models:/nextbuy/1").signature
    assert signature.inputs is None
    assert [(p.name, p.default) for p in signature.params.params] == [("top_k", 0)]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("kill")  # dies between registration and the alias moves

    monkeypatch.setattr(registry, "release", killed)
    with pytest.raises(KeyboardInterrupt), mlflow.start_run():
        publishing.publish(store, good, a_release(False).model_copy(update={"champion_version": "1"}))
    tags = store.get_model_version("nextbuy", "2").tags
    # Created with its verdict in the same write: never a version without tags.
    assert tags["passed"] == "false"
    assert tags["reasons"] == "auc 0.51 < 0.6"
    assert tags[registry.COMPLETE] == "false"
    assert registry.has_release(store, "nextbuy")
    assert registry.released_version(store, "nextbuy", registry.CHAMPION) == "1"
    first_release.prepare_registry(store, "nextbuy")  # the next deploy
    assert store.get_model_version("nextbuy", "2").tags[registry.ORPHANED] == "true"


def test_a_candidate_whose_champion_was_replaced_while_it_was_judged_is_judged_again(
    store, tmp_path, monkeypatch
):
    """Two deploys at once, both judged against v1: this one registers v2, and the other
    crowns v3 before v2's aliases move. v2 is not released on its stale verdict: it is judged
    again against v3, its verdict tags say so, and v3 stays 'previous' behind it."""
    import mlflow

    files = stored_files(
        write_bundle_files(tmp_path / "bundle", n_products=60, d=8, seed=0, n_fit=2000), tmp_path / "stored"
    )
    for name, path in (("GNN_MOMENTS", "moments"), ("CALIBRATION_MODEL", "calibration")):
        monkeypatch.setattr(paths, name, getattr(files, path))
    monkeypatch.setattr(paths, "THRESHOLDS_MODEL", files.thresholds)
    monkeypatch.setattr(paths, "SERVED_RANKING", files.ranking)
    good = load_bundle(files).with_retrieval(config("deploy.retrieval", candidates=123))
    with mlflow.start_run():
        publishing.publish(store, good, a_release(True))  # v1, the champion both are judged against
    recorded = publishing.recorded_artifacts

    def the_other_deploy_crowns_v3_first(client, name, version):
        other = store.create_model_version(name, "file:///m", tags={registry.PASSED: "true"}).version
        registry.release(store, name, str(other), True)
        return recorded(client, name, version)

    monkeypatch.setattr(publishing, "recorded_artifacts", the_other_deploy_crowns_v3_first)
    against_v1 = a_release(True).model_copy(update={"champion_version": "1", "champion": {"auc": 0.6}})
    judged_again = []

    def judge_again():
        champion = registry.released_version(store, "nextbuy", registry.CHAMPION)
        judged_again.append(champion)
        return against_v1.model_copy(update={"champion_version": champion, "champion": {"auc": 0.65}})

    with mlflow.start_run():
        release = publishing.publish(store, good, against_v1, judge_again=judge_again)
    assert judged_again == ["3"]
    assert (release.version, release.champion_version) == ("2", "3")
    verdict = registry.json_tag(store.get_model_version("nextbuy", "2").tags, registry.GATE)
    assert verdict["champion"] == {"auc": 0.65}
    assert registry.alias_version(store, "nextbuy", registry.CHAMPION) == "2"
    assert registry.alias_version(store, "nextbuy", registry.PREVIOUS) == "3"
