"""deploy stage cores: fresh evaluation rows with delay-corrected labels, the input example,
and judging candidate vs champion on the same rows (the gate itself: tests/domain/test_gate.py);
publishing all-or-nothing (a deploy dying after registration leaves a version readers ignore
and the next deploy orphans), with the SHA-256 of every file of the logged model on the version
and in the blessing (loads checked against it: tests/serving/test_integrity.py); refusing to
re-seed a first champion when an earlier release is on record (registry moves:
tests/mlops/test_registry.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy import paths
from nextbuy.bench.serving_fixtures import load_bundle, mlflow_store, stored_files, write_bundle_files
from nextbuy.config import load_section
from nextbuy.domain import catalogue, gate, split
from nextbuy.mlops import io, registry, schemas, tracking
from nextbuy.presets import params_with
from nextbuy.serving import ServingBundle, integrity
from nextbuy.stages import deploy
from tests.conftest import ROOT
from tests.helpers import config

# The candidate's store: 300 products; OTHER: the tag of a 5,000-product catalogue.
STORE_PRODUCTS = pd.DataFrame(
    {
        "product_id": np.arange(300, dtype=np.int64),
        "product_key": [f"p{i}" for i in range(300)],
        "category": np.arange(300, dtype=np.int64) % 7,
        "price": 1.0,
    }
)
THIS, OTHER = catalogue.identity(STORE_PRODUCTS), "5000:aaaaaaaaaaaaaaaa"
SPLIT = {"test_share": 0.15, "calib_share": 0.15, "seed": 0}


def store_impressions(days: int = 20, first_day: str = "2026-03-01") -> pd.DataFrame:
    """Four impressions per source product and day, with the session split of ``SPLIT``."""
    shown = pd.date_range(first_day, periods=days, freq="D").repeat(300 * 4) + pd.Timedelta(hours=5)
    source = np.tile(np.arange(300).repeat(4), days)
    keys = STORE_PRODUCTS["product_key"].to_numpy()[source]
    return pd.DataFrame(
        {
            "impression_id": np.arange(len(source)),
            "source_id": source,
            "shown_id": (source + 1) % 300,
            "shown_at": shown,
            "split": split.assign_split(keys, shown, **SPLIT),
        }
    )


def training_tag(impressions: pd.DataFrame, snapshot: str, **split_changes) -> str:
    learned = impressions[impressions["split"] != "test"]
    record = split.training_record(learned, pd.Timestamp(snapshot), {**SPLIT, **split_changes})
    return json.dumps(record)


# The gate's test rows: the test split of 20 days; a champion trained on the first 19 days
# with the same split settings learned none of them.
STORE_IMPRESSIONS = store_impressions()
TEST_ROWS = STORE_IMPRESSIONS[STORE_IMPRESSIONS["split"] == "test"].reset_index(drop=True)
CLEAN = training_tag(STORE_IMPRESSIONS[STORE_IMPRESSIONS["shown_at"] < "2026-03-20"], "2026-03-20")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    good = load_bundle(write_bundle_files(root / "good", n_products=60, d=8, seed=0, n_fit=4000))
    other = load_bundle(write_bundle_files(root / "other", n_products=60, d=8, seed=5, n_fit=4000))
    return good, other


def rows_scored_by(bundle, n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Test rows whose hard labels follow the bundle's calibrated probability."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"source_id": rng.integers(0, 60, n), "shown_id": rng.integers(0, 60, n)})
    prob = bundle.score(rows["source_id"], rows["shown_id"])["prob_calibrated"].to_numpy()
    return rows, (rng.uniform(size=n) < prob).astype(float)


def test_evaluation_rows_are_the_test_split_with_delay_corrected_labels():
    weighted = pd.DataFrame(
        {
            "split": ["train", "test", "calib", "test", "test"],
            "source_id": [0, 1, 2, 3, 4],
            "label": np.array([1, 1, 0, 0, 0], dtype=np.int8),
            "p_flip": [0.0, 0.0, 0.7, 0.25, 0.0],
        }
    )
    rows, label = deploy.evaluation_rows(weighted)
    assert rows["source_id"].tolist() == [1, 3, 4]
    assert rows.index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(label, [1.0, 0.25, 0.0])


def test_input_example_is_five_valid_pairs_and_deterministic():
    example = deploy.input_example(7)
    assert list(example.columns) == ["source_id", "candidate_id"]
    assert len(example) == 5
    assert ((example >= 0) & (example < 7)).all().all()
    pd.testing.assert_frame_equal(example, deploy.input_example(7))


def test_serving_requirements_pin_every_serving_package():
    pins = deploy.serving_requirements()
    assert [p.split("==")[0] for p in pins] == list(deploy.SERVING_PACKAGES)
    assert all(p.split("==")[1] for p in pins)


def test_first_candidate_is_judged_without_a_champion(bundles):
    good, _ = bundles
    rows, label = rows_scored_by(good)
    blessing = deploy.judge(good, None, rows, label, config("deploy", min_recall=0.0))
    assert blessing["champion"] is None
    assert blessing["comparison"] is None
    assert blessing["champion_comparable"] is None
    assert blessing["not_comparable_reason"] is None
    assert blessing["passed"]
    assert blessing["reasons"] == []
    assert blessing["candidate"]["rows"] == len(rows)
    assert blessing["candidate"]["auc"] > 0.6


def test_candidate_equal_to_champion_passes_with_zero_difference(bundles):
    good, _ = bundles
    rows, label = rows_scored_by(good)
    cfg = config("deploy", min_recall=0.0, bootstrap_samples=50)
    blessing = deploy.judge(good, good, rows, label, cfg)
    assert blessing["passed"], blessing["reasons"]
    assert blessing["candidate"] == blessing["champion"]
    assert blessing["champion_comparable"] is True
    assert set(blessing["comparison"]) == set(cfg.compare_metrics)
    assert all(ci["diff"] == ci["lo"] == ci["hi"] == 0.0 for ci in blessing["comparison"].values())


def test_unrelated_candidate_is_refused_against_the_champion_that_fits_the_labels(bundles):
    good, other = bundles
    rows, label = rows_scored_by(good)
    cfg = config("deploy", min_recall=0.0, min_auc=0.0, max_calibration_error=1.0, bootstrap_samples=50)
    blessing = deploy.judge(other, good, rows, label, cfg)
    assert not blessing["passed"]
    assert blessing["comparison"]["auc"]["hi"] < 0
    assert any(r.startswith("auc") and "vs champion" in r for r in blessing["reasons"])


class Unscorable:
    """A champion that must not be scored."""

    def score(self, *args):
        raise AssertionError("a champion of another catalogue was scored")


def test_a_champion_of_another_catalogue_is_not_compared_and_the_candidate_is_judged_on_floors(bundles):
    good, other = bundles
    rows, label = rows_scored_by(good)
    cfg = config("deploy", min_recall=0.0, min_auc=0.0, max_calibration_error=1.0, bootstrap_samples=50)
    # `other` is refused against `good` as a comparable champion (above); of another catalogue,
    # the champion is never scored and the floors alone decide.
    why = gate.champion_incomparable("1", OTHER, STORE_PRODUCTS)
    blessing = deploy.judge(other, Unscorable(), rows, label, cfg, why)
    assert blessing["passed"]
    assert blessing["reasons"] == []
    assert blessing["champion"] is None
    assert blessing["comparison"] is None
    assert blessing["champion_comparable"] is False
    assert blessing["not_comparable_reason"] == why
    floors = config("deploy", min_auc=0.99, bootstrap_samples=50)
    refused = deploy.judge(other, Unscorable(), rows, label, floors, why)
    assert not refused["passed"]
    assert all("floor" in r for r in refused["reasons"])


# --- publishing: registered with its verdict, complete last -----------------------------


@pytest.fixture
def store(tmp_path, monkeypatch, new_mlflow_store):
    """A project dir (the cwd) with its own MLflow store; a client on it. Process state put back."""
    for key in (tracking.RUN_CONTEXT_ENV, deploy.FIRST_RELEASE_ENV):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)  # recorded: restored (absent) afterwards
    monkeypatch.chdir(tmp_path)
    from mlflow.tracking import MlflowClient

    uri = new_mlflow_store(tmp_path / "mlflow.db")
    with mlflow_store(uri):
        tracking.configure(tmp_path)
        yield MlflowClient()


def a_blessing(passed: bool) -> dict:
    return {
        "model_name": "nextbuy",
        "catalogue": "60:0123456789abcdef",
        "passed": passed,
        "reasons": [] if passed else ["auc 0.51 < 0.6"],
        "candidate": {"auc": 0.7, "ece": None},
        "champion": None,
        "lineage": {"git_commit": "abc", "params": {"deploy": {"min_auc": 0.6}}},
    }


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
    blessing = a_blessing(True)
    with mlflow.start_run():
        assert deploy.publish(store, good, blessing) == "1"
    tags = store.get_model_version("nextbuy", "1").tags
    assert tags[registry.COMPLETE] == "true"
    assert tags[registry.CATALOGUE] == "60:0123456789abcdef"  # what the gate and the monitor check
    assert registry.catalogue_of(store, "nextbuy", "1") == "60:0123456789abcdef"
    # The files as logged: digest on the version (the anchor), every file in the blessing.
    assert blessing["artifacts"]["artifact_sha256"] == tags["artifact_sha256"]
    assert {"MLmodel", "python_model.pkl", "artifacts/moments.npz"} <= set(blessing["artifacts"]["files"])
    assert "artifacts/retrieval.json" in blessing["artifacts"]["files"]  # top-K settings, digest recorded
    assert ServingBundle.from_model_uri("models:/nextbuy/1").retrieval == good.retrieval
    assert integrity.manifest_digest(blessing["artifacts"]["files"]) == tags["artifact_sha256"]
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
        deploy.publish(store, good, a_blessing(False))
    tags = store.get_model_version("nextbuy", "2").tags
    # Created with its verdict in the same write: never a version without tags.
    assert tags["passed"] == "false"
    assert tags["reasons"] == "auc 0.51 < 0.6"
    assert tags[registry.COMPLETE] == "false"
    assert registry.has_release(store, "nextbuy")
    assert registry.released_version(store, "nextbuy", registry.CHAMPION) == "1"
    deploy.prepare_registry(store, "nextbuy")  # the next deploy
    assert store.get_model_version("nextbuy", "2").tags[registry.ORPHANED] == "true"


# --- no silent re-seed of a lost registry ---------------------------------------------


def write_blessing(version: int | None, model_name: str = "nextbuy") -> None:
    paths.BLESSING.parent.mkdir(parents=True, exist_ok=True)
    paths.BLESSING.write_text(json.dumps({"version": version, "model_name": model_name}))


def write_lock(model_name: str = "nextbuy") -> None:
    stage = {"cmd": "nextbuy deploy", "params": {"params.yaml": {"deploy": {"model_name": model_name}}}}
    with open("dvc.lock", "w") as f:
        yaml.safe_dump({"schema": "2.0", "stages": {"deploy": stage}}, f)


def test_a_first_release_with_nothing_on_record_goes_ahead(store):
    deploy.check_first_release(store, "nextbuy")
    write_blessing(None)  # a blessing without a version is no release
    deploy.check_first_release(store, "nextbuy")


@pytest.mark.parametrize("evidence", ["blessing", "lock"])
def test_a_lost_registry_with_an_earlier_release_on_record_is_refused(store, evidence):
    write_blessing(7) if evidence == "blessing" else write_lock()
    with pytest.raises(io.DataError) as err:
        deploy.check_first_release(store, "nextbuy")
    message = err.value.message
    assert ("blessing.json records v7" if evidence == "blessing" else "dvc.lock records") in message
    assert "--first-release" in message
    assert deploy.FIRST_RELEASE_ENV in message
    assert "mlflow.db" in message  # the store it looked in


def test_first_release_env_lets_it_through(store, monkeypatch):
    write_lock()
    monkeypatch.setenv(deploy.FIRST_RELEASE_ENV, "1")
    deploy.check_first_release(store, "nextbuy")
    monkeypatch.setenv(deploy.FIRST_RELEASE_ENV, "0")
    with pytest.raises(io.DataError):
        deploy.check_first_release(store, "nextbuy")


def test_evidence_of_another_model_or_a_store_with_a_release_is_no_reason_to_refuse(store):
    write_blessing(3, model_name="other")
    write_lock(model_name="other")
    deploy.check_first_release(store, "nextbuy")
    write_blessing(3)
    store.create_registered_model("nextbuy")
    store.create_model_version("nextbuy", "file:///m", tags={"passed": "true", "complete": "true"})
    deploy.check_first_release(store, "nextbuy")


def test_a_store_holding_only_orphans_has_no_release(store):
    write_lock()
    store.create_registered_model("nextbuy")
    store.create_model_version("nextbuy", "file:///m", tags={"passed": "true", "complete": "false"})
    with pytest.raises(io.DataError):
        deploy.prepare_registry(store, "nextbuy")
    assert store.get_model_version("nextbuy", "1").tags[registry.ORPHANED] == "true"


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_presets_first_release_is_not_blocked_by_the_default_stores_record(store, preset):
    """Each preset registers under its own deploy.model_name, so the default store's release
    on record (blessing.json, dvc.lock) neither blocks its first release nor is re-seeded."""
    default = load_section("deploy", ROOT / "params.yaml").model_name
    own = params_with(preset, ROOT / "params.yaml")["deploy"]["model_name"]
    assert own != default
    write_blessing(1, model_name=default)
    write_lock(model_name=default)
    deploy.check_first_release(store, own)
    with pytest.raises(io.DataError):
        deploy.check_first_release(store, default)


# --- the champion the gate sees: only one of the candidate's catalogue -----------------


def a_champion(store, tags: dict[str, str]) -> str:
    """A released champion of model 'nextbuy' (a bare registry entry) with ``tags``."""
    store.create_registered_model("nextbuy")
    version = store.create_model_version(
        "nextbuy", "file:///m", tags={"passed": "true", "complete": "true", **tags}
    ).version
    store.set_registered_model_alias("nextbuy", registry.CHAMPION, str(version))
    return str(version)


def never_downloaded(*args):
    raise AssertionError("a champion of another catalogue was downloaded")


def test_no_champion(store):
    none = deploy.Champion(None, None, None, None)
    assert deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS) == none


def test_a_champion_of_another_catalogue_is_reported_and_never_loaded(store, monkeypatch, caplog):
    version = a_champion(store, {registry.CATALOGUE: OTHER})
    monkeypatch.setattr(registry, "load_version", never_downloaded)
    champion = deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS)
    assert champion.version == version
    assert champion.catalogue == OTHER
    assert champion.bundle is None
    assert champion.incomparable == gate.champion_incomparable(version, OTHER, STORE_PRODUCTS)
    assert "not comparable" in caplog.text
    assert "300 products" in caplog.text


def test_a_champion_registered_before_catalogues_were_recorded_is_not_comparable(store, monkeypatch):
    a_champion(store, {})
    monkeypatch.setattr(registry, "load_version", never_downloaded)
    champion = deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS)
    assert champion.bundle is None
    assert "unknown catalogue" in champion.incomparable


def test_a_champion_of_the_same_catalogue_is_loaded_for_the_comparison(store, monkeypatch):
    version = a_champion(store, {registry.CATALOGUE: THIS, registry.TRAINING_DATA: CLEAN})
    monkeypatch.setattr(registry, "load_version", lambda name, v: ("bundle", name, v))
    champion = deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS)
    assert champion == deploy.Champion(version, THIS, ("bundle", "nextbuy", version), None, 0)


@pytest.mark.parametrize("changed", [{"seed": 1}, {"test_share": 0.1}])
def test_a_champion_that_learned_from_the_test_rows_is_not_compared(store, monkeypatch, changed):
    """Trained with other split settings, the champion learned from sessions that are test
    now: scoring it on them would favour it, so the gate refuses the comparison and says why."""
    earlier = STORE_IMPRESSIONS[STORE_IMPRESSIONS["shown_at"] < "2026-03-20"]
    resplit = earlier.assign(
        split=split.assign_split(
            STORE_PRODUCTS["product_key"].to_numpy()[earlier["source_id"]],
            earlier["shown_at"],
            **{**SPLIT, **changed},
        )
    )
    record = training_tag(resplit, "2026-03-20", **changed)
    a_champion(store, {registry.CATALOGUE: THIS, registry.TRAINING_DATA: record})
    monkeypatch.setattr(registry, "load_version", never_downloaded)
    champion = deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS)
    # Exactly the test rows of the first 19 days that its split put in train or calib.
    learned = TEST_ROWS.merge(resplit, on="impression_id", suffixes=("", "_then"))
    expected = int((learned["split_then"] != "test").sum())
    assert 0 < champion.learned == expected < len(TEST_ROWS)
    assert champion.bundle is None
    assert f"{expected} of the {len(TEST_ROWS)} test rows were in its training data" in champion.incomparable


def test_a_champion_recording_no_training_data_is_not_compared(store, monkeypatch):
    a_champion(store, {registry.CATALOGUE: THIS})
    monkeypatch.setattr(registry, "load_version", never_downloaded)
    champion = deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS)
    assert champion.learned is None
    assert "records no training data" in champion.incomparable


def test_a_champion_of_the_store_before_its_latest_launches_is_compared(store, monkeypatch):
    """The champion knew the first 250 products; 50 launched since (ids 250..299)."""
    version = a_champion(
        store,
        {registry.CATALOGUE: catalogue.identity(STORE_PRODUCTS.iloc[:250]), registry.TRAINING_DATA: CLEAN},
    )
    monkeypatch.setattr(registry, "load_version", lambda name, v: ("bundle", name, v))
    champion = deploy.current_champion(store, "nextbuy", STORE_PRODUCTS, TEST_ROWS)
    assert champion.incomparable is None
    assert champion.bundle == ("bundle", "nextbuy", version)


def test_the_store_products_are_the_ingested_ones(store):
    products = pd.DataFrame(
        {
            "product_id": np.arange(4, dtype=np.int64),
            "product_key": ["a", "b", "c", "d"],
            "category": np.array([0, 1, 1, -1], dtype=np.int64),
            "price": [1.0, 2.0, np.nan, 4.0],
        }
    )
    io.write_table(products, paths.PRODUCTS, schemas.PRODUCTS)
    assert catalogue.identity(deploy.store_products()) == catalogue.identity(products)
    assert catalogue.identity(deploy.store_products()).startswith("4:")
