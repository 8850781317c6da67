"""The body-size guard of ``nextbuy serve`` (``rest_app.BodySizeLimit``) on its own, in front
of a tiny ASGI app that echoes the body it receives: a Content-Length over the limit is
refused before a byte is read, a chunked body once it passes the limit, and what is under
the limit reaches the app unchanged. (The guard in front of MLflow's server, for real:
tests/serving/test_rest.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy import serving
from nextbuy.serving import rest_app

LIMIT = 100


class Echo:
    """An ASGI app answering 200 with the body it read; remembers whether it was called."""

    def __init__(self):
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Exchange:
    """One request run through an ASGI app: its body arrives as ``chunks`` (then the client
    is gone); ``events`` is the order of what happened ("receive" or the response message's
    type); ``status``, ``headers`` and ``body`` are the response's."""

    def __init__(self, app, chunks, content_length=None, scope_type="http", extra_headers=()):
        given = {name for name, _ in extra_headers}
        headers = [
            *([] if b"content-type" in given else [(b"content-type", b"application/json")]),
            *extra_headers,
        ]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        scope = {"type": scope_type, "method": "POST", "path": "/invocations", "headers": headers}
        self.pending = list(chunks)
        self.events: list[str] = []
        self.sent: list[dict] = []
        asyncio.run(app(scope, self.receive, self.send))
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        self.status = start["status"]
        self.headers = dict(start["headers"])
        self.body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        self.ended = not self.sent[-1].get("more_body", False)

    async def receive(self):
        self.events.append("receive")
        if not self.pending:
            return {"type": "http.disconnect"}
        chunk = self.pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.pending)}

    async def send(self, message):
        self.events.append(message["type"])
        self.sent.append(message)

    @property
    def received(self) -> int:
        return self.events.count("receive")

    @property
    def message(self) -> str:
        reply = json.loads(self.body)
        assert reply["error_code"] == "BAD_REQUEST"
        return reply["message"]


def test_content_length_over_the_limit_is_answered_before_the_body_is_read():
    echo = Echo()
    x = Exchange(rest_app.BodySizeLimit(echo, LIMIT), [b"@" * 60, b"@" * 41], 101)
    assert x.status == 413
    assert echo.calls == 0
    assert x.ended
    # The whole answer first; then the rest of the body is read and dropped.
    assert x.events[:2] == ["http.response.start", "http.response.body"]
    assert x.received == 2
    assert b"@" not in x.body
    assert b"connection" not in x.headers
    assert int(x.headers[b"content-length"]) == len(x.body)
    for fragment in ("101 bytes", f"limit is {LIMIT} bytes", "nextbuy batch-topk", "NEXTBUY_MAX_BODY_BYTES"):
        assert fragment in x.message, x.message


def test_a_client_waiting_for_100_continue_gets_the_413_instead_and_the_connection_closes():
    echo = Echo()
    x = Exchange(
        rest_app.BodySizeLimit(echo, LIMIT), [b"x" * 101], 101, extra_headers=[(b"expect", b"100-continue")]
    )
    assert x.status == 413
    assert x.received == 0
    assert echo.calls == 0
    assert x.ended
    assert x.headers[b"connection"] == b"close"


def test_draining_after_a_413_stops_after_drain_seconds():
    """A client that declares a huge body and sends nothing does not hold the answer open."""
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    guard = rest_app.BodySizeLimit(Echo(), LIMIT, drain_seconds=0.2)
    scope = {"type": "http", "headers": [(b"content-length", b"1000000000000")]}
    started = time.monotonic()
    asyncio.run(guard(scope, receive, send))
    assert time.monotonic() - started < 5
    assert sent[0]["status"] == 413
    assert sent[-1]["more_body"] is False


def test_chunked_body_over_the_limit_is_refused_once_past_it_and_never_reaches_the_app():
    echo = Echo()
    chunks = [b"x" * 40] * 10  # 400 bytes, the limit passed in the third chunk
    x = Exchange(rest_app.BodySizeLimit(echo, LIMIT), chunks, None)
    assert x.status == 413
    assert echo.calls == 0
    assert x.ended
    assert x.events[:5] == ["receive"] * 3 + ["http.response.start", "http.response.body"]
    assert f"more than {LIMIT} bytes" in x.message
    assert "batch-topk" in x.message


@pytest.mark.parametrize(
    ("chunks", "content_length"),
    [
        ([b"x" * LIMIT], LIMIT),  # exactly the limit
        ([b'{"a": 1}'], 8),
        ([b"x" * 40, b"y" * 40, b"z" * 20], None),  # chunked, exactly the limit
        ([b""], None),
        ([b"abc"], "not-a-number"),  # bytes are counted instead
    ],
)
def test_bodies_within_the_limit_reach_the_app_unchanged(chunks, content_length):
    echo = Echo()
    x = Exchange(rest_app.BodySizeLimit(echo, LIMIT), chunks, content_length)
    assert x.status == 200
    assert echo.calls == 1
    assert x.body == b"".join(chunks)


def test_other_scopes_pass_through():
    echo = Echo()
    x = Exchange(rest_app.BodySizeLimit(echo, 1), [b"x" * 10], 10, scope_type="websocket")
    assert x.status == 200
    assert echo.calls == 1


def test_the_default_limit_admits_the_largest_legitimate_100k_row_bodies():
    lo = -(2**63)
    rows = [[lo, lo]] * serving.MAX_REQUEST_ROWS
    split = json.dumps({"dataframe_split": {"columns": list(serving.INPUT_COLUMNS), "data": rows}})
    csv = "source_id,candidate_id\n" + f"{lo},{lo}\n" * serving.MAX_REQUEST_ROWS
    pretty = json.dumps(
        {"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": rows}}, indent=2
    )
    assert rest_app.MAX_BODY_BYTES == serving.MAX_REQUEST_ROWS * rest_app.BYTES_PER_ROW
    assert 1.5 < rest_app.MAX_BODY_BYTES / len(split) < 2.5  # ~2x the plain JSON
    for body in (split, csv, pretty):
        assert len(body.encode()) < rest_app.MAX_BODY_BYTES


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "ten", "1e6"])
def test_a_bad_NEXTBUY_MAX_BODY_BYTES_is_refused_naming_it(raw):
    with pytest.raises(ValueError, match=r"NEXTBUY_MAX_BODY_BYTES.*positive integer"):
        rest_app.max_body_bytes({rest_app.MAX_BODY_BYTES_ENV: raw})


def test_NEXTBUY_MAX_BODY_BYTES_overrides_the_default():
    assert rest_app.max_body_bytes({}) == rest_app.MAX_BODY_BYTES
    assert rest_app.max_body_bytes({rest_app.MAX_BODY_BYTES_ENV: ""}) == rest_app.MAX_BODY_BYTES
    assert rest_app.max_body_bytes({rest_app.MAX_BODY_BYTES_ENV: " 2048 "}) == 2048


def test_serve_refuses_a_bad_NEXTBUY_MAX_BODY_BYTES_before_touching_the_model(monkeypatch):
    from typer.testing import CliRunner

    from nextbuy.cli import app

    monkeypatch.setenv(rest_app.MAX_BODY_BYTES_ENV, "lots")
    result = CliRunner().invoke(app, ["serve", "--model", "models:/nowhere@champion"])
    assert result.exit_code == 2, result.output
    assert "NEXTBUY_MAX_BODY_BYTES" in result.output
    assert "positive integer" in result.output


def test_the_app_needs_the_model_path_that_nextbuy_serve_sets(monkeypatch):
    from mlflow.pyfunc import scoring_server

    monkeypatch.delenv(scoring_server._SERVER_MODEL_PATH, raising=False)
    monkeypatch.delitem(vars(rest_app), "app", raising=False)
    with pytest.raises(RuntimeError, match="nextbuy serve"):
        rest_app.app  # noqa: B018 - built on first access


# --- the pair fast path -----------------------------------------------------------------


def split_body(data, columns=("source_id", "candidate_id"), **extra) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": data}, **extra}).encode()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from nextbuy.bench import serving_fixtures as fixtures

    files = fixtures.write_bundle_files(tmp_path_factory.mktemp("fast") / "bundle", 300, 8, seed=3)
    return fixtures.load_bundle(files)


def mlflow_answer(bundle, pairs) -> dict:
    """What MLflow's scoring server writes for the model's answer to ``pairs``."""
    from io import StringIO

    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = StringIO()
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    predictions_to_json(bundle.score(pairs[:, 0], pairs[:, 1]), out)
    return json.loads(out.getvalue())


def test_plain_pair_bodies_are_read_as_int64_pairs():
    pairs = rest_app.plain_pairs(split_body([[1, 2], [-5, 2**63 - 1]]))
    assert pairs.dtype == np.int64
    assert pairs.tolist() == [[1, 2], [-5, 2**63 - 1]]


@pytest.mark.parametrize(
    "body",
    [
        split_body([[1, 2]], params={"top_k": 0}),  # any params: MLflow's to check
        split_body([[1]], columns=["source_id"]),  # top-K
        split_body([[2, 1]], columns=["candidate_id", "source_id"]),  # another column order
        split_body([[1, 2, 3]], columns=["source_id", "candidate_id", "x"]),
        split_body([]),  # empty
        split_body([[True, 2]]),  # booleans numpy would read as 1
        split_body([[1.0, 2]]),  # floats
        split_body([["1", 2]]),  # text
        split_body([[None, 2]]),
        split_body([[[1], 2]]),  # nested
        split_body([[1, 2], [3]]),  # ragged
        split_body([[2**63, 1]]),  # beyond int64
        json.dumps(
            {"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[1, 2]], "index": [0]}}
        ).encode(),
        json.dumps({"dataframe_records": [{"source_id": 1, "candidate_id": 2}]}).encode(),
        json.dumps([[1, 2]]).encode(),
        b'{"dataframe_split": ',  # not JSON
        b"source_id,candidate_id\n1,2\n",
    ],
)
def test_anything_but_a_plain_pair_request_is_left_to_mlflow(body):
    assert rest_app.plain_pairs(body) is None


def test_more_rows_than_the_request_limit_are_left_to_mlflow(monkeypatch):
    monkeypatch.setattr(rest_app, "MAX_REQUEST_ROWS", 3)
    assert rest_app.plain_pairs(split_body([[1, 2]] * 3)) is not None
    assert rest_app.plain_pairs(split_body([[1, 2]] * 4)) is None


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 320), st.integers(-2, 320)),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from(
        [b"application/json", b"application/json; charset=utf-8", b"Application/JSON;charset=UTF-8"]
    ),
)
def test_the_fast_path_answers_plain_pairs_with_mlflow_s_json(bundle, pairs, content_type):
    """Same records, keys in the same order, the same numbers (floats to the last bit), the
    same booleans: the answer MLflow's server would write, and the app behind is not called."""
    echo = Echo()
    body = split_body([list(p) for p in pairs])
    x = Exchange(
        rest_app.PairFastPath(echo, bundle.score_columns),
        [body[:7], body[7:]],  # a body in two parts is read whole
        extra_headers=[(b"content-type", content_type)],
    )
    assert x.status == 200
    assert echo.calls == 0
    assert x.headers[b"content-type"] == b"application/json"
    assert int(x.headers[b"content-length"]) == len(x.body)
    answer, expected = json.loads(x.body), mlflow_answer(bundle, pairs)
    assert answer == expected
    assert [list(r) for r in answer["predictions"]] == [list(r) for r in expected["predictions"]]


@pytest.mark.parametrize(
    ("headers", "method", "path", "body"),
    [
        ([], "POST", "/invocations", split_body([[1, 2]], params={"top_k": 3})),  # not plain
        ([(b"content-type", b"text/csv")], "POST", "/invocations", b"source_id,candidate_id\n1,2\n"),
        (
            [(b"content-type", b"application/json; charset=latin-1")],
            "POST",
            "/invocations",
            split_body([[1, 2]]),
        ),
        ([], "POST", "/other", split_body([[1, 2]])),
        ([], "GET", "/invocations", split_body([[1, 2]])),
    ],
)
def test_other_requests_reach_mlflow_s_app_with_their_body_unchanged(bundle, headers, method, path, body):
    echo = Echo()
    app = rest_app.PairFastPath(echo, bundle.score_columns)
    scope_headers = headers or [(b"content-type", b"application/json")]
    scope = {"type": "http", "method": method, "path": path, "headers": scope_headers}
    sent: list[dict] = []
    parts = [body[:5], body[5:]]

    async def receive():
        return (
            {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}
            if parts
            else {"type": "http.disconnect"}
        )

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert echo.calls == 1
    assert b"".join(m.get("body", b"") for m in sent[1:]) == body


def test_a_non_finite_answer_goes_mlflow_s_way(bundle):
    """MLflow writes NaN/Infinity, which orjson cannot: such answers are left to it."""

    def with_nan(src, dst):
        columns = dict(bundle.score_columns(src, dst))
        columns["score"] = np.full(src.size, np.nan)
        return columns

    echo = Echo()
    body = split_body([[1, 2]])
    x = Exchange(rest_app.PairFastPath(echo, with_nan), [body])
    assert echo.calls == 1
    assert x.body == body


# --- `nextbuy serve`: what it checks, then what it execs ---------------------------


def serve_in(store_dir, monkeypatch, *args: str):
    """``nextbuy serve ARGS`` against a throw-away store, with the exec into uvicorn caught
    (never run): the CLI result and the (cmd, env) it would have exec'd, or None."""
    from typer.testing import CliRunner

    from nextbuy.bench import serving_fixtures as fixtures
    from nextbuy.cli import app

    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    execd: list[tuple[list[str], dict[str, str]]] = []

    def fake_exec(file, cmd, env):
        execd.append((list(cmd), dict(env)))
        raise SystemExit(0)

    monkeypatch.setattr("os.execvpe", fake_exec)
    monkeypatch.setattr("tempfile.tempdir", str(store_dir))  # the download lands in the test's dir
    with fixtures.mlflow_store(uri):
        result = CliRunner().invoke(app, ["serve", *args])
    return result, (execd[0] if execd else None)


def test_serve_of_a_model_that_is_not_there_exits_1_saying_so(tmp_path, monkeypatch):
    result, execd = serve_in(tmp_path, monkeypatch, "--model", "models:/nowhere@champion")
    assert result.exit_code == 1, result.output
    assert execd is None, result.output
    assert "models:/nowhere@champion" in result.output
    assert not list(tmp_path.glob("nextbuy-serve-*"))  # no empty download folder left behind


@pytest.mark.slow
def test_serve_checks_the_champion_then_execs_uvicorn_on_the_guarded_app(tmp_path, monkeypatch):
    """The checked download is what uvicorn is told to load; a changed file stops it before."""
    import sys

    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server

    from nextbuy import procs
    from nextbuy.bench import serving_fixtures as fixtures
    from nextbuy.config import ServingConfig, load_section

    files = fixtures.write_bundle_files(tmp_path / "bundle", 50, 4)
    fixtures.register_champion(files, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    result, execd = serve_in(
        tmp_path, monkeypatch, "--model", fixtures.champion_uri(), "--port", "5123", "--workers", "2"
    )
    assert result.exit_code == 0, result.output
    assert execd is not None, result.output
    assert "http://127.0.0.1:5123" in result.output
    assert "(v1)" in result.output
    cmd, env = execd
    assert cmd[:3] == [sys.executable, "-m", "uvicorn"]
    assert cmd[-1] == "nextbuy.serving.rest_app:app"
    drain = load_section(ServingConfig).drain_s  # params.yaml's, from the test's working directory
    assert " ".join(cmd[3:-1]) == (
        f"--host {procs.HOST} --port 5123 --workers 2 --timeout-graceful-shutdown {drain}"
    )
    assert json.loads(env[serving.SERVING_ENV]) == load_section(ServingConfig).model_dump()
    served = env[scoring_server._SERVER_MODEL_PATH]
    assert served.startswith("file://")
    assert (Path(served.removeprefix("file://")) / "MLmodel").is_file()
    assert served.startswith(tmp_path.as_uri())
    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    assert env[timeout.name] == str(timeout.get())
    assert env[rest_app.FAST_PATH_ENV] == "1"  # the pair fast path is on unless asked otherwise
    result, execd = serve_in(tmp_path, monkeypatch, "--model", fixtures.champion_uri(), "--no-fast-path")
    assert result.exit_code == 0, result.output
    assert execd[1][rest_app.FAST_PATH_ENV] == "0", result.output

    stored = next((tmp_path / "mlartifacts").rglob("artifacts/thresholds.json"))
    stored.write_text(stored.read_text() + " ")
    result, execd = serve_in(tmp_path, monkeypatch, "--model", fixtures.champion_uri())
    assert result.exit_code == 1, result.output
    assert execd is None, result.output
    said = " ".join(result.output.split())  # rich wraps lines
    assert "(artifacts/thresholds.json): changed" in said
    assert "refusing to load it" in said
