"""The serving pyfunc: pairs and top-K answered, the top-K answer capped and computed in
chunks, a cancelled request stopped, requests in the store's own product keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from nextbuy.serving import model as served
from nextbuy.serving.bundle import ServingBundle
from nextbuy.serving.model import NextbuyModel
from nextbuy.serving.requests import MAX_TOP_K
from tests.serving.helpers import pairs, refusal


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
    monkeypatch.setattr(served, "MAX_TOPK_ROWS", 20)
    sources = pd.DataFrame({"source_id": [0, 1, 2, 2]})  # 3 distinct sources
    assert len(model.predict(None, sources, params={"top_k": 6})) == 18
    message = refusal(model.predict, None, sources, params={"top_k": 7})
    assert "21 rows (3 sources x top_k 7)" in message
    assert "limit is 20" in message
    # K beyond the catalogue is clamped to it (49 candidates) before the cap is applied.
    monkeypatch.setattr(served, "MAX_TOPK_ROWS", 49)
    assert len(model.predict(None, sources.iloc[:1], params={"top_k": MAX_TOP_K})) == 49


def test_top_k_computed_in_chunks_answers_as_in_one_go(model, bundle, monkeypatch):
    monkeypatch.setattr(served, "CANCEL_CHECK_ROWS", 7)  # 2 sources of top 3 a chunk
    recs = model.predict(None, pd.DataFrame({"source_id": [4, 0, 9, 4, 1, 77]}), params={"top_k": 3})
    pd.testing.assert_frame_equal(recs, bundle.top_k(np.array([4, 0, 9, 1, 77]), 3))


def test_a_cancelled_request_stops_between_chunks_and_is_never_started(model, monkeypatch):
    import threading

    from nextbuy.serving.requests import CANCELLED, RequestCancelled

    event = threading.Event()
    computed = []
    top_k = ServingBundle.top_k

    def one_chunk(self, sources, k):
        computed.append(len(sources))
        event.set()  # the client leaves while the first chunk is computed
        return top_k(self, sources, k)

    monkeypatch.setattr(served, "CANCEL_CHECK_ROWS", 3)  # one source a chunk
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


def test_the_served_model_refuses_to_start_without_a_file_deploy_stores(tmp_path):
    """``mlflow models serve`` calls load_context with the model's artifacts: one deploy stores
    with every model missing stops it, in one line saying how to re-register the model."""
    from types import SimpleNamespace

    from nextbuy.bench.serving_fixtures import stored_files, write_bundle_files
    from nextbuy.mlops.io import DataError
    from nextbuy.serving.bundle import STORED_FILES
    from nextbuy.serving.readers import REREGISTER

    artifacts = tmp_path / "model" / "artifacts"
    stored_files(write_bundle_files(tmp_path / "bundle", n_products=40, d=4, n_fit=2000), artifacts)
    given = {name: str(artifacts / file) for name, file in STORED_FILES.items()}
    model = NextbuyModel()
    model.load_context(SimpleNamespace(artifacts=given))
    assert model.bundle.n_products == 40
    del given["retrieval"]
    with pytest.raises(DataError) as err:
        NextbuyModel().load_context(SimpleNamespace(artifacts=given))
    model_dir = (tmp_path / "model").resolve()
    assert str(err.value) == f"{model_dir}: no retrieval.json among the model's files; {REREGISTER}"
