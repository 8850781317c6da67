"""What ``nextbuy serve`` takes on (``limits``), in front of small ASGI apps: bodies of
too many rows refused before the app sees them, requests beyond the slots and the queue
answered 503 with Retry-After, the work of a client that has gone cancelled (also in the
worker thread), and SIGTERM's drain. (Against MLflow's server for real: the abuse cases of
``nextbuy bench faults``.)"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time

import pytest

from nextbuy.config import ServingConfig
from nextbuy.serving import limits
from nextbuy.serving.requests import CANCELLED, MAX_REQUEST_ROWS, RequestCancelled, raise_if_cancelled

INVOCATION = {"type": "http", "method": "POST", "path": "/invocations"}


def serving_settings(**changes) -> ServingConfig:
    return ServingConfig.model_validate(
        {"max_concurrent": 1, "max_queue": 1, "retry_after_s": 7, "drain_s": 2, **changes}
    )


class Client:
    """One request to an ASGI app: its body, then (``leave()``) its disconnect."""

    def __init__(self, body: bytes = b"{}", content_type: bytes = b"application/json"):
        self.scope = {**INVOCATION, "headers": [(b"content-type", content_type)]}
        self.body = body
        self.gone = asyncio.Event()
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.gone.set()

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def headers(self) -> dict:
        return dict(next(m["headers"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def message(self) -> str:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))["message"]


class Worker:
    """An app computing in a worker thread, as MLflow's does (``asyncio.to_thread``): the work
    runs until ``release`` is set or the request is cancelled; ``calls``, ``cancelled`` count."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0
        self.cancelled = 0

    def work(self) -> None:
        while not self.release.wait(0.01):
            try:
                raise_if_cancelled()
            except RequestCancelled:
                self.cancelled += 1
                return

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        await receive()
        await asyncio.to_thread(self.work)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def settle() -> None:
    await asyncio.sleep(0.05)


async def admit(clients: int, **changes) -> tuple[Worker, limits.Admission, list[Client], list[asyncio.Task]]:
    """``clients`` requests sent at once through ``Admission`` (``serving_settings(**changes)``) in front of a
    ``Worker``, left to settle: the worker, the admission, the clients and their request tasks."""
    worker = Worker()
    admission = limits.Admission(worker, serving_settings(**changes))
    sent = [Client() for _ in range(clients)]
    tasks = [asyncio.create_task(admission(c.scope, c.receive, c.send)) for c in sent]
    await settle()
    return worker, admission, sent, tasks


# ---- rows --------------------------------------------------------------------------------


def split(rows: int, columns=("source_id", "candidate_id")) -> bytes:
    data = ",".join(["[" + ",".join(["1"] * len(columns)) + "]"] * rows)
    return f'{{"dataframe_split": {{"columns": {json.dumps(list(columns))}, "data": [{data}]}}}}'.encode()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (split(MAX_REQUEST_ROWS + 1), b"application/json"),
        (split(MAX_REQUEST_ROWS + 1, ("source_id",)), b"application/json; charset=utf-8"),
        (
            json.dumps({"dataframe_records": [{"source_id": 1}] * (MAX_REQUEST_ROWS + 1)}).encode(),
            b"application/json",
        ),
        (json.dumps({"inputs": {"source_id": [1] * (MAX_REQUEST_ROWS + 1)}}).encode(), b"application/json"),
        (json.dumps({"instances": [1] * (MAX_REQUEST_ROWS + 1)}).encode(), b"application/json"),
        (b"source_id,candidate_id\n" + b"1,2\n" * (MAX_REQUEST_ROWS + 1), b"text/csv"),
    ],
)
def test_a_body_of_more_rows_than_the_limit_is_refused_413_before_the_app_sees_it(body, content_type):
    worker = Worker()
    client = Client(body, content_type)
    asyncio.run(limits.RowLimit(worker)(client.scope, client.receive, client.send))
    assert client.status == 413
    assert f"{MAX_REQUEST_ROWS + 1:,} rows in one request" in client.message
    assert f"limit is {MAX_REQUEST_ROWS:,} rows" in client.message
    assert worker.calls == 0


@pytest.mark.parametrize(
    "body",
    [
        split(MAX_REQUEST_ROWS),  # at the limit
        split(MAX_REQUEST_ROWS + 1).replace(b"[1,1]", b"[NaN,1]", 1),  # not strict JSON: MLflow's
        b"source_id,candidate_id\n" + b"1,2\n" * MAX_REQUEST_ROWS,
    ],
)
def test_bodies_the_row_limit_does_not_refuse_reach_the_app_unchanged(body):
    seen: list[bytes] = []

    async def app(scope, receive, send):
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    content_type = b"text/csv" if body.startswith(b"source_id") else b"application/json"
    client = Client(body, content_type)
    asyncio.run(limits.RowLimit(app)(client.scope, client.receive, client.send))
    assert client.status == 200
    assert seen == [body]


def encoded_client(body: bytes, encoding: bytes) -> Client:
    client = Client(body)
    client.scope["headers"] += [(b"content-encoding", encoding), (b"content-length", str(len(body)).encode())]
    return client


def test_a_gzip_body_reaches_the_app_plain_with_its_own_length_and_the_row_limit_reads_it():
    seen: list[tuple[bytes, dict]] = []

    async def app(scope, receive, send):
        seen.append(((await receive())["body"], dict(scope["headers"])))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    body = split(MAX_REQUEST_ROWS)
    client = encoded_client(gzip.compress(body), b"gzip")
    asyncio.run(
        limits.ContentEncoding(limits.RowLimit(app), 10_000_000)(client.scope, client.receive, client.send)
    )
    assert client.status == 200
    assert seen[0][0] == body
    assert seen[0][1][b"content-length"] == str(len(body)).encode()
    assert b"content-encoding" not in seen[0][1]
    too_many = encoded_client(gzip.compress(split(MAX_REQUEST_ROWS + 1)), b"gzip")
    asyncio.run(
        limits.ContentEncoding(limits.RowLimit(app), 10_000_000)(
            too_many.scope, too_many.receive, too_many.send
        )
    )
    assert too_many.status == 413
    assert "rows in one request" in too_many.message


@pytest.mark.parametrize(
    ("body", "encoding", "status", "said"),
    [
        (gzip.compress(b"0" * 5_000), b"gzip", 413, "decompresses to more than 4096 bytes"),  # a zip bomb
        (b'{"not": "gzip"}', b"gzip", 400, "Content-Encoding: gzip, but the body is not gzip data"),
        (gzip.compress(b'{"a": 1}')[:-6], b"gzip", 400, "not gzip data"),  # cut short
        (b"\x00", b"br", 415, "Content-Encoding: br is not served"),
    ],
    ids=["bomb", "not-gzip", "cut-short", "brotli"],
)
def test_an_encoded_body_the_server_cannot_read_within_the_limit_is_refused_naming_why(
    body, encoding, status, said
):
    worker = Worker()
    client = encoded_client(body, encoding)
    asyncio.run(limits.ContentEncoding(worker, 4096)(client.scope, client.receive, client.send))
    assert client.status == status
    assert said in client.message
    assert worker.calls == 0


def test_rows_are_counted_in_every_json_form_mlflow_reads():
    assert limits.json_rows({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}) == 2
    assert limits.json_rows({"dataframe_records": [{}, {}, {}]}) == 3
    assert limits.json_rows({"inputs": {"a": [1, 2], "b": [1, 2, 3, 4]}}) == 4
    assert limits.json_rows({"instances": [1]}) == 1
    assert limits.json_rows({"rows": [1]}) is None
    assert limits.json_rows([1, 2]) is None


# ---- slots and queue ---------------------------------------------------------------------


def test_beyond_the_slots_and_the_queue_a_request_gets_503_with_retry_after_at_once():
    async def scenario():
        worker, _, clients, tasks = await admit(3)
        assert [c.status for c in clients] == [None, None, 503]  # computing, waiting, refused
        assert clients[2].headers[b"retry-after"] == b"7"
        assert "server busy: 1 requests computing and 1 waiting" in clients[2].message
        worker.release.set()
        await asyncio.gather(*tasks)
        assert [c.status for c in clients] == [200, 200, 503]
        assert worker.calls == 2

    asyncio.run(scenario())


def test_a_client_gone_while_waiting_is_never_computed():
    async def scenario():
        worker, admission, (_, second), tasks = await admit(2)
        second.leave()
        await settle()
        assert tasks[1].done()
        assert second.status is None
        assert admission.waiting == 0
        worker.release.set()
        await tasks[0]
        assert worker.calls == 1

    asyncio.run(scenario())


def test_a_client_gone_while_computing_stops_the_work_in_its_thread_and_frees_the_slot():
    async def scenario():
        worker, _, (first, second), tasks = await admit(2)
        first.leave()
        await asyncio.wait_for(tasks[0], 2)
        await settle()
        assert worker.cancelled == 1  # the thread saw the cancellation
        assert worker.calls == 2  # the waiting request got the slot
        worker.release.set()
        await asyncio.wait_for(tasks[1], 2)
        assert second.status == 200
        assert first.status is None

    asyncio.run(scenario())


def test_other_requests_pass_through_even_when_full():
    async def scenario():
        worker, admission, _, (task,) = await admit(1, max_queue=0)

        async def ping(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        admission.app = ping
        health = Client()
        health.scope = {"type": "http", "method": "GET", "path": "/ping", "headers": []}
        await admission(health.scope, health.receive, health.send)
        assert health.status == 200
        admission.app = worker
        worker.release.set()
        await task

    asyncio.run(scenario())


# ---- drain ---------------------------------------------------------------------------------


def test_after_stop_waiting_requests_get_503_at_once_and_work_in_flight_is_cut_off_before_drain_s():
    async def scenario():
        worker, admission, (computing, waiting), tasks = await admit(2, drain_s=2)
        started = time.monotonic()
        admission.stop()
        await settle()
        assert waiting.status == 503
        assert "server stopping" in waiting.message
        assert waiting.headers[b"retry-after"] == b"7"
        await asyncio.wait_for(tasks[0], 3)
        took = time.monotonic() - started
        assert 2 - limits.CUTOFF_S - 0.2 <= took < 2, took  # cut off before uvicorn's grace ends
        assert computing.status == 503
        assert "server stopping" in computing.message
        await settle()
        assert worker.cancelled == 1  # the thread saw the cancellation
        late = Client()
        await admission(late.scope, late.receive, late.send)
        assert late.status == 503
        await tasks[1]

    asyncio.run(scenario())


def test_work_that_ends_within_the_drain_is_answered():
    async def scenario():
        worker, admission, (client,), (task,) = await admit(1, drain_s=5)
        admission.stop()
        await settle()
        worker.release.set()
        await asyncio.wait_for(task, 2)
        assert client.status == 200

    asyncio.run(scenario())


def test_listening_stops_only_once_work_in_flight_is_over_and_no_request_came_for_a_while():
    async def scenario():
        worker = Worker()
        admission = limits.Admission(worker, serving_settings(drain_s=5))
        computing = Client()
        task = asyncio.create_task(admission(computing.scope, computing.receive, computing.send))
        await settle()
        handed_over: list[float] = []
        loop = asyncio.get_running_loop()
        admission.stop(lambda: handed_over.append(loop.time()))
        await asyncio.sleep(limits.QUIET_S + 0.2)
        assert handed_over == []  # a request is still computing
        late = Client()  # sent before the signal, read only now: answered, and the quiet restarts
        await admission(late.scope, late.receive, late.send)
        arrived = loop.time()
        assert late.status == 503
        worker.release.set()
        await asyncio.wait_for(task, 2)
        assert computing.status == 200
        await asyncio.sleep(limits.QUIET_S + 0.2)
        assert len(handed_over) == 1
        assert handed_over[0] >= arrived + limits.QUIET_S

    asyncio.run(scenario())


def test_an_idle_server_stops_listening_once_what_was_sent_before_the_signal_is_read():
    async def scenario():
        admission = limits.Admission(Worker(), serving_settings())
        loop = asyncio.get_running_loop()
        started, handed_over = loop.time(), asyncio.Event()
        admission.stop(handed_over.set)
        await asyncio.wait_for(handed_over.wait(), 2)
        assert limits.QUIET_S <= loop.time() - started < limits.QUIET_S + 0.5

    asyncio.run(scenario())


def test_work_that_never_ends_hands_over_at_the_cut_off():
    async def scenario():
        admission = limits.Admission(Worker(), serving_settings(drain_s=2))
        client = Client()
        task = asyncio.create_task(admission(client.scope, client.receive, client.send))
        await settle()
        loop = asyncio.get_running_loop()
        started, handed_over = loop.time(), asyncio.Event()
        admission.stop(handed_over.set)
        await asyncio.wait_for(handed_over.wait(), 3)
        assert loop.time() - started < 2  # within uvicorn's grace period
        await asyncio.wait_for(task, 1)
        assert client.status == 503

    asyncio.run(scenario())


def test_the_cancellation_is_seen_only_by_its_own_request():
    event = threading.Event()
    token = CANCELLED.set(event)
    try:
        raise_if_cancelled()  # not set: nothing happens
        event.set()
        with pytest.raises(RequestCancelled, match="client has gone"):
            raise_if_cancelled()
    finally:
        CANCELLED.reset(token)
    raise_if_cancelled()  # outside a request: nothing to cancel


def test_serving_settings_come_from_the_env_nextbuy_serve_sets_else_params_yaml(monkeypatch):
    given = serving_settings(max_concurrent=3)
    env = {limits.SERVING_ENV: json.dumps(given.model_dump())}
    assert limits.serving_config(env) == given
    from nextbuy.config import load_section
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    assert limits.serving_config({}) == load_section(ServingConfig)


@pytest.mark.parametrize(
    ("key", "value"), [("max_concurrent", 0), ("max_concurrent", 33), ("drain_s", 1), ("retry_after_s", 0)]
)
def test_serving_settings_out_of_bounds_are_refused_naming_the_key(key, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        serving_settings(**{key: value})


# ---- SIGTERM to a real uvicorn ---------------------------------------------------------------

SLOW_APP = """
import asyncio

from nextbuy.config import ServingConfig
from nextbuy.serving.limits import Admission


async def slow(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await receive()
    await asyncio.sleep(2.0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


config = {"max_concurrent": 1, "max_queue": 1, "retry_after_s": 3, "drain_s": 4}
app = Admission(slow, ServingConfig.model_validate(config), on_signals=True)
"""


def _post(port: int) -> tuple[int | None, str | None]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/invocations", body=b"{}", headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        reply.read()
        return reply.status, reply.getheader("Retry-After")
    except OSError:
        return None, None
    finally:
        connection.close()


def test_after_sigterm_uvicorn_answers_503_to_requests_that_come_while_work_is_in_flight(tmp_path):
    """The listener stays open while the drain lasts: a request sent after the signal gets a
    503 with Retry-After, not a refused connection; the work in flight is answered; the server
    is gone within drain_s."""
    import signal
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from nextbuy import procs

    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    port = procs.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "slow_app:app", "--app-dir", str(tmp_path), "--port", str(port)]
    cmd += ["--host", procs.HOST, "--timeout-graceful-shutdown", "4", "--lifespan", "on"]
    server = procs.GroupServer(cmd, port, log_path=tmp_path / "uvicorn.log", start_timeout=60).start()
    try:
        with ThreadPoolExecutor(4) as pool:
            computing = pool.submit(_post, port)
            time.sleep(0.5)  # computing
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # uvicorn's own shutdown would have closed the listener by now
            late = [pool.submit(_post, port) for _ in range(3)]
            assert [f.result() for f in late] == [(503, "3")] * 3
            assert computing.result() == (200, None)
        server.proc.wait(timeout=6)  # gone within drain_s and a margin
    finally:
        server.stop()
    assert "Traceback" not in server.log()
