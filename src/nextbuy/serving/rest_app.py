"""The REST app ``nextbuy serve`` runs: MLflow's own scoring server (the FastAPI app of
``mlflow.pyfunc.scoring_server``, as ``mlflow models serve`` builds it) behind a guard on the
size of request bodies, and behind the guards on rows, slots and queue of ``limits``.

MLflow's server reads and parses a whole body before the model's row limit
(``requests.MAX_REQUEST_ROWS``) can refuse it: a body of millions of rows costs seconds of
CPU, shared with every other request, just to be refused. :class:`BodySizeLimit` answers 413
to a body over the limit before any of it reaches MLflow: at once when its ``Content-Length``
says so (before a byte of the body is read), else (chunked) as soon as the bytes received
pass the limit; what is still coming is then dropped unparsed.

MLflow's path also costs milliseconds per small request outside the model: a thread hop,
its HTTP middleware, pandas parsing, schema enforcement and a pure-Python JSON writer (of a
100-pair request's 1.3 ms in process, 0.87 ms was ``predictions_to_json``).
:class:`PairFastPath` answers the request the store sends most, plain pair
scoring, itself, with the same JSON; everything else goes MLflow's way.

``app`` is built on first access (``uvicorn nextbuy.serving.rest_app:app``), from the model
directory in the env var ``scoring_server._SERVER_MODEL_PATH``, as MLflow's
``scoring_server/app.py`` does; importing this module loads no model.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from nextbuy.serving.asgi import ASGIApp, Receive, Scope, Send, header, replay
from nextbuy.serving.bundle import PAIR_COLUMNS
from nextbuy.serving.limits import Admission, ContentEncoding, RowLimit, serving_config
from nextbuy.serving.requests import INPUT_COLUMNS, MAX_REQUEST_ROWS

if TYPE_CHECKING:
    from nextbuy.config import ServingConfig

# Bytes a legitimate row may take, with room to spare. The longest rows of a
# MAX_REQUEST_ROWS-row request are pairs of int64 extremes (-9223372036854775808), measured:
#   text/csv:                                     `-9…8,-9…8\n`                      42 B
#   dataframe_split, json.dumps defaults:         `[-9…8, -9…8], `                    46 B
#   dataframe_records:                            `{"source_id": -9…8, "candidate_id": -9…8}, `  75 B
#   dataframe_split, json.dumps(indent=2):        one id a line, indented             76 B
# so a 100,000-row body is 4.6 MB as plain JSON (4.2 MB as CSV, 7.6 MB pretty-printed).
# 100 B a row is ~2x the plain JSON and still covers the wordier encodings:
# MAX_BODY_BYTES = 100,000 rows x 100 B = 10,000,000 bytes.
# (Small ids pack more rows into that: ~1.7 million `[1,2],` fit, and are parsed before the
# row limit refuses them. The guard bounds that cost; it cannot remove it.)
BYTES_PER_ROW = 100
MAX_BODY_BYTES = MAX_REQUEST_ROWS * BYTES_PER_ROW
MAX_BODY_BYTES_ENV = "NEXTBUY_MAX_BODY_BYTES"
# "0" turns PairFastPath off (`nextbuy serve --no-fast-path`): every request goes MLflow's way.
FAST_PATH_ENV = "NEXTBUY_REST_FAST_PATH"
# After a 413, how long the rest of the body is read (and dropped) so the client sees the answer.
DRAIN_SECONDS = 30.0


def max_body_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """The body limit: $NEXTBUY_MAX_BODY_BYTES when set (a positive integer of bytes), else
    ``MAX_BODY_BYTES``. ValueError naming the variable for anything else."""
    raw = environ.get(MAX_BODY_BYTES_ENV, "").strip()
    if not raw:
        return MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{MAX_BODY_BYTES_ENV}={raw!r}: must be a positive integer number of bytes "
            f"(the largest request body served; default {MAX_BODY_BYTES})"
        )
    return value


def too_large_message(limit: int, size: int | None) -> str:
    """What a 413 says: the size (None: chunked, only known to pass ``limit``) and the limit."""
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes (chunked)"
    return (
        f"request body of {what}; the limit is {limit} bytes (about {MAX_REQUEST_ROWS} rows, "
        f"set by {MAX_BODY_BYTES_ENV}) (use `nextbuy batch-topk` for bulk scoring)"
    )


class BodySizeLimit:
    """Pure ASGI middleware: HTTP requests whose body is over ``max_bytes`` get 413 with
    MLflow's error JSON (``{"error_code": "BAD_REQUEST", "message": ...}``) and never reach
    ``app``. A ``Content-Length`` over the limit is answered before the body is read. A body
    without one (chunked) is read up to the limit, then handed to ``app`` as one message, or
    answered 413 once it passes the limit. Everything else passes through unchanged.

    After a 413 the rest of the body is read and thrown away (never kept or parsed) for up to
    ``drain_seconds``, as nginx does, before the response ends: a client that sends its whole
    body before reading (urllib, or any that asks to close the connection) would otherwise have
    the server close on it mid-send and see a reset instead of the 413. A client waiting for
    ``100 Continue`` gets the 413 instead, and the connection is closed: it sends nothing."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_seconds: float = DRAIN_SECONDS):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None:
            if length > self.max_bytes:
                # A client waiting for "100 Continue" sends no body: nothing to drain, then close.
                waiting = header(scope, b"expect").lower() == b"100-continue"
                await self._refuse(receive, send, length, drain=not waiting, close=waiting)
                return
            await self.app(scope, receive, send)  # the server delivers no more than it declares
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody left to answer
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                more = message.get("more_body", False)
                await self._refuse(receive, send, None, drain=more, close=False)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)

    async def _refuse(self, receive: Receive, send: Send, size: int | None, drain: bool, close: bool) -> None:
        body = json.dumps(
            {"error_code": "BAD_REQUEST", "message": too_large_message(self.max_bytes, size)}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        # The whole answer goes out now; the response ends once the body is drained.
        await send({"type": "http.response.body", "body": body, "more_body": drain})
        if drain:
            await _drain(receive, self.drain_seconds)
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drain(receive: Receive, seconds: float) -> None:
    """Read and drop what is left of a request body, for at most ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    """The request's Content-Length; None when absent or not a number (then bytes are counted)."""
    try:
        return int(header(scope, b"content-length"))
    except ValueError:
        return None


# -- the fast path for plain pair scoring ---------------------------------------------------------

ScoreColumns = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]
_JSON_TYPES = (b"application/json", b"application/json;charset=utf-8")  # spaces removed
_FLOAT_COLUMNS = ("score", "uncertainty", "prob_calibrated")


def plain_pairs(body: bytes) -> np.ndarray | None:
    """The (source_id, candidate_id) pairs of a body that is exactly
    ``{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[u, v], ...]}}``
    with 1 to ``MAX_REQUEST_ROWS`` rows of JSON integers within int64, as an int64 [n, 2]
    array; None for any other body (other keys or forms, params, booleans, floats, text,
    nulls, out-of-range ids, bad JSON): those are MLflow's to answer or refuse."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or len(doc) != 1:
        return None
    split = doc.get("dataframe_split")
    if type(split) is not dict or split.keys() != {"columns", "data"}:
        return None
    if split["columns"] != list(INPUT_COLUMNS):
        return None
    data = split["data"]
    if type(data) is not list or not 1 <= len(data) <= MAX_REQUEST_ROWS:
        return None
    # `type(...) is int`: bool is a subclass of int, and numpy would take true as 1.
    if not all(type(r) is list and len(r) == 2 and type(r[0]) is int and type(r[1]) is int for r in data):
        return None
    try:
        return np.array(data, dtype=np.int64)
    except OverflowError:  # beyond int64: MLflow's path names the values
        return None


def pairs_json(columns: Mapping[str, np.ndarray]) -> bytes | None:
    """MLflow's answer to a pair request (``{"predictions": [{column: value, ...}, ...]}``,
    one record per row, columns in ``PAIR_COLUMNS`` order, each value the Python scalar pandas
    gives) as compact JSON; None when a float is not finite (MLflow writes NaN/Infinity
    there, which orjson cannot)."""
    if not all(np.isfinite(columns[c]).all() for c in _FLOAT_COLUMNS):
        return None
    values = [columns[c].tolist() for c in PAIR_COLUMNS]
    rows = zip(*values, strict=True)
    return orjson.dumps({"predictions": [dict(zip(PAIR_COLUMNS, row, strict=True)) for row in rows]})


class PairFastPath:
    """Pure ASGI middleware: a POST to /invocations whose JSON body :func:`plain_pairs`
    accepts is scored by ``score_columns`` (the served bundle's) and answered here, in the
    event loop, with the JSON MLflow's server gives for it (tests/serving/test_rest_app.py and
    test_rest.py compare the two). Every other request, and the body as received, goes on to
    ``app`` unchanged: other encodings, top-K, params, and everything the model refuses keep
    MLflow's answers and messages."""

    def __init__(self, app: ASGIApp, score_columns: ScoreColumns):
        self.app = app
        self.score_columns = score_columns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._candidate(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # bounded: BodySizeLimit stands in front
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        pairs = plain_pairs(body)
        answer = None if pairs is None else pairs_json(self.score_columns(pairs[:, 0], pairs[:, 1]))
        if answer is None:
            await self.app(scope, replay(body, receive), send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    @staticmethod
    def _candidate(scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") == "/invocations"
            and header(scope, b"content-type").lower().replace(b" ", b"") in _JSON_TYPES
        )


def build_app(
    model_uri: str,
    max_bytes: int | None = None,
    fast_path: bool = True,
    limits: ServingConfig | None = None,
    drain_on_signals: bool = False,
) -> BodySizeLimit:
    """MLflow's scoring app for the pyfunc model at ``model_uri`` (as its ``app.py`` builds
    it), behind :class:`PairFastPath` (unless ``fast_path`` is false), ``limits.Admission``
    (slots, queue and cancellation: ``limits``, default ``limits.serving_config()``),
    ``limits.RowLimit``, ``limits.ContentEncoding`` (gzip bodies) and, outermost,
    :class:`BodySizeLimit` (``max_bytes`` default: :func:`max_body_bytes`).
    ``drain_on_signals``: SIGTERM and SIGINT start the admission's drain once the server has
    started (``limits.drain_on_signals``), as ``nextbuy serve`` runs it."""
    from mlflow.pyfunc import scoring_server  # MLflow's server: only where an app is built

    limit = max_body_bytes() if max_bytes is None else max_bytes
    config = serving_config() if limits is None else limits
    model = scoring_server.load_model_with_mlflow_config(model_uri)
    app: ASGIApp = scoring_server.init(model)
    if fast_path:
        app = PairFastPath(app, model.unwrap_python_model().bundle.score_columns)
    admission = Admission(app, config, on_signals=drain_on_signals)
    return BodySizeLimit(ContentEncoding(RowLimit(admission), limit), limit)


def __getattr__(name: str) -> Any:
    """``app``: built once, on first access, from the model path MLflow's env var names."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from mlflow.pyfunc import scoring_server  # MLflow's server: only where an app is built

    model_uri = os.environ.get(scoring_server._SERVER_MODEL_PATH)
    if not model_uri:
        raise RuntimeError(
            f"{__name__}:app needs the model's local path in ${scoring_server._SERVER_MODEL_PATH}: "
            "start it with `nextbuy serve`"
        )
    built = build_app(model_uri, fast_path=os.environ.get(FAST_PATH_ENV, "1") != "0", drain_on_signals=True)
    globals()["app"] = built
    return built
