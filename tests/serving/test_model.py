"""Serving bundle: scores, uncertainty, decisions, cold start, malformed requests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.uncertainty import fit_bucket_calibration
from nextbuy.mlops import serving, serving_bundle, serving_integrity
from nextbuy.mlops.serving import MAX_TOP_K, NextbuyModel, ServingBundle, top_k_param, validate_request


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


@pytest.mark.parametrize(
    ("frame", "fragment"),
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


def refusal(call, *args, **kwargs) -> str:
    """The message of the HTTP-400 MlflowException that ``call`` must raise."""
    with pytest.raises(MlflowException) as err:
        call(*args, **kwargs)
    assert err.value.get_http_status_code() == 400
    return err.value.message


def pairs(source, candidate=(1,)) -> pd.DataFrame:
    return pd.DataFrame({"source_id": list(source), "candidate_id": list(candidate) * len(source)})


@pytest.mark.parametrize(
    ("frame", "fragments"),
    [
        (pairs([np.inf]), ["'source_id'", "finite", "[inf]"]),
        (pairs([3, -np.inf]), ["'source_id'", "finite", "[-inf]"]),
        (pairs([np.nan]), ["'source_id'", "null/NaN", "[nan]"]),
        (pd.DataFrame({"source_id": [True], "candidate_id": [False]}), ["'source_id'", "booleans"]),
        (pairs([1, True], candidate=(2,)), ["'source_id'", "booleans", "[True]"]),  # object column
        (pairs([1], candidate=(True,)), ["'candidate_id'", "booleans"]),
        (pairs([[1, 2]]), ["'source_id'", "lists or objects", "one integer product id per cell"]),
        (pairs([{"a": {"b": 1}}]), ["'source_id'", "lists or objects"]),
        (pairs([10**23]), ["'source_id'", "int64 range"]),
        (pairs([2**63 + 5]), ["'source_id'", "int64 range"]),  # uint64 column
        (pairs([1, -(2**63) - 1]), ["'source_id'", "int64 range"]),  # float column: rounds to -2^63
        (pairs([1, 2**63 - 1 + 0.5]), ["'source_id'", "int64 range"]),
        (pairs(["7x"]), ["'source_id'", "not null/NaN or text", "['7x']"]),
        (pairs([2.5]), ["'source_id'", "not fractions", "[2.5]"]),
    ],
    ids=[
        "inf",
        "minus-inf",
        "nan",
        "bool-dtype",
        "bool-in-object-column",
        "bool-candidate",
        "list-cell",
        "dict-cell",
        "beyond-int64",
        "uint64",
        "below-int64",
        "float-at-2^63",
        "text",
        "fraction",
    ],
)
def test_ids_that_are_not_finite_integers_are_refused_naming_column_and_values(frame, fragments):
    message = refusal(validate_request, frame)
    for fragment in fragments:
        assert fragment in message, message


def test_numeric_ids_pass_as_int64():
    frame = pd.DataFrame(
        {"source_id": [1, "2", 3.0, 4], "candidate_id": np.array([4, 5, -1, 2**63 - 1], np.int64)}
    )
    out = validate_request(frame)
    assert out.dtypes.tolist() == [np.int64, np.int64]
    assert out.to_numpy().tolist() == [[1, 4], [2, 5], [3, -1], [4, 2**63 - 1]]
    assert validate_request(pairs([np.uint64(7)])).to_numpy().tolist() == [[7, 1]]


def test_a_huge_nested_cell_is_shown_cut_short():
    deep: list = [1]
    for _ in range(5000):
        deep = [deep, list(range(100))]
    message = refusal(validate_request, pairs([deep]))
    assert "lists or objects" in message
    assert len(message) < 600


@pytest.mark.parametrize(
    ("frame", "need_candidates", "fragments"),
    [
        (pairs([1]).assign(extra=[0], more=[1]), True, ["unexpected column(s) ['extra', 'more']"]),
        (pairs([1]), False, ["unexpected column(s) ['candidate_id']", '{"top_k": K}', "1,000"]),
        (
            pd.DataFrame([[1, 2]], columns=["source_id", "source_id"]),
            True,
            ["duplicate column(s) ['source_id']"],
        ),
        (pd.DataFrame({"source_id": [1]}), True, ["missing column(s) ['candidate_id']", "top_k"]),
        (pairs([1]).assign(**{f"c{i}": [0] for i in range(30)}), True, ["'c9'] and 20 more"]),
    ],
    ids=["extra-columns", "candidate-with-top-k", "duplicate", "missing-candidate", "many-extra"],
)
def test_columns_other_than_the_expected_ones_are_refused_listing_what_is_accepted(
    frame, need_candidates, fragments
):
    message = refusal(validate_request, frame, need_candidates=need_candidates)
    for fragment in fragments:
        assert fragment in message, message
    assert "source_id" in message


def test_row_limit_is_checked_before_the_ids():
    frame = pd.DataFrame({"source_id": ["x"] * 11, "candidate_id": [[1]] * 11})
    assert "limit is 10" in refusal(validate_request, frame, max_rows=10)


@pytest.mark.parametrize("params", [None, {}, {"top_k": None}, {"top_k": 0}])
def test_no_top_k_means_pairs(params):
    assert top_k_param(params) == 0


@pytest.mark.parametrize("k", [1, np.int64(7), MAX_TOP_K])
def test_top_k_from_1_to_the_cap_is_accepted(k):
    assert top_k_param({"top_k": k}) == int(k)


@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        ({"top_k": -1}, ["top_k must be at least 1 (got -1)", "leave top_k out"]),
        ({"top_k": MAX_TOP_K + 1}, ["above the limit of 1,000", "batch-topk"]),
        ({"top_k": 10**9}, ["top_k 1000000000 is above the limit of 1,000"]),
        ({"top_k": 1.5}, ["top_k must be an integer from 1 to 1,000, got 1.5"]),
        ({"top_k": 5.0}, ["must be an integer", "5.0"]),
        ({"top_k": "5"}, ["must be an integer", "'5'"]),
        ({"top_k": True}, ["must be an integer", "True"]),
        ({"top_k": [3]}, ["must be an integer"]),
        ({"topk": 5}, ["unknown param(s) ['topk']", "only accepted param is 'top_k'", "1 to 1,000"]),
        ({"top_k": 5, "x": 1, "y": 2}, ["unknown param(s) ['x', 'y']"]),
        ([("top_k", 5)], ["params must be a JSON object"]),
    ],
)
def test_bad_params_are_refused_saying_what_to_send(params, fragments):
    message = refusal(top_k_param, params)
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def model(bundle) -> NextbuyModel:
    model = NextbuyModel()
    model.bundle = bundle  # what load_context would load
    return model


def test_predict_scores_pairs_and_top_k(model, bundle):
    out = model.predict(None, pairs([0, 1], candidate=(2,)))
    pd.testing.assert_frame_equal(out, bundle.score(np.array([0, 1]), np.array([2, 2])))
    recs = model.predict(None, pd.DataFrame({"source_id": [0, 0, 5]}), params={"top_k": 3})
    pd.testing.assert_frame_equal(recs, bundle.top_k(np.array([0, 5]), 3))


@pytest.mark.parametrize(
    ("frame", "params", "fragment"),
    [
        (pairs([1]), {"top_k": 5, "k": 1}, "unknown param(s) ['k']"),
        (pairs([1]).assign(note=["x"]), None, "unexpected column(s) ['note']"),
        (pairs([1]), {"top_k": 5}, "unexpected column(s) ['candidate_id']"),
        (pd.DataFrame({"source_id": [1]}), {"top_k": -2}, "at least 1"),
        (pd.DataFrame({"source_id": [1]}), {"top_k": 0}, "missing column(s) ['candidate_id']"),
        (pd.DataFrame({"source_id": [1]}), {"top_k": MAX_TOP_K + 1}, "above the limit"),
        (pairs([np.inf]), None, "finite"),
        (pd.DataFrame({"source_id": [True]}), {"top_k": 3}, "booleans"),
    ],
)
def test_predict_refuses_bad_requests(model, frame, params, fragment):
    assert fragment in refusal(model.predict, None, frame, params=params)


def test_top_k_answer_size_is_capped(model, monkeypatch):
    monkeypatch.setattr(serving, "MAX_TOPK_ROWS", 20)
    sources = pd.DataFrame({"source_id": [0, 1, 2, 2]})  # 3 distinct sources
    assert len(model.predict(None, sources, params={"top_k": 6})) == 18
    message = refusal(model.predict, None, sources, params={"top_k": 7})
    assert "21 rows (3 sources x top_k 7)" in message
    assert "limit is 20" in message
    # K beyond the catalogue is clamped to it (49 candidates) before the cap is applied.
    monkeypatch.setattr(serving, "MAX_TOPK_ROWS", 49)
    assert len(model.predict(None, sources.iloc[:1], params={"top_k": MAX_TOP_K})) == 49


def test_top_k_computed_in_chunks_answers_as_in_one_go(model, bundle, monkeypatch):
    monkeypatch.setattr(serving, "CANCEL_CHECK_ROWS", 7)  # 2 sources of top 3 a chunk
    recs = model.predict(None, pd.DataFrame({"source_id": [4, 0, 9, 4, 1, 77]}), params={"top_k": 3})
    pd.testing.assert_frame_equal(recs, bundle.top_k(np.array([4, 0, 9, 1, 77]), 3))


def test_a_cancelled_request_stops_between_chunks_and_is_never_started(model, monkeypatch):
    import threading

    from nextbuy.mlops.serving_requests import CANCELLED, RequestCancelled

    event = threading.Event()
    computed = []
    top_k = ServingBundle.top_k

    def one_chunk(self, sources, k):
        computed.append(len(sources))
        event.set()  # the client leaves while the first chunk is computed
        return top_k(self, sources, k)

    monkeypatch.setattr(serving, "CANCEL_CHECK_ROWS", 3)  # one source a chunk
    monkeypatch.setattr(ServingBundle, "top_k", one_chunk)
    token = CANCELLED.set(event)
    try:
        with pytest.raises(RequestCancelled):
            model.predict(None, pd.DataFrame({"source_id": [0, 1, 2, 3]}), params={"top_k": 3})
        assert computed == [1]  # the other three never computed
        with pytest.raises(RequestCancelled):
            model.predict(None, pairs([0]), params=None)
    finally:
        CANCELLED.reset(token)


class FakeServedModel:
    """What MLflow's scoring server hands ``invocations``: ``metadata`` and ``predict``."""

    metadata = None

    def __init__(self, model: NextbuyModel):
        self.model = model

    def predict(self, data, params=None):
        return self.model.predict(None, data, params=params)


def test_json_nested_too_deeply_is_a_400_once_the_model_is_loaded(model, monkeypatch):
    from mlflow.pyfunc import scoring_server

    monkeypatch.setattr(scoring_server, "invocations", scoring_server.invocations)  # put back after
    serving._refuse_too_deep_json()
    serving._refuse_too_deep_json()  # once per process: not wrapped twice
    assert scoring_server.invocations.__wrapped__.__module__ == "mlflow.pyfunc.scoring_server"
    served = FakeServedModel(model)

    def post(cell: str) -> str:
        body = '{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[' + cell + ", 2]]}}"
        return refusal(scoring_server.invocations, body.encode(), "application/json", served, None)

    assert "lists or objects" in post("[[[1]]]")
    # Past the decoder's recursion limit, and just below it, where the repr of the input
    # frame in MLflow's refusal message recurses too deeply: both used to answer 500.
    for depth in [*range(850, 1000, 3), 5000, 100_000]:
        for open_, close in (("[", "]"), ('{"a": ', "}")):
            message = post(open_ * depth + "1" + close * depth)
            assert "nested too deeply" in message or "lists or objects" in message, (depth, message)
    assert "nested too deeply" in post("[" * 5000 + "1" + "]" * 5000)


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
    monkeypatch.setattr(serving_bundle, "TOPK_CHUNK_CELLS", 60)  # 1 source per chunk
    pd.testing.assert_frame_equal(whole, bundle.top_k(np.arange(20), 5))


def test_empty_top_k_has_the_columns_and_types_of_a_full_one(bundle):
    full = bundle.top_k(np.array([0]), 3)
    for empty in (bundle.top_k(np.array([], dtype=np.int64), 3), bundle.top_k(np.array([0]), 0)):
        assert empty.empty
        assert empty.dtypes.to_dict() == full.dtypes.to_dict()


def retrieval_settings(**changes):
    from tests.helpers import config

    return config("deploy.retrieval", **changes)


def assert_same_top_k(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same rows, columns and types; scores equal up to float32 rounding (summed in another
    order), which the calibration can amplify near a steep isotonic step."""
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    exact_columns = ["source_id", "rank", "candidate_id", "bucket", "decision", "cold_start"]
    pd.testing.assert_frame_equal(got[exact_columns], want[exact_columns])
    np.testing.assert_allclose(got[["score", "uncertainty"]], want[["score", "uncertainty"]], rtol=1e-5)
    np.testing.assert_allclose(got["prob_calibrated"], want["prob_calibrated"], atol=1e-3)


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


def test_retrieval_settings_round_trip_through_the_bundle_files(tmp_path):
    from nextbuy.bench.serving_fixtures import write_bundle_files

    settings = retrieval_settings(kind="hnsw", candidates=77)
    files = write_bundle_files(
        tmp_path / "model" / "artifacts", n_products=40, d=4, n_fit=2000, retrieval=settings
    )
    assert files.retrieval.name == serving.RETRIEVAL_FILE
    loaded = ServingBundle.load(files.moments, files.calibration, files.thresholds, files.retrieval)
    assert loaded.retrieval == settings
    assert ServingBundle.from_model_dir(tmp_path / "model").retrieval == settings  # artifacts/retrieval.json
    files.retrieval.unlink()  # a model registered before the settings were bundled
    assert ServingBundle.from_model_dir(tmp_path / "model").retrieval is None


@pytest.mark.parametrize(
    ("change", "fragment", "key"),
    [
        ({"kind": "lsh"}, "kind", "kind"),
        ({"candidates": 0}, "candidates", "candidates"),
        ({"extra": 1}, "extra", "extra"),
        ({"nprobe": "many"}, "nprobe", "nprobe"),
    ],
)
def test_unusable_retrieval_settings_raise_data_error_naming_file_and_key(tmp_path, change, fragment, key):
    import json

    from nextbuy.mlops.io import DataError

    path = tmp_path / "retrieval.json"
    path.write_text(json.dumps({**retrieval_settings().model_dump(), **change}))
    with pytest.raises(DataError) as err:
        serving.read_retrieval(path)
    assert err.value.path == str(path)
    assert fragment in err.value.message
    assert err.value.column == key


def test_retrieval_settings_stored_before_completion_existed_keep_scanning(tmp_path):
    import json

    path = tmp_path / "retrieval.json"
    settings = retrieval_settings(completion="none").model_dump()
    del settings["completion"]
    path.write_text(json.dumps(settings))
    assert serving.read_retrieval(path).completion == "scan"


def test_retrieval_settings_missing_a_key_or_not_an_object_are_refused(tmp_path):
    import json

    from nextbuy.mlops.io import DataError

    path = tmp_path / "retrieval.json"
    settings = retrieval_settings().model_dump()
    del settings["candidates"]
    path.write_text(json.dumps(settings))
    with pytest.raises(DataError, match=r"missing key\(s\) \['candidates'\]"):
        serving.read_retrieval(path)
    path.write_text("[]")
    with pytest.raises(DataError, match="expected a JSON object"):
        serving.read_retrieval(path)


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

    from nextbuy.bench.serving_fixtures import write_bundle_files
    from nextbuy.mlops.io import DataError

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
    assert err.value.column == "s_mean"
    assert "non-finite" in err.value.message

    shutil.rmtree(tmp_path / "mlartifacts")  # MLflow then downloads nothing, silently
    with pytest.raises(DataError) as err:
        ServingBundle.from_model_uri("models:/nextbuy-test@champion")
    assert err.value.path == "models:/nextbuy-test@champion"
    assert str(model_dir) in err.value.message
    assert "deleted or moved" in err.value.message


# --- trust boundary: the files deploy registered are the files loaded -------------------


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
    recorded = serving.parse_manifest(tags[serving.ARTIFACT_MANIFEST])
    for rel in (
        "MLmodel",
        "python_model.pkl",
        "artifacts/moments.npz",
        "artifacts/thresholds.json",
        "artifacts/retrieval.json",
    ):
        assert recorded[rel] == serving.file_sha256(registered / rel), rel
    assert "code/nextbuy/mlops/serving.py" in recorded  # the code unpickling imports
    assert recorded == serving.model_file_digests(registered)
    assert tags[serving.ARTIFACT_SHA256] == serving.manifest_digest(recorded)
    assert serving.verify_model_uri(CHAMPION_URI) == ("1", tags[serving.ARTIFACT_SHA256])


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
        "code/nextbuy/mlops/serving.py",
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
        serving.verify_model_uri("models:/nextbuy/1")


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
    manifest = client.get_model_version("nextbuy", "1").tags[serving.ARTIFACT_MANIFEST]
    tamper("artifacts/calibration.json")
    forged = serving.manifest_text(serving.model_file_digests(registered))
    client.set_model_version_tag("nextbuy", "1", serving.ARTIFACT_MANIFEST, forged)
    try:
        with pytest.raises(DataError, match="does not match 'artifact_sha256'"):
            ServingBundle.from_model_uri(CHAMPION_URI)
    finally:
        client.set_model_version_tag("nextbuy", "1", serving.ARTIFACT_MANIFEST, manifest)


def test_a_version_registered_before_digests_loads_with_a_warning(registered, caplog, monkeypatch):
    from mlflow import MlflowClient

    from nextbuy.cli import app

    client = MlflowClient()
    client.create_registered_model("nextbuy-legacy")
    client.create_model_version("nextbuy-legacy", source=registered.as_uri())  # no digest tags
    assert ServingBundle.from_model_uri("models:/nextbuy-legacy/1").n_products == 40
    assert "models:/nextbuy-legacy/1: registered before deploy recorded file digests" in caplog.text
    assert "NOT verified" in caplog.text

    from typer.testing import CliRunner

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # what the command sets
    result = CliRunner().invoke(app, ["verify-model", "models:/nextbuy-legacy/1"])
    assert result.exit_code == 2
    assert "not verified" in result.output


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
        downloaded, _, digest = serving_integrity._download_checked(CHAMPION_URI, tmp_path)
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
    pyc = downloaded / "code/nextbuy/mlops/__pycache__/serving.cpython-311.pyc"
    pyc.parent.mkdir()
    pyc.write_bytes(b"bytecode")
    serving._verify_served_files(downloaded / "artifacts" / "moments.npz")  # load_context: fine
    with pytest.raises(DataError, match="added since"):
        ServingBundle.from_model_dir(downloaded)


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
        "from nextbuy.mlops.serving_bundle import ServingBundle\n"
        f"b = ServingBundle.load(*map(Path, {paths!r}))\n"
        "out = b.score(np.array([0, 1]), np.array([2, 3]))\n"
        "print(len(out), out['score'].between(0, 1).all(), 'sklearn' in sys.modules)\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["2", "True", "False"]


STORE_KEYS = np.array([f"{85000 + i}" if i % 3 else f"{85000 + i}A" for i in range(50)])


@pytest.fixture
def keyed_model(bundle) -> NextbuyModel:
    model = NextbuyModel()
    model.bundle = dataclasses.replace(bundle, keys=STORE_KEYS)
    return model


def test_pairs_in_the_stores_keys_answer_as_their_ids_with_the_keys_beside(keyed_model, bundle):
    # "85000A" is product 0, 85001 (sent as an integer) product 1, "85004" product 4
    request = pd.DataFrame({"source_key": ["85000A", 85001], "candidate_key": ["85004", " 85004 "]})
    out = keyed_model.predict(None, request)
    expected = bundle.score(np.array([0, 1]), np.array([4, 4]))
    pd.testing.assert_frame_equal(out.drop(columns=["source_key", "candidate_key"]), expected)
    assert out["source_key"].tolist() == ["85000A", "85001"]
    assert out["candidate_key"].tolist() == ["85004", "85004"]


def test_an_unknown_store_key_is_answered_as_cold_start(keyed_model, bundle):
    out = keyed_model.predict(None, pd.DataFrame({"source_key": ["NEW-SKU"], "candidate_key": ["85004"]}))
    assert out["cold_start"].tolist() == [True]
    expected = bundle.score(np.array([bundle.n_products]), np.array([4]))
    assert out["score"].tolist() == expected["score"].tolist()


def test_top_k_in_the_stores_keys_returns_candidates_as_keys(keyed_model, bundle):
    recs = keyed_model.predict(
        None, pd.DataFrame({"source_key": ["85000A", "85005", "85000A"]}), {"top_k": 3}
    )
    by_id = bundle.top_k(np.array([0, 5]), 3)
    pd.testing.assert_frame_equal(recs.drop(columns=["source_key", "candidate_key"]), by_id)
    assert recs["source_key"].tolist() == ["85000A"] * 3 + ["85005"] * 3
    assert recs["candidate_key"].tolist() == STORE_KEYS[by_id["candidate_id"]].tolist()


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (pd.DataFrame({"source_key": [None], "candidate_key": ["1"]}), "not null"),
        (pd.DataFrame({"source_key": [1.5], "candidate_key": ["1"]}), "fractions"),
        (pd.DataFrame({"source_key": [[1, 2]], "candidate_key": ["1"]}), "lists or objects"),
        (pd.DataFrame({"source_key": ["1"], "candidate_id": [1]}), "missing column(s) ['candidate_key']"),
    ],
)
def test_store_keys_that_cannot_be_mapped_are_refused_saying_what_to_send(keyed_model, frame, fragment):
    assert fragment in refusal(keyed_model.predict, None, frame)


def test_a_model_without_store_keys_refuses_a_request_in_keys(model):
    message = refusal(model.predict, None, pd.DataFrame({"source_key": ["85000A"], "candidate_key": ["1"]}))
    assert "send source_id and candidate_id" in message


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


def test_the_served_order_round_trips_through_the_model_files(tmp_path):
    from nextbuy.bench.serving_fixtures import write_bundle_files
    from nextbuy.domain.served_ranking import CountTables, RankingChoice
    from nextbuy.mlops import io

    artifacts = tmp_path / "model" / "artifacts"
    write_bundle_files(artifacts, n_products=40, d=4, n_fit=2000)
    assert (
        ServingBundle.from_model_dir(tmp_path / "model").ranked_by == "model"
    )  # registered before the choice
    choice = RankingChoice("popularity", 20, 100, {"model": 0.1, "popularity": 0.3}, {}, 0.95, "won", "test")
    io.write_json(choice.to_dict(), artifacts / serving.SERVED_RANKING_FILE)
    with pytest.raises(io.DataError, match=r"counts\.npz"):
        ServingBundle.from_model_dir(tmp_path / "model")
    tables = CountTables.from_edges(np.array([1, 2]), np.array([2, 3]), np.array([1.0, 4.0]), 40)
    io.write_npz(tables.to_arrays(), artifacts / serving.COUNTS_FILE)
    loaded = ServingBundle.from_model_dir(tmp_path / "model")
    assert loaded.ranked_by == "popularity"
    assert loaded.top_k(np.array([0]), 2)["candidate_id"].tolist() == [2, 3]  # in 2 pairs, then 3
    io.write_npz(
        CountTables.from_edges(np.array([1]), np.array([2]), np.array([1.0]), 39).to_arrays(),
        artifacts / serving.COUNTS_FILE,
    )
    with pytest.raises(io.DataError, match="39 products for a model of 40"):
        ServingBundle.from_model_dir(tmp_path / "model")
