"""What ``nextbuy serve`` takes on: no more rows than the model's limit, no more work than it
has slots and queue for, and no work for a client that has gone.

:class:`RowLimit` answers 413 to a body of more rows than ``MAX_REQUEST_ROWS`` before MLflow
parses it into a frame (and, refusing it, writes the frame's repr into its message): it
counts the rows of a JSON body with orjson (a C parser, no frame built) and of a CSV body by
its lines. Every row takes at least two bytes (``1,`` or ``1\\n``), so a body under twice the
limit cannot hold too many rows and is not looked at.

:class:`Admission` holds each POST /invocations to one of ``max_concurrent`` slots (an
``anyio.CapacityLimiter``); at most ``max_queue`` requests wait for one, and the next is
answered 503 with a ``Retry-After`` header at once. While a request waits or is computed it
watches its connection: when the client goes (ASGI ``http.disconnect``) the wait or the work is
cancelled (an anyio cancel scope), and the request's event (``requests.CANCELLED``)
is set, so the model's worker thread, which a coroutine's cancellation does not reach, stops
at its next check. The event is also set when the request ends in any other way: uvicorn
cancelling it after SIGTERM's grace period (``--timeout-graceful-shutdown``), and MLflow's
timeout, which answers 504 while its thread runs on. uvicorn's own ``--limit-concurrency``
is not used: it counts idle keep-alive connections and health checks, and answers 503
without a Retry-After. The limits hold per server process (``--workers`` N: N times them).

After SIGTERM (or Ctrl-C) the server goes on listening, answering 503 at once to every request
that arrives, until nothing is in flight and no request has arrived for ``QUIET_S`` (at the
latest when work in flight is cut off); only then does uvicorn's graceful shutdown start and
stop listening. Requests a client had sent before the signal but the server had not read yet
(in the listen backlog, unparsed on a busy host) so get a 503 too, not a connection reset.

The settings are params.yaml's ``serving`` section, handed to the app by ``nextbuy serve``
in ``$NEXTBUY_SERVING`` (JSON).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import orjson

from nextbuy.config import ServingConfig, load_section
from nextbuy.serving.asgi import ASGIApp, Message, Receive, Scope, Send, header, replay
from nextbuy.serving.requests import CANCELLED, MAX_REQUEST_ROWS

SERVING_ENV = "NEXTBUY_SERVING"
# After SIGTERM, work in flight is cut off this long before uvicorn's grace period (drain_s)
# ends, so the 503s are written before uvicorn closes the connections.
CUTOFF_S = 1.0
# After SIGTERM, listening stops once no request has arrived for this long (and none is in flight).
QUIET_S = 0.5


def serving_config(environ: Mapping[str, str] = os.environ) -> ServingConfig:
    """The ``serving`` settings ``nextbuy serve`` passed in $NEXTBUY_SERVING, else params.yaml's
    (a server started by hand in the project)."""
    raw = environ.get(SERVING_ENV)
    if raw:
        return ServingConfig.model_validate(json.loads(raw))
    return load_section(ServingConfig)


def _is_invocation(scope: Scope) -> bool:
    return scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") == "/invocations"


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (bounded by ``BodySizeLimit`` in front); None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """MLflow's error JSON (``{"error_code": ..., "message": ...}``) with ``status``."""
    code = "BAD_REQUEST" if status < 500 else "TEMPORARILY_UNAVAILABLE"
    body = json.dumps({"error_code": code, "message": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


# ---- content encoding ------------------------------------------------------------------------

ENCODINGS = ("gzip",)  # Content-Encoding a request body may come in (batch clients compress)


def gunzipped(body: bytes, limit: int) -> bytes | None:
    """``body`` decompressed, at most ``limit`` bytes of it (None when it would be more);
    ValueError when it is not gzip data."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip's header and trailer
    try:
        out = inflate.decompress(body, limit + 1)
    except zlib.error as err:
        raise ValueError(str(err)) from None
    if len(out) > limit:
        return None
    if not inflate.eof:
        raise ValueError("the gzip stream ends early")
    return out


class ContentEncoding:
    """Pure ASGI middleware: a POST /invocations body sent with ``Content-Encoding: gzip`` is
    decompressed (at most ``max_bytes`` of it, the same limit a plain body has: 413 beyond) and
    handed on as a plain body with its new ``Content-Length``, so the row limit and the scoring
    read what the client meant. Data that is not gzip gets 400 naming the header; any other
    encoding 415 naming it. Requests without the header pass unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoding = header(scope, b"content-encoding").strip().lower().decode("latin-1")
        if not _is_invocation(scope) or encoding in ("", "identity"):
            await self.app(scope, receive, send)
            return
        if encoding not in ENCODINGS:
            await _answer(
                send, 415, f"Content-Encoding: {encoding} is not served: send the body plain or gzip"
            )
            return
        body = await _read_body(receive)
        if body is None:
            return
        try:
            plain = gunzipped(body, self.max_bytes)
        except ValueError as err:
            await _answer(send, 400, f"Content-Encoding: gzip, but the body is not gzip data ({err})")
            return
        if plain is None:
            message = (
                f"gzip body decompresses to more than {self.max_bytes} bytes, the limit of a request body"
            )
            await _answer(send, 413, message)
            return
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(plain)).encode()))
        await self.app({**scope, "headers": headers}, replay(plain, receive), send)


# ---- rows ------------------------------------------------------------------------------------


def json_rows(doc: Any) -> int | None:
    """Rows of a parsed MLflow JSON request: ``dataframe_split.data``, ``dataframe_records``,
    ``instances`` / ``inputs`` (a list, or columns of lists: the longest); None for any
    other shape (MLflow answers those)."""
    if not isinstance(doc, dict):
        return None
    split = doc.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        return len(split["data"])
    for key in ("dataframe_records", "instances", "inputs"):
        value = doc.get(key)
        if isinstance(value, list):
            return len(value)
        if key != "dataframe_records" and isinstance(value, dict):
            return max((len(v) for v in value.values() if isinstance(v, list)), default=None)
    return None


def csv_rows(body: bytes) -> int:
    """Lines after the header of a CSV body (blank lines count: an upper bound on rows)."""
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    return max(lines - 1, 0)


def body_rows(body: bytes, content_type: bytes) -> int | None:
    """Rows of a request body, counted without building a frame; None when not counted (a
    body too small to pass the limit, not strict JSON, a shape MLflow does not read as rows)."""
    if len(body) < 2 * (MAX_REQUEST_ROWS + 1):
        return None
    if content_type.split(b";")[0].strip().lower() == b"text/csv":
        return csv_rows(body)
    try:
        return json_rows(orjson.loads(body))
    except orjson.JSONDecodeError:  # NaN, Infinity, bad JSON: MLflow's to read or refuse
        return None


def too_many_rows_message(rows: int, limit: int = MAX_REQUEST_ROWS) -> str:
    return (
        f"{rows:,} rows in one request; the limit is {limit:,} rows per request: send fewer "
        "(use `nextbuy batch-topk` for bulk scoring)"
    )


class RowLimit:
    """Pure ASGI middleware: a POST /invocations body of more than ``MAX_REQUEST_ROWS`` rows
    (:func:`body_rows`) gets 413 with MLflow's error JSON and never reaches ``app``; every
    other request goes on with its body unchanged."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_invocation(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        rows = body_rows(body, header(scope, b"content-type"))
        if rows is not None and rows > MAX_REQUEST_ROWS:
            await _answer(send, 413, too_many_rows_message(rows))
            return
        await self.app(scope, replay(body, receive), send)


# ---- slots, queue, cancellation --------------------------------------------------------------


class _Request:
    """One admitted request: its body, its cancellation event, and how far its answer got."""

    def __init__(self, body: bytes):
        self.body = body
        self.cancelled = threading.Event()
        self.over = anyio.Event()  # the client has gone, or the answer is complete
        self.started = False  # the answer has begun
        self.answered = False  # the answer is complete
        self.computing = False  # holds a slot
        self.stopped = False  # cancelled because the server is stopping

    def receive(self) -> Receive:
        """``receive`` for the app: the body once, then ``http.disconnect`` once the request is
        over (the connection's own receive belongs to the watcher)."""
        sent = False

        async def app_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await self.over.wait()
            return {"type": "http.disconnect"}

        return app_receive

    def send(self, send: Send) -> Send:
        async def app_send(message: Message) -> None:
            await send(message)
            self.started = True
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.answered = True
                self.over.set()

        return app_send


class Admission:
    """Pure ASGI middleware: POST /invocations computed in at most ``max_concurrent`` at once,
    at most ``max_queue`` waiting (the next gets 503 with ``Retry-After: retry_after_s``), and
    cancelled, waiting or computing, once its client has gone. Other requests pass through.

    Once :meth:`stop` is called (with ``on_signals``: on SIGTERM or SIGINT, from the ASGI
    lifespan's startup on, :func:`drain_on_signals`), requests that arrive or wait get 503
    at once, and those computing have until ``drain_s`` minus ``CUTOFF_S`` after the signal
    to finish, then are cancelled and answered 503: before uvicorn's own grace period
    (``--timeout-graceful-shutdown drain_s``) ends and it closes what is left unanswered.
    ``stop``'s ``then`` (uvicorn's shutdown) is called once the drain is over (``drained``)."""

    def __init__(self, app: ASGIApp, config: ServingConfig, on_signals: bool = False):
        self.app = app
        self.config = config
        self.on_signals = on_signals
        self.slots = anyio.CapacityLimiter(config.max_concurrent)
        self.stopping = anyio.Event()
        self.deadline = math.inf  # the loop's time by which work in flight is cut off
        self.in_flight = 0  # admitted requests not yet over (waiting or computing)
        self.last_arrival = -math.inf  # the loop's time when the last request arrived
        self._hand_over: asyncio.Task | None = None  # stop's ``then``, once drained

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return self.slots.statistics().tasks_waiting

    def full(self) -> bool:
        return self.slots.available_tokens < 1 and self.waiting >= self.config.max_queue

    def stop(self, then: Callable[[], None] | None = None) -> None:
        """Start draining (in the event loop): see the class docstring; ``then`` is called once
        :meth:`drained` (uvicorn's shutdown: it stops listening)."""
        if not self.stopping.is_set():
            now = asyncio.get_running_loop().time()  # called from a loop callback: no anyio task
            self.deadline = now + max(self.config.drain_s - CUTOFF_S, 0.0)
            self.last_arrival = max(self.last_arrival, now)  # what was sent before is read first
            self.stopping.set()
        if then is not None and self._hand_over is None:
            self._hand_over = asyncio.get_running_loop().create_task(self._then_when_drained(then))

    def drained(self) -> bool:
        """After :meth:`stop`: nothing in flight and no request for ``QUIET_S`` since the last
        one or the signal (the backlog a busy host had not read yet is answered), or work in
        flight cut off."""
        now = asyncio.get_running_loop().time()
        quiet = self.in_flight == 0 and now - self.last_arrival >= QUIET_S
        return self.stopping.is_set() and (quiet or now >= self.deadline)

    async def _then_when_drained(self, then: Callable[[], None]) -> None:
        while not self.drained():
            await asyncio.sleep(0.05)
        then()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.on_signals:
            await self.app(scope, self._startup(receive), send)
            return
        if scope["type"] == "http":
            self.last_arrival = asyncio.get_running_loop().time()
        if not _is_invocation(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        if self.stopping.is_set() or self.full():
            await (self._stopping(send) if self.stopping.is_set() else self._busy(send))
            return
        request = _Request(body)
        self.in_flight += 1
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, receive, request, group.cancel_scope)
                group.start_soon(self._cut_off, request, group.cancel_scope)
                await self._run(scope, request, send)
                group.cancel_scope.cancel()  # answered: stop watching
        finally:  # answered, client gone, server stopping: the worker thread stops
            request.cancelled.set()
        try:
            if request.stopped and not request.started:
                await self._stopping(send)
        finally:
            self.in_flight -= 1

    async def _run(self, scope: Scope, request: _Request, send: Send) -> None:
        await self.slots.acquire()
        try:
            request.computing = True
            token = CANCELLED.set(request.cancelled)
            try:
                await self.app(scope, request.receive(), request.send(send))
            finally:
                CANCELLED.reset(token)
        finally:
            self.slots.release()

    @staticmethod
    async def _watch(receive: Receive, request: _Request, scope: anyio.CancelScope) -> None:
        """Wait for the connection's ``http.disconnect``: a client gone before its answer
        cancels the request's wait or work."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if not request.answered:
            request.cancelled.set()
            request.over.set()
            scope.cancel()

    async def _cut_off(self, request: _Request, scope: anyio.CancelScope) -> None:
        """Once the server stops: a waiting request at once, a computing one at the deadline."""
        await self.stopping.wait()
        if request.computing:
            await anyio.sleep(self.deadline - asyncio.get_running_loop().time())
        if not request.answered:
            request.stopped = True
            request.cancelled.set()
            scope.cancel()

    def _startup(self, receive: Receive) -> Receive:
        """The lifespan's receive: at ``lifespan.startup`` (the server's loop running, uvicorn's
        signal handlers in place) :func:`drain_on_signals` hooks in."""

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                drain_on_signals(self)
            return message

        return lifespan_receive

    async def _busy(self, send: Send) -> None:
        c = self.config
        await self._unavailable(
            send,
            f"server busy: {c.max_concurrent} requests computing and {c.max_queue} waiting "
            f"(serving.max_concurrent, serving.max_queue)",
        )

    async def _stopping(self, send: Send) -> None:
        await self._unavailable(send, "server stopping (SIGTERM): retry with another server or later")

    async def _unavailable(self, send: Send, why: str) -> None:
        """503 saying ``why``, with ``Retry-After``."""
        after = self.config.retry_after_s
        await _answer(send, 503, f"{why}; retry after {after} s", ((b"retry-after", str(after).encode()),))


def drain_on_signals(admission: Admission) -> None:
    """On the first SIGTERM or SIGINT call ``admission.stop`` in the running event loop, and the
    handler that was there (uvicorn's, which starts its graceful shutdown: it stops listening)
    once the admission has drained; a second signal goes to that handler at once (Ctrl-C twice:
    no waiting). Called in the server's loop once uvicorn has put its handlers in place (the
    lifespan's startup); uvicorn puts back what it found when it exits. Nothing outside the
    main thread or a running loop."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            first = not received
            received.append(signum)
            if not callable(previous):
                loop.call_soon_threadsafe(admission.stop)
            elif first:
                loop.call_soon_threadsafe(admission.stop, lambda: previous(signum, None))
            else:
                previous(signum, frame)

        signal.signal(sig, handler)
