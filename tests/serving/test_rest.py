"""REST serving for real: a synthetic bundle logged and registered with
``deploy.log_serving_model``, aliased ``champion``, served by ``nextbuy serve``
(MLflow's scoring server behind the body-size guard) on 127.0.0.1, and asked real
HTTP requests — good ones and malformed ones.

The server runs in its own process group and is stopped by that group (SIGTERM,
then SIGKILL) in the fixture's teardown, which asserts nothing of it is left.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from nextbuy import procs, serving
from nextbuy.bench import serving_fixtures as fixtures

pytestmark = pytest.mark.slow

N_PRODUCTS, DIM = 500, 16
COLUMNS = ["source_id", "candidate_id"]


class Reply:
    def __init__(self, status: int, body: bytes):
        self.status = status
        self.text = body.decode(errors="replace")

    def json(self):
        return json.loads(self.text)

    @property
    def message(self) -> str:
        try:
            return str(self.json().get("message", self.text))
        except (ValueError, AttributeError):
            return self.text


@pytest.fixture(scope="module")
def server(tmp_path_factory, new_mlflow_store):
    root = tmp_path_factory.mktemp("rest")
    uri = new_mlflow_store(root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_ARTIFACT_ROOT", raising=False)
        files = fixtures.write_bundle_files(root / "bundle", N_PRODUCTS, DIM, seed=0)
        version = fixtures.register_champion(files, root, uri)
        assert version == "1"
        srv = fixtures.RestServer(fixtures.champion_uri(), uri, root / "serve.log", start_timeout=120)
        pgid = None
        try:
            srv.start()
            pgid = srv.proc.pid
            srv.bundle = fixtures.load_bundle(files)
            yield srv
        finally:
            gone = srv.stop()
            if pgid is not None:
                assert gone, f"server group {pgid} still alive"
                assert not procs.group_alive(pgid), f"server group {pgid} still alive"
                assert srv.proc.returncode is not None
                assert srv.ping() is None
                assert not procs.port_open(srv.port)


def post(srv, body: bytes, timeout: float = 60, content_type: str = "application/json") -> Reply:
    req = urllib.request.Request(
        f"{srv.url}/invocations", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read())


def test_pairs_score_100_candidates_with_cold_start_flags(server):
    rng = np.random.default_rng(1)
    src = np.full(100, 7)
    dst = rng.integers(0, N_PRODUCTS, 100)
    dst[[3, 50]] = [10**6, -1]  # never seen / invalid-as-product: cold start, not an error
    src[99] = N_PRODUCTS  # one past the catalogue
    reply = post(server, fixtures.invocations_body(COLUMNS, np.c_[src, dst].tolist()))
    assert reply.status == 200, reply.text
    preds = reply.json()["predictions"]
    assert len(preds) == 100
    assert set(preds[0]) == set(serving.PAIR_COLUMNS)
    score = np.array([p["score"] for p in preds])
    assert ((score > 0) & (score < 1)).all()
    assert all(p["uncertainty"] >= 0 for p in preds)
    assert all(isinstance(p["decision"], bool) and isinstance(p["cold_start"], bool) for p in preds)
    cold = np.array([p["cold_start"] for p in preds])
    expected_cold = np.zeros(100, bool)
    expected_cold[[3, 50, 99]] = True
    np.testing.assert_array_equal(cold, expected_cold)
    # What the server says is what the bundle computes in-process.
    local = server.bundle.score(src, dst)
    np.testing.assert_allclose(score, local["score"], rtol=1e-12)
    assert [p["decision"] for p in preds] == local["decision"].tolist()
    assert [p["bucket"] for p in preds] == local["bucket"].tolist()


def test_plain_pair_requests_get_the_same_answer_as_mlflow_s_path(server):
    """A plain dataframe_split pair request is answered by the fast path; the same pairs as
    dataframe_records go through MLflow's scoring server: the two answers are identical."""
    rng = np.random.default_rng(2)
    pairs = np.c_[rng.integers(-3, N_PRODUCTS + 3, 50), rng.integers(-3, N_PRODUCTS + 3, 50)]
    fast = post(server, fixtures.invocations_body(COLUMNS, pairs.tolist()))
    records = [{"source_id": int(u), "candidate_id": int(v)} for u, v in pairs]
    slow = post(server, json.dumps({"dataframe_records": records}).encode())
    assert fast.status == slow.status == 200, (fast.text, slow.text)
    assert fast.json() == slow.json()
    assert len(fast.json()["predictions"]) == 50


def test_top_k_with_source_ids_only(server):
    sources = [0, 42, 10**6]
    reply = post(server, fixtures.invocations_body(["source_id"], [[s] for s in sources], {"top_k": 5}))
    assert reply.status == 200, reply.message
    preds = reply.json()["predictions"]
    assert len(preds) == 5 * len(sources)
    for s in sources:
        got = [p for p in preds if p["source_id"] == s]
        assert [p["rank"] for p in got] == [1, 2, 3, 4, 5]
        assert s not in [p["candidate_id"] for p in got]
        assert len({p["candidate_id"] for p in got}) == 5
        assert all(0 <= p["candidate_id"] < N_PRODUCTS for p in got)
        assert all(p["cold_start"] == (s >= N_PRODUCTS) for p in got)
        keys = [(p["decision"], p["prob_calibrated"]) for p in got]
        assert keys == sorted(keys, reverse=True)  # accepted first, then by calibrated probability


def body(columns, data, params=None) -> bytes:
    return fixtures.invocations_body(columns, data, params)


MALFORMED = [
    pytest.param(body(["src", "candidate_id"], [[1, 2]]), ["source_id"], id="wrong-column-name"),
    pytest.param(body(["source_id"], [[1]]), ["candidate_id"], id="pairs-without-candidate_id"),
    pytest.param(body(COLUMNS, [["a", 2]]), ["source_id"], id="string-id"),
    pytest.param(body(COLUMNS, [[1, "x"]]), ["candidate_id"], id="string-candidate"),
    pytest.param(body(COLUMNS, [[1.5, 2]]), ["source_id", "integer"], id="float-id"),
    pytest.param(body(COLUMNS, [[1, None]]), ["candidate_id"], id="null-id"),
    pytest.param(b"", ["JSON"], id="empty-body"),
    pytest.param(b"{not json", ["JSON"], id="not-json"),
    pytest.param(b'{"rows": [[1, 2]]}', ["dataframe_split"], id="unknown-format"),
    pytest.param(body(COLUMNS, []), ["empty request"], id="empty-data"),
    pytest.param(body(COLUMNS, [[float("inf"), 2]]), ["source_id", "finite"], id="infinity-id"),
    pytest.param(body(COLUMNS, [[1, float("-inf")]]), ["candidate_id", "finite"], id="minus-infinity-id"),
    pytest.param(body(COLUMNS, [[float("nan"), 2]]), ["source_id", "NaN"], id="nan-id"),
    pytest.param(body(COLUMNS, [[True, 2]]), ["source_id", "not booleans"], id="boolean-id"),
    pytest.param(body(COLUMNS, [[1, 2], [False, 3]]), ["source_id", "not booleans"], id="boolean-among-ints"),
    pytest.param(body(COLUMNS, [[10**23, 2]]), ["source_id", "int64"], id="beyond-int64"),
    pytest.param(
        body(COLUMNS, [[[1, [2, {"a": 3}]], 2]]),
        ["source_id", "one integer product id per cell"],
        id="list-cell",
    ),
    pytest.param(
        b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [['
        + b"[" * 5000
        + b"1"
        + b"]" * 5000
        + b", 2]]}}",
        ["nested too deeply", "one integer product id per cell"],
        id="nested-5000-deep",
    ),
    pytest.param(
        body(["source_id"], [[1]], {"top_k": -1}), ["top_k must be at least 1"], id="top-k-negative"
    ),
    pytest.param(
        body(["source_id"], [[1]], {"top_k": 10**9}),
        [f"above the limit of {serving.MAX_TOP_K:,}"],
        id="top-k-above-cap",
    ),
    pytest.param(body(["source_id"], [[1]], {"top_k": 1.5}), ["top_k", "1.5"], id="top-k-fraction"),
    pytest.param(body(["source_id"], [[1]], {"top_k": "5"}), ["top_k"], id="top-k-text"),
    pytest.param(
        body(["source_id"], [[1]], {"top_k": 0}), ["candidate_id", '{"top_k": K}'], id="top-k-zero-is-pairs"
    ),
    pytest.param(
        body(COLUMNS, [[1, 2]], {"top_k": 5}),
        ["unexpected column(s) ['candidate_id']"],
        id="candidates-with-top-k",
    ),
]


@pytest.mark.parametrize(
    "payload",
    [
        body(COLUMNS, [[1, 2]] * (serving.MAX_REQUEST_ROWS + 1)),
        body(["source_id"], [[1]] * (serving.MAX_REQUEST_ROWS + 1), {"top_k": 3}),
    ],
    ids=["pairs", "top-k"],
)
def test_more_rows_than_the_limit_get_413_before_mlflow_parses_them(server, payload):
    reply = post(server, payload)
    assert reply.status == 413, (reply.status, reply.text[:500])
    assert f"{serving.MAX_REQUEST_ROWS + 1:,} rows in one request" in reply.message
    assert "batch-topk" in reply.message
    assert "Failed to predict data" not in reply.message  # MLflow's words: it never saw the frame
    assert server.ping() == 200


@pytest.mark.parametrize(("payload", "fragments"), MALFORMED)
def test_malformed_requests_get_400_naming_the_problem_and_server_stays_up(server, payload, fragments):
    reply = post(server, payload)
    assert reply.status == 400, (reply.status, reply.text[:500])
    for fragment in fragments:
        assert fragment.lower() in reply.message.lower(), reply.message[:800]
    assert server.ping() == 200
    assert server.proc.poll() is None


def test_json_nested_near_the_recursion_limit_gets_400_not_500(server):
    """Deep enough to break MLflow's JSON decoder, or the repr of the input frame it puts in
    its refusal message: both were a 500 before the model's guard (``load_context``)."""
    statuses = set()
    for depth in [10, *range(850, 1000, 3), 5000]:
        for open_, close in ("[]", ('{"a": ', "}")):
            cell = open_ * depth + "1" + close * depth
            payload = '{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[' + cell
            reply = post(server, (payload + ", 2]]}}").encode())
            assert reply.status == 400, (depth, reply.status, reply.text[:300])
            statuses.add("nested too deeply" in reply.message)
    assert statuses == {True, False}  # refused by the model, and by the guard
    assert server.ping() == 200


def test_extra_columns_are_refused_and_unknown_params_are_dropped_by_mlflow(server):
    """What MLflow's server does (docs: how-to/serving.md). The signature declares no input schema,
    so the columns reach predict as sent and an extra one is refused (400, naming it). Params
    keep their schema, and MLflow strips the keys it does not declare before predict, which
    would refuse them: a misspelt ``topk`` is answered as pairs. If this changes, MLflow (or
    the signature) changed: update docs/how-to/serving.md."""
    plain = post(server, body(COLUMNS, [[1, 2], [3, 4]]))
    assert plain.status == 200, plain.message
    extra = post(server, body([*COLUMNS, "note"], [[1, 2, "x"], [3, 4, "y"]]))
    assert extra.status == 400, extra.text[:500]
    assert "unexpected column(s) ['note']" in extra.message, extra.text[:500]
    misspelt = post(server, body(COLUMNS, [[1, 2], [3, 4]], {"topk": 5}))  # pairs, not top-K
    assert misspelt.status == 200, misspelt.text[:500]
    assert misspelt.json() == plain.json(), misspelt.text[:500]
    assert server.ping() == 200


def test_csv_scores_pairs_and_its_malformed_bodies_get_400(server):
    """``text/csv`` (no params: pairs only) answers as the same rows in JSON; CSV bodies with
    bad ids or columns are refused by predict like JSON ones."""
    plain = post(server, body(COLUMNS, [[1, 2], [3, 4]]))
    csv = post(server, b"source_id,candidate_id\n1,2\n3,4\n", content_type="text/csv")
    assert csv.status == 200, csv.text[:500]
    assert csv.json() == plain.json(), csv.text[:500]
    for payload, fragment in (
        (b"source_id,candidate_id\n1.5,2\n", "fractions"),
        (b"source_id,candidate_id\nx,2\n", "source_id"),
        (b"source_id,candidate_id,note\n1,2,x\n", "unexpected column(s) ['note']"),
        (b"source_id\n1\n", "missing column(s) ['candidate_id']"),
    ):
        reply = post(server, payload, content_type="text/csv")
        assert reply.status == 400, (payload, reply.status, reply.text[:500])
        assert fragment in reply.message, (payload, reply.status, reply.text[:500])
    assert server.ping() == 200


# --- the body-size guard of `nextbuy serve` (rest_app.BodySizeLimit) ---------------


def test_body_over_the_size_limit_gets_413_before_it_is_parsed(server):
    """A million pairs (seconds of parsing for MLflow) are refused at once, and a request
    that only declares such a size is answered before any of its body is sent."""
    import http.client
    import time

    from nextbuy.serving import rest_app

    limit = rest_app.MAX_BODY_BYTES
    rows = [[123456789, 987654321]] * 1_000_000
    payload = body(COLUMNS, rows)
    assert len(payload) > limit
    started = time.monotonic()
    reply = post(server, payload)
    elapsed = time.monotonic() - started
    assert reply.status == 413, (reply.status, reply.text[:500])
    assert reply.json()["error_code"] == "BAD_REQUEST"
    for fragment in (f"{len(payload)} bytes", f"limit is {limit} bytes", "batch-topk"):
        assert fragment in reply.message, reply.message
    assert elapsed < 5, elapsed

    conn = http.client.HTTPConnection(procs.HOST, server.port, timeout=10)
    try:
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10**12))
        conn.endheaders()  # and not a byte of the body
        declared = conn.getresponse()
        assert declared.status == 413
        assert f"limit is {limit} bytes" in json.loads(declared.read())["message"]
    finally:
        conn.close()
    assert server.ping() == 200
    assert server.proc.poll() is None


def test_chunked_body_over_the_size_limit_gets_413(server):
    import http.client

    from nextbuy.serving import rest_app

    limit = rest_app.MAX_BODY_BYTES
    piece = b"[1, 2], " * 8192  # 64 KiB

    def chunks():
        yield b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": ['
        for _ in range(limit // len(piece) + 2):
            yield piece
        yield b"[1, 2]]}}"

    conn = http.client.HTTPConnection(procs.HOST, server.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/invocations",
            body=chunks(),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        reply = conn.getresponse()
        text = reply.read().decode()
        assert reply.status == 413, (reply.status, text[:500])
        assert f"more than {limit} bytes" in json.loads(text)["message"], text
    finally:
        conn.close()
    assert server.ping() == 200


def test_largest_legitimate_request_passes_the_size_guard(server):
    """100,000 pairs (MAX_REQUEST_ROWS) with ids as long as int64 allows are for the model
    to answer (unknown ids: cold start), not for the guard to refuse."""
    big = -(2**63)  # the longest int64 in JSON: 20 characters
    rows = [[big, big]] * serving.MAX_REQUEST_ROWS
    reply = post(server, body(COLUMNS, rows), timeout=120)
    assert reply.status == 200, (reply.status, reply.text[:500])
    preds = reply.json()["predictions"]
    assert len(preds) == serving.MAX_REQUEST_ROWS
    assert all(p["cold_start"] for p in preds[:100])
    csv = b"source_id,candidate_id\n" + f"{big},{big}\n".encode() * serving.MAX_REQUEST_ROWS
    assert post(server, csv, timeout=120, content_type="text/csv").status == 200
