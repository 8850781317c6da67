"""Serving bundle: scores, uncertainty, decisions, cold start, malformed requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.uncertainty import fit_bucket_calibration
from nextbuy.mlops.serving import ServingBundle, validate_request


@pytest.fixture
def bundle() -> ServingBundle:
    rng = np.random.default_rng(0)
    n, d = 50, 4
    moments = {
        "s_mean": rng.normal(size=(n, d)).astype(np.float32),
        "t_mean": rng.normal(size=(n, d)).astype(np.float32),
        "s_var": rng.uniform(0, 0.1, (n, d)).astype(np.float32),
        "t_var": rng.uniform(0, 0.1, (n, d)).astype(np.float32),
        "head_w": np.ones(d, np.float32),
        "head_b": np.zeros(1, np.float32),
    }
    score = rng.uniform(size=500)
    unc = rng.uniform(size=500)
    calibration = fit_bucket_calibration(score, unc, (rng.uniform(size=500) < score).astype(int), 2, 20)
    return ServingBundle.from_arrays(moments, calibration, Thresholds(np.array([0.5, 0.8]), 0.5))


def test_scores_known_pairs(bundle):
    out = bundle.score(np.array([0, 1, 2]), np.array([3, 4, 5]))
    assert out["score"].between(0, 1).all() and (out["uncertainty"] > 0).all()
    assert not out["cold_start"].any()
    expected = out["score"] >= np.array([0.5, 0.8])[out["bucket"]]
    assert (out["decision"] == expected).all()


def test_unknown_ids_fall_back_to_the_prior_with_more_uncertainty(bundle):
    known = bundle.score(np.arange(10), np.arange(10, 20))
    cold = bundle.score(np.full(10, 10**6), np.arange(10, 20))
    assert cold["cold_start"].all()
    assert cold["uncertainty"].mean() > known["uncertainty"].mean()
    neg = bundle.score(np.array([-1]), np.array([0]))
    assert neg["cold_start"].item()


@pytest.mark.parametrize(
    "frame, fragment",
    [
        (pd.DataFrame({"source_id": [1]}), "missing column"),
        (pd.DataFrame({"source_id": ["a"], "candidate_id": [1]}), "integer product ids"),
        (pd.DataFrame({"source_id": [1.5], "candidate_id": [1]}), "integer product ids"),
        (pd.DataFrame({"source_id": [], "candidate_id": []}), "empty request"),
        (pd.DataFrame({"source_id": np.zeros(11, int), "candidate_id": np.zeros(11, int)}), "limit is 10"),
    ],
)
def test_malformed_requests_say_what_to_send(frame, fragment):
    with pytest.raises(MlflowException, match=fragment) as err:
        validate_request(frame, max_rows=10)
    assert err.value.get_http_status_code() == 400


def test_top_k_matches_brute_force_ranking(bundle):
    k = 7
    recs = bundle.top_k(np.array([0, 3, 10**6]), k)
    assert len(recs) == 3 * k
    for source, got in recs.groupby("source_id", sort=False):
        candidates = np.arange(bundle.n_products)
        if source < bundle.n_products:
            candidates = candidates[candidates != source]
        pairs = bundle.score(np.full(candidates.size, source), candidates).assign(candidate_id=candidates)
        best = pairs.sort_values(["decision", "prob_calibrated", "score"], ascending=False).head(k)
        assert got["candidate_id"].tolist() == best["candidate_id"].tolist()
        np.testing.assert_allclose(got["score"], best["score"], rtol=1e-5)
        assert got["rank"].tolist() == list(range(1, k + 1))
        # Accepted candidates come first.
        assert got["decision"].is_monotonic_decreasing
    assert recs.loc[recs["source_id"] == 10**6, "cold_start"].all()
    assert 0 not in recs.loc[recs["source_id"] == 0, "candidate_id"].tolist()


def test_top_k_chunks_give_the_same_answer(bundle, monkeypatch):
    import nextbuy.mlops.serving as serving

    whole = bundle.top_k(np.arange(20), 5)
    monkeypatch.setattr(serving, "TOPK_CHUNK_CELLS", 60)  # 1 source per chunk
    pd.testing.assert_frame_equal(whole, bundle.top_k(np.arange(20), 5))


def test_empty_top_k_has_the_columns_and_types_of_a_full_one(bundle):
    full = bundle.top_k(np.array([0]), 3)
    for empty in (bundle.top_k(np.array([], dtype=np.int64), 3), bundle.top_k(np.array([0]), 0)):
        assert empty.empty
        assert empty.dtypes.to_dict() == full.dtypes.to_dict()


# --------------------------------------------------------------------------- bundle files


@pytest.fixture
def files(tmp_path):
    from nextbuy.serving_fixtures import write_bundle_files

    return write_bundle_files(tmp_path / "bundle", n_products=40, d=4, n_fit=2000)


def rewrite_moments(path, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


def load(files):
    return ServingBundle.load(files.moments, files.calibration, files.thresholds)


def test_bundle_files_load(files):
    bundle = load(files)
    assert bundle.n_products == 40
    assert bundle.thresholds.n_buckets == bundle.calibration.n_buckets == 3


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def npy_bytes(array) -> bytes:
    """A single array as .npy: what a moments.npz must not be."""
    import io as stdio

    buffer = stdio.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def nan_in(path, key):
    with np.load(path) as data:
        a = data[key].copy()
    a[0, 0] = np.nan
    rewrite_moments(path, **{key: a})


@pytest.mark.parametrize(
    "which, spoil, fragment, key",
    [
        ("moments", truncate, "unreadable npz", None),
        ("moments", lambda p: p.write_bytes(b""), "file is empty", None),
        ("moments", lambda p: p.unlink(), "file not found", None),
        (
            "moments",
            lambda p: p.write_bytes(npy_bytes(np.zeros(3))),
            "not an npz archive",
            None,
        ),
        ("moments", lambda p: nan_in(p, "s_var"), "non-finite", "s_var"),
        ("moments", lambda p: nan_in(p, "t_mean"), "non-finite", "t_mean"),
        (
            "moments",
            lambda p: rewrite_moments(p, head_w=np.array([np.inf, 1, 1, 1], np.float32)),
            "non-finite",
            "head_w",
        ),
        ("moments", lambda p: rewrite_moments(p, t_var=None), "missing array(s): t_var", "t_var"),
        ("moments", lambda p: rewrite_moments(p, head_w=np.ones(3, np.float32)), "shape", "head_w"),
        ("moments", lambda p: rewrite_moments(p, s_var=-np.ones((40, 4), np.float32)), "negative", "s_var"),
        ("calibration", truncate, "unreadable JSON", None),
        ("calibration", lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "unreadable JSON", None),
        ("calibration", lambda p: p.write_text("[]"), "expected a JSON object", None),
        ("calibration", lambda p: p.write_text('{"edges": [0.1]}'), "missing key(s)", "knots_x"),
        (
            "calibration",
            lambda p: p.write_text('{"edges": [], "knots_x": [[0, 1]], "knots_y": [[0]]}'),
            "malformed calibration",
            "knots_x",
        ),
        (
            "calibration",
            lambda p: p.write_text(
                '{"edges": [0.2, 0.1], "knots_x": [[0], [0], [0]], "knots_y": [[0], [0], [0]]}'
            ),
            "ascending",
            "edges",
        ),
        (
            "calibration",
            lambda p: p.write_text('{"edges": [], "knots_x": [[0, 1]], "knots_y": [[0, NaN]]}'),
            "[0, 1]",
            "knots_y",
        ),
        ("thresholds", lambda p: p.write_text("{}"), "missing key(s) ['per_bucket']", "per_bucket"),
        (
            "thresholds",
            lambda p: p.write_text('{"per_bucket": {"thresholds": [0.5]}}'),
            "target_precision",
            "per_bucket",
        ),
        (
            "thresholds",
            lambda p: p.write_text(
                '{"per_bucket": {"thresholds": [0.5, NaN, null], "target_precision": 0.3}}'
            ),
            "numbers or null",
            "per_bucket",
        ),
        (
            "thresholds",
            lambda p: p.write_text('{"per_bucket": {"thresholds": [0.5], "target_precision": 0.3}}'),
            "1 threshold(s) for a calibration with 3 bucket(s)",
            "per_bucket",
        ),
        (
            "thresholds",
            lambda p: p.write_text('{"per_bucket": {"thresholds": ["x", 1, 1], "target_precision": 0.3}}'),
            "malformed",
            "per_bucket",
        ),
    ],
)
def test_unusable_bundle_files_raise_data_error_naming_file_and_key(files, which, spoil, fragment, key):
    from nextbuy.mlops.io import DataError

    path = getattr(files, which)
    spoil(path)
    with pytest.raises(DataError) as err:
        load(files)
    assert err.value.path == str(path)
    assert fragment in err.value.message
    assert err.value.column == key


def test_model_dir_without_artifacts_is_a_data_error(tmp_path):
    from nextbuy.mlops.io import DataError

    with pytest.raises(DataError, match="no artifacts/ folder"):
        ServingBundle.from_model_dir(tmp_path)


@pytest.fixture
def tracking_store(tmp_path):
    """This test's own MLflow store; the process's MLflow settings are put back after."""
    import mlflow

    from nextbuy.serving_fixtures import mlflow_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_store(uri):
        mlflow.set_tracking_uri(uri)
        yield mlflow.MlflowClient()


def test_model_whose_artifact_store_was_deleted_is_a_data_error_naming_the_location(tmp_path, tracking_store):
    import shutil

    from nextbuy.mlops.io import DataError
    from nextbuy.serving_fixtures import write_bundle_files

    model_dir = tmp_path / "mlartifacts" / "model"
    write_bundle_files(model_dir / "artifacts", n_products=40, d=4, n_fit=2000)
    tracking_store.create_registered_model("nextbuy-test")
    version = tracking_store.create_model_version("nextbuy-test", source=model_dir.as_uri())
    tracking_store.set_registered_model_alias("nextbuy-test", "champion", version.version)
    assert ServingBundle.from_model_uri("models:/nextbuy-test@champion").n_products == 40

    with np.load(model_dir / "artifacts" / "moments.npz") as data:
        moments = {k: data[k] for k in data.files}
    moments["s_mean"][3, 1] = np.nan
    np.savez(model_dir / "artifacts" / "moments.npz", **moments)
    with pytest.raises(DataError) as err:  # named by the model, not the temporary download
        ServingBundle.from_model_uri("models:/nextbuy-test@champion")
    assert err.value.path == "models:/nextbuy-test@champion (artifacts/moments.npz)"
    assert err.value.column == "s_mean" and "non-finite" in err.value.message

    shutil.rmtree(tmp_path / "mlartifacts")  # MLflow then downloads nothing, silently
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_uri("models:/nextbuy-test@champion")
    assert err.value.path == "models:/nextbuy-test@champion"
    assert str(model_dir) in err.value.message and "deleted or moved" in err.value.message
