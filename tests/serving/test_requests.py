"""Serving requests: malformed ones refused with what to send, top_k params, JSON nested too
deeply answered 400."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from nextbuy.serving import requests
from nextbuy.serving.model import NextbuyModel
from nextbuy.serving.requests import MAX_TOP_K, top_k_param, validate_request
from tests.serving.helpers import pairs, refusal


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
    requests.refuse_too_deep_json()
    requests.refuse_too_deep_json()  # once per process: not wrapped twice
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
