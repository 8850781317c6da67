"""The trust boundary: the files deploy registered are the files loaded. Every file of the
logged model has its SHA-256 on the registry version; a changed, added or removed file, altered
tags, or a version without the digests is refused before anything in the download is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy.serving import integrity
from nextbuy.serving.bundle import ServingBundle
from tests.serving.helpers import assert_same_top_k, retrieval_settings

REGISTERED_RETRIEVAL = retrieval_settings(kind="flat", candidates=8)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, new_mlflow_store):
    """A synthetic bundle logged and registered by ``deploy.log_serving_model`` (v1, alias
    champion) in a throw-away sqlite + file store; yields the file store folder of the model.
    Tests that tamper with a file put it back."""
    import mlflow

    from nextbuy.bench.serving_fixtures import mlflow_store, register_champion, write_bundle_files

    root = tmp_path_factory.mktemp("trust")
    uri = new_mlflow_store(root / "mlflow.db")
    files = write_bundle_files(
        root / "bundle", n_products=40, d=4, n_fit=2000, retrieval=REGISTERED_RETRIEVAL
    )
    assert register_champion(files, root, uri) == "1"
    with mlflow_store(uri):
        mlflow.set_tracking_uri(uri)
        yield next((root / "mlartifacts").rglob("MLmodel")).parent


CHAMPION_URI = "models:/nextbuy@champion"


@pytest.fixture
def tamper(registered):
    """``tamper(relpath, data=None)``: change a stored file of the registered model (append
    bytes, or write ``data``); put back after the test."""
    saved: dict = {}

    def change(rel: str, data: bytes | None = None) -> None:
        path = registered / rel
        saved.setdefault(path, path.read_bytes() if path.exists() else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(saved[path] + b"\n" if data is None else data)

    yield change
    for path, data in saved.items():
        path.unlink(missing_ok=True) if data is None else path.write_bytes(data)


def test_registration_records_the_sha256_of_every_file_of_the_logged_model(registered):
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version("nextbuy", "1").tags
    recorded = integrity.parse_manifest(tags[integrity.ARTIFACT_MANIFEST])
    for rel in (
        "MLmodel",
        "python_model.pkl",
        "artifacts/moments.npz",
        "artifacts/thresholds.json",
        "artifacts/retrieval.json",
    ):
        assert recorded[rel] == integrity.file_sha256(registered / rel), rel
    assert "code/nextbuy/serving/model.py" in recorded  # the code unpickling imports
    assert recorded == integrity.model_file_digests(registered)
    assert tags[integrity.ARTIFACT_SHA256] == integrity.manifest_digest(recorded)
    assert integrity.verify_model_uri(CHAMPION_URI) == ("1", tags[integrity.ARTIFACT_SHA256])


def test_untampered_registered_model_loads_on_every_path(registered, caplog):
    import mlflow

    bundle = ServingBundle.from_model_uri(CHAMPION_URI)
    assert bundle.n_products == 40
    assert bundle.retrieval == REGISTERED_RETRIEVAL
    served = mlflow.pyfunc.load_model(CHAMPION_URI)  # load_context checks too
    assert len(served.predict(pd.DataFrame({"source_id": [1], "candidate_id": [2]}))) == 1
    assert "NOT verified" not in caplog.text
    # The served model retrieves top-K with the settings registered with it.
    recs = served.predict(pd.DataFrame({"source_id": [1, 10**6]}), params={"top_k": 5})
    assert served.unwrap_python_model().bundle.retrieval == REGISTERED_RETRIEVAL
    assert_same_top_k(recs, bundle.top_k(np.array([1, 10**6]), 5, exact=True))


@pytest.mark.parametrize(
    "rel",
    [
        "python_model.pkl",
        "MLmodel",
        "artifacts/thresholds.json",
        "artifacts/retrieval.json",
        "code/nextbuy/serving/model.py",
    ],
)
def test_a_changed_file_is_refused_before_anything_is_read(registered, tamper, monkeypatch, rel):
    """One byte appended (the thresholds still parse: only the digest sees it)."""
    from nextbuy.mlops.io import DataError

    tamper(rel)

    def never(*args, **kwargs):
        raise AssertionError("read a file of a model that failed verification")

    monkeypatch.setattr(ServingBundle, "load", never)
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_uri(CHAMPION_URI)
    assert err.value.path == f"{CHAMPION_URI} ({rel})"
    assert "changed (sha256" in err.value.message
    assert "in v1" in err.value.message
    with pytest.raises(DataError, match="refusing to load"):
        integrity.verify_model_uri("models:/nextbuy/1")


def test_an_added_or_removed_file_is_refused_naming_it(registered, tamper):
    from nextbuy.mlops.io import DataError

    tamper("code/nextbuy/sitecustomize.py", b"import os\n")
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_uri(CHAMPION_URI)
    assert err.value.path == f"{CHAMPION_URI} (code/nextbuy/sitecustomize.py)"
    assert "added since" in err.value.message
    (registered / "code/nextbuy/sitecustomize.py").unlink()
    tamper("input_example.json")
    (registered / "input_example.json").unlink()
    with pytest.raises(DataError, match="missing") as err:
        ServingBundle.from_model_uri(CHAMPION_URI)
    assert err.value.path == f"{CHAMPION_URI} (input_example.json)"


def test_the_served_model_and_a_downloaded_dir_refuse_changed_files(registered, tamper, tmp_path):
    """``mlflow.pyfunc.load_model`` (what ``mlflow models serve`` does): load_context checks
    after unpickling; ``from_model_dir`` on a registry download (``nextbuy batch-topk``)."""
    import mlflow

    from nextbuy.mlops.io import DataError

    tamper("artifacts/moments.npz")
    with pytest.raises(DataError, match=r"artifacts/moments.npz"):
        mlflow.pyfunc.load_model(CHAMPION_URI)
    downloaded = mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path))
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_dir(downloaded)
    assert err.value.path == "models:/nextbuy/1 (artifacts/moments.npz)"


def test_altered_registry_tags_are_refused_without_trusting_the_manifest(registered, tamper):
    from mlflow import MlflowClient

    from nextbuy.mlops.io import DataError

    client = MlflowClient()
    manifest = client.get_model_version("nextbuy", "1").tags[integrity.ARTIFACT_MANIFEST]
    tamper("artifacts/calibration.json")
    forged = integrity.manifest_text(integrity.model_file_digests(registered))
    client.set_model_version_tag("nextbuy", "1", integrity.ARTIFACT_MANIFEST, forged)
    try:
        with pytest.raises(DataError, match="does not match 'artifact_sha256'"):
            ServingBundle.from_model_uri(CHAMPION_URI)
    finally:
        client.set_model_version_tag("nextbuy", "1", integrity.ARTIFACT_MANIFEST, manifest)


def test_a_version_without_the_digests_deploy_records_is_refused_saying_how_to_re_register_it(
    registered, monkeypatch
):
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from nextbuy.cli import app
    from nextbuy.mlops.io import DataError
    from nextbuy.serving.readers import REREGISTER

    client = MlflowClient()
    client.create_registered_model("nextbuy-undigested")
    client.create_model_version("nextbuy-undigested", source=registered.as_uri())  # no digest tags
    uri = "models:/nextbuy-undigested/1"
    missing = "no 'artifact_sha256' or 'artifact_manifest' tag (the file digests deploy records)"
    line = f"{uri}: {missing}; {REREGISTER}"
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_uri(uri)
    assert str(err.value) == line
    with pytest.raises(DataError) as err:
        integrity.verify_model_uri(uri)
    assert str(err.value) == line

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # what the command sets
    result = CliRunner().invoke(app, ["verify-model", uri])
    assert result.exit_code == 1
    assert REREGISTER in " ".join(result.output.split())  # rich wraps lines


def test_verify_model_command(registered, tamper, monkeypatch):
    from typer.testing import CliRunner

    from nextbuy.cli import app

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # what the command sets
    ok = CliRunner().invoke(app, ["verify-model", CHAMPION_URI])
    assert ok.exit_code == 0
    assert "every file matches" in ok.output
    assert "(v1)" in ok.output
    tamper("python_model.pkl")
    bad = CliRunner().invoke(app, ["verify-model", CHAMPION_URI])
    assert bad.exit_code == 1, bad.output
    assert "python_model.pkl" in bad.output, bad.output


def test_bytecode_python_wrote_into_the_store_neither_blocks_nor_reaches_a_registry_load(
    registered, tmp_path, monkeypatch
):
    """Loading the model in place from a file store (``mlflow.pyfunc.load_model`` of models:/ on
    mlartifacts/) imports its code there, and Python writes __pycache__ beside it: the champion is
    not tampered with for that; the caches stay out of the checked download."""
    import shutil

    from typer.testing import CliRunner

    from nextbuy.cli import app

    cache = registered / "code" / "nextbuy" / "__pycache__"
    cache.mkdir()
    (cache / "__init__.cpython-311.pyc").write_bytes(b"bytecode")
    try:
        assert ServingBundle.from_model_uri(CHAMPION_URI).n_products == 40
        downloaded, _, digest = integrity.download_checked(CHAMPION_URI, tmp_path)
        assert digest is not None
        assert not list(downloaded.rglob("__pycache__"))
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # what the command sets
        assert CliRunner().invoke(app, ["verify-model", CHAMPION_URI]).exit_code == 0
        assert (cache / "__init__.cpython-311.pyc").is_file()  # the store is read, never changed
    finally:
        shutil.rmtree(cache)


def test_bytecode_written_by_importing_the_served_code_is_ignored_only_after_the_import(registered, tmp_path):
    """``mlflow models serve`` imports code/nextbuy before load_context checks, and Python may
    write __pycache__ there; before any import (our loaders) such a file is a planted one."""
    import mlflow

    from nextbuy.mlops.io import DataError

    downloaded = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path)))
    pyc = downloaded / "code/nextbuy/serving/__pycache__/model.cpython-311.pyc"
    pyc.parent.mkdir()
    pyc.write_bytes(b"bytecode")
    integrity.verify_served_files(downloaded / "artifacts" / "moments.npz")  # load_context: fine
    with pytest.raises(DataError, match="added since"):
        ServingBundle.from_model_dir(downloaded)
