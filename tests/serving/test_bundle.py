"""The serving bundle: scores, uncertainty, decisions, cold start, top-K (exact, retrieved,
by a count order), its files refused naming file and key, and a registered model read from
what deploy stores with it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from nextbuy.mlops.io import DataError
from nextbuy.serving import bundle as scorer
from nextbuy.serving.bundle import ServingBundle
from nextbuy.serving.readers import COUNTS_FILE, REREGISTER, SERVED_RANKING_FILE
from tests.serving.helpers import assert_same_top_k, retrieval_settings


def test_scores_known_pairs(bundle):
    out = bundle.score(np.array([0, 1, 2]), np.array([3, 4, 5]))
    assert out["score"].between(0, 1).all()
    assert (out["uncertainty"] > 0).all()
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

    whole = bundle.top_k(np.arange(20), 5)
    monkeypatch.setattr(scorer, "TOPK_CHUNK_CELLS", 60)  # 1 source per chunk
    pd.testing.assert_frame_equal(whole, bundle.top_k(np.arange(20), 5))


def test_empty_top_k_has_the_columns_and_types_of_a_full_one(bundle):
    full = bundle.top_k(np.array([0]), 3)
    for empty in (bundle.top_k(np.array([], dtype=np.int64), 3), bundle.top_k(np.array([0]), 0)):
        assert empty.empty
        assert empty.dtypes.to_dict() == full.dtypes.to_dict()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_top_k_with_retrieval_answers_like_the_exact_method(bundle, kind):
    """Known, cold-start (10**6, -1) and repeated sources; a few candidates per source, and
    unproven lists completed by the scan."""
    fast = bundle.with_retrieval(retrieval_settings(kind=kind, candidates=5, completion="scan"))
    sources = np.array([0, 3, 10**6, 49, -1, 3])
    assert_same_top_k(fast.top_k(sources, 7), bundle.top_k(sources, 7, exact=True))
    assert fast.candidate_index.kind == kind
    assert fast.candidate_index is fast.candidate_index
    assert_same_top_k(fast.top_k(sources, 7), fast.top_k(sources, 7, exact=True))


def test_top_k_with_retrieval_of_the_whole_catalogue(bundle):
    fast = bundle.with_retrieval(retrieval_settings(kind="flat"))
    recs = fast.top_k(np.array([0, 10**6]), 10**6)
    assert len(recs) == 2 * (bundle.n_products - 1)
    assert_same_top_k(recs, bundle.top_k(np.array([0, 10**6]), 10**6, exact=True))


def test_a_bundle_without_retrieval_settings_scores_the_whole_catalogue(bundle):
    assert bundle.retrieval is None
    with pytest.raises(ValueError, match="no retrieval settings"):
        _ = bundle.candidate_index
    pd.testing.assert_frame_equal(bundle.top_k(np.arange(5), 4), bundle.top_k(np.arange(5), 4, exact=True))


# --------------------------------------------------------------------------- bundle files


@pytest.fixture
def files(tmp_path):
    from nextbuy.bench.serving_fixtures import write_bundle_files

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


STORED_RETRIEVAL = retrieval_settings(kind="hnsw", candidates=77)


@pytest.fixture
def model_dir(tmp_path):
    """A model folder whose artifacts/ hold what deploy stores with a model."""
    from nextbuy.bench.serving_fixtures import stored_files, write_bundle_files

    files = write_bundle_files(
        tmp_path / "bundle", n_products=40, d=4, n_fit=2000, retrieval=STORED_RETRIEVAL
    )
    stored_files(files, tmp_path / "model" / "artifacts")
    return tmp_path / "model"


def test_a_model_is_read_from_what_deploy_stores_with_it(model_dir):
    loaded = ServingBundle.from_model_dir(model_dir)
    assert loaded.n_products == 40
    assert loaded.retrieval == STORED_RETRIEVAL  # artifacts/retrieval.json
    assert loaded.ranked_by == "model"  # artifacts/served_ranking.json
    assert loaded.keys is not None
    assert loaded.keys[:2].tolist() == ["P0", "P1"]


@pytest.mark.parametrize("missing", ["retrieval.json", "served_ranking.json", "thresholds.json"])
def test_a_model_without_a_file_deploy_stores_is_refused_in_one_line_saying_how_to_re_register_it(
    model_dir, missing
):
    artifacts = model_dir / "artifacts"
    (artifacts / missing).unlink()
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_dir(model_dir)
    assert str(err.value) == f"{artifacts}: no {missing} among the model's files; {REREGISTER}"
    assert REREGISTER == "re-register it: run the pipeline's deploy stage again (nextbuy deploy)"


def test_a_model_without_the_stores_product_keys_is_refused_saying_how_to_re_register_it(model_dir):
    moments = model_dir / "artifacts" / "moments.npz"
    rewrite_moments(moments, product_key=None)
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_dir(model_dir)
    assert err.value.path == str(moments)
    assert err.value.column == "product_key"
    assert str(err.value).endswith(f": no store product keys (array 'product_key'); {REREGISTER}")
    assert "\n" not in str(err.value)


def test_retrieval_settings_without_a_key_deploy_writes_are_refused_saying_how_to_re_register_it(model_dir):
    path = model_dir / "artifacts" / "retrieval.json"
    settings = json.loads(path.read_text())
    del settings["completion"]
    path.write_text(json.dumps(settings))
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_dir(model_dir)
    assert err.value.path == str(path)
    assert "missing key(s) ['completion']" in str(err.value)
    assert str(err.value).endswith(REREGISTER)
    assert "\n" not in str(err.value)


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
    ("which", "spoil", "fragment", "key"),
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
    path = getattr(files, which)
    spoil(path)
    with pytest.raises(DataError) as err:
        load(files)
    assert err.value.path == str(path)
    assert fragment in err.value.message
    assert err.value.column == key


def test_model_dir_without_artifacts_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no artifacts/ folder"):
        ServingBundle.from_model_dir(tmp_path)


@pytest.fixture
def tracking_store(tmp_path, new_mlflow_store):
    """This test's own MLflow store; the process's MLflow settings are put back after."""
    import mlflow

    from nextbuy.bench.serving_fixtures import mlflow_store

    uri = new_mlflow_store(tmp_path / "mlflow.db")
    with mlflow_store(uri):
        mlflow.set_tracking_uri(uri)
        yield mlflow.MlflowClient()


def test_model_whose_artifact_store_was_deleted_is_a_data_error_naming_the_location(tmp_path, tracking_store):
    import shutil

    from nextbuy.bench.serving_fixtures import stored_files, write_bundle_files
    from nextbuy.serving.integrity import artifact_tags

    model_dir = tmp_path / "mlartifacts" / "model"
    stored_files(
        write_bundle_files(tmp_path / "bundle", n_products=40, d=4, n_fit=2000), model_dir / "artifacts"
    )
    tracking_store.create_registered_model("nextbuy-test")
    version = tracking_store.create_model_version(
        "nextbuy-test", source=model_dir.as_uri(), tags=artifact_tags(model_dir)
    )
    tracking_store.set_registered_model_alias("nextbuy-test", "champion", version.version)
    assert ServingBundle.from_model_uri("models:/nextbuy-test@champion").n_products == 40

    with np.load(model_dir / "artifacts" / "moments.npz") as data:
        moments = {k: data[k] for k in data.files}
    moments["s_mean"][3, 1] = np.nan
    np.savez(model_dir / "artifacts" / "moments.npz", **moments)
    for tag, value in artifact_tags(model_dir).items():  # recorded as deployed: only the content is bad
        tracking_store.set_model_version_tag("nextbuy-test", version.version, tag, value)
    with pytest.raises(DataError) as err:  # named by the model, not the temporary download
        ServingBundle.from_model_uri("models:/nextbuy-test@champion")
    assert err.value.path == "models:/nextbuy-test@champion (artifacts/moments.npz)"
    assert err.value.column == "s_mean"
    assert "non-finite" in err.value.message

    shutil.rmtree(tmp_path / "mlartifacts")  # MLflow then downloads nothing, silently
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_uri("models:/nextbuy-test@champion")
    assert err.value.path == "models:/nextbuy-test@champion"
    assert str(model_dir) in err.value.message
    assert "deleted or moved" in err.value.message


def test_a_process_that_loads_and_scores_a_bundle_never_imports_scikit_learn(tmp_path):
    """Serving applies the calibration's fitted knots and the thresholds; fitting them (and
    scikit-learn, half a second of every worker's start) belongs to the pipeline's stages."""
    import subprocess
    import sys

    from nextbuy.bench.serving_fixtures import write_bundle_files

    files = write_bundle_files(tmp_path / "bundle", n_products=20, d=4, n_fit=500)
    paths = [str(files.moments), str(files.calibration), str(files.thresholds)]
    code = (
        "import sys\nfrom pathlib import Path\nimport numpy as np\n"
        "from nextbuy.serving.bundle import ServingBundle\n"
        f"b = ServingBundle.load(*map(Path, {paths!r}))\n"
        "out = b.score(np.array([0, 1]), np.array([2, 3]))\n"
        "print(len(out), out['score'].between(0, 1).all(), 'sklearn' in sys.modules)\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["2", "True", "False"]


def counted(bundle: ServingBundle, ranked_by: str) -> ServingBundle:
    """``bundle`` serving a count order over a few bought pairs."""
    from nextbuy.domain.served_ranking import CountTables

    tables = CountTables.from_edges(
        np.array([0, 0, 0, 5]), np.array([7, 3, 9, 9]), np.array([5.0, 2.0, 1.0, 40.0]), bundle.n_products
    )
    return dataclasses.replace(bundle, ranked_by=ranked_by, counts=tables)


def test_a_count_order_ranks_top_k_by_counts_and_answers_with_the_models_columns(bundle):
    served = counted(bundle, "co_purchase")
    top = served.top_k(np.array([0, 5]), 3)
    assert top[top["source_id"] == 0]["candidate_id"].tolist() == [7, 3, 9]  # bought after 0, most first
    assert top[top["source_id"] == 5]["candidate_id"].tolist()[0] == 9
    pairs = bundle.score(top["source_id"].to_numpy(), top["candidate_id"].to_numpy())
    columns = ["score", "uncertainty", "bucket", "prob_calibrated", "decision"]
    pd.testing.assert_frame_equal(top[columns].reset_index(drop=True), pairs[columns])
    unseen = served.top_k(np.array([999]), 2)  # a product the model never saw: popularity
    assert unseen["candidate_id"].tolist() == [9, 5]
    assert unseen["cold_start"].all()
    by_popularity = counted(bundle, "popularity").top_k(np.array([0]), 2)
    assert by_popularity["candidate_id"].tolist() == [9, 5]


def test_the_served_order_round_trips_through_the_model_files(model_dir):
    from nextbuy.domain.served_ranking import CountTables, RankingChoice
    from nextbuy.mlops import io

    artifacts = model_dir / "artifacts"
    assert ServingBundle.from_model_dir(model_dir).ranked_by == "model"  # the model's own order
    choice = RankingChoice("popularity", 20, 100, {"model": 0.1, "popularity": 0.3}, {}, 0.95, "won", "test")
    io.write_json(choice.to_dict(), artifacts / SERVED_RANKING_FILE)
    with pytest.raises(io.DataError, match=r"counts\.npz"):
        ServingBundle.from_model_dir(model_dir)
    tables = CountTables.from_edges(np.array([1, 2]), np.array([2, 3]), np.array([1.0, 4.0]), 40)
    io.write_npz(tables.to_arrays(), artifacts / COUNTS_FILE)
    loaded = ServingBundle.from_model_dir(model_dir)
    assert loaded.ranked_by == "popularity"
    assert loaded.top_k(np.array([0]), 2)["candidate_id"].tolist() == [2, 3]  # in 2 pairs, then 3
    io.write_npz(
        CountTables.from_edges(np.array([1]), np.array([2]), np.array([1.0]), 39).to_arrays(),
        artifacts / COUNTS_FILE,
    )
    with pytest.raises(io.DataError, match="39 products for a model of 40"):
        ServingBundle.from_model_dir(model_dir)
