"""The champion served as ``make serve`` serves it, for ``nextbuy bench faults``: the malformed
scoring requests (``requests``), each judged on its 4xx and the server staying up, then serving
under abuse: many expensive top-K requests at once, sent and dropped by their clients, or in
flight when the server gets SIGTERM (:func:`request_cases` runs them all).

Each abuse case is judged on what a caller and an operator see: a fresh request still answered
promptly, every answer a 200 or a 503 with ``Retry-After`` (never a 5xx or no answer), the
server stopped within its grace period (``serving.drain_s``) after SIGTERM, and no Python
traceback in its log.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nextbuy import paths, procs
from nextbuy.bench.faults.base import Request
from nextbuy.bench.faults.project import Project
from nextbuy.bench.faults.requests import requests
from nextbuy.bench.faults.verdicts import TRACEBACK, judge_request
from nextbuy.bench.serving_fixtures import RestServer, invocations_body
from nextbuy.serving import MAX_BODY_BYTES, MAX_REQUEST_ROWS, MAX_TOP_K

CLIENTS = 200  # expensive requests in each case
FRESH_S = 15.0  # a fresh request after the dropped ones: answered within this
ANSWER_S = 300.0  # each of the requests at once: answered within this (the queue takes a while)
DRAIN_MARGIN_S = 10.0  # SIGTERM: the server is gone within serving.drain_s plus this
SEND_S = 60.0  # SIGTERM: sent once every request is written (a loaded host takes a while), at most this
DROPPED = f"{CLIENTS} top-K requests dropped by their clients"
AT_ONCE = f"{CLIENTS} top-K requests at once"
SIGTERM = f"SIGTERM with {CLIENTS} top-K requests in flight"


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: no answer (refused, reset, timed out)
    retry_after: str | None
    seconds: float
    message: str


def heavy_topk_body(n_products: int) -> bytes:
    """The most expensive top-K request the limits allow: K as large as the catalogue and
    ``MAX_TOP_K`` allow, as many sources as keep the answer within ``MAX_REQUEST_ROWS`` rows."""
    k = max(1, min(MAX_TOP_K, n_products - 1))
    sources = max(1, min(n_products, MAX_REQUEST_ROWS // k))
    return invocations_body(["source_id"], [[i] for i in range(sources)], {"top_k": k})


def small_topk_body() -> bytes:
    return invocations_body(["source_id"], [[0]], {"top_k": 5})


def post(url: str, body: bytes, timeout: float, sent: Callable[[], None] | None = None) -> Reply:
    """POST ``body`` to ``url``/invocations and read the answer; ``sent`` is called once the
    whole request is written (the client then only waits)."""
    started = time.perf_counter()
    where = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname or procs.HOST, where.port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        if sent is not None:
            sent()
        reply = connection.getresponse()
        text = reply.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as err:  # refused, reset, closed unanswered, timeout
        return Reply(None, None, time.perf_counter() - started, f"{type(err).__name__}: {err}")
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    if reply.status < 300:
        return Reply(reply.status, None, seconds, "")
    return Reply(reply.status, reply.getheader("Retry-After"), seconds, text)


def post_honouring_retry_after(url: str, body: bytes, within: float) -> tuple[Reply, int]:
    """POST until an answer other than 503, waiting out each 503's Retry-After, for at most
    ``within`` seconds: the last reply (elapsed from the first try) and the number of 503s."""
    started, busy = time.perf_counter(), 0
    while True:
        left = within - (time.perf_counter() - started)
        reply = post(url, body, max(left, 0.1))
        elapsed = time.perf_counter() - started
        if reply.status != 503 or reply.retry_after is None:
            return Reply(reply.status, reply.retry_after, elapsed, reply.message), busy
        busy += 1
        wait = float(reply.retry_after)
        if elapsed + wait >= within:
            return Reply(reply.status, reply.retry_after, elapsed, reply.message), busy
        time.sleep(wait)


def send_and_drop(port: int, body: bytes, clients: int) -> None:
    """``clients`` POSTs of ``body``, each connection closed as soon as its request is sent."""
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {procs.HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    for _ in range(clients):
        with socket.create_connection((procs.HOST, port), timeout=10) as s:
            s.sendall(head.encode() + body)


def at_once(url: str, body: bytes, clients: int, timeout: float) -> list[Reply]:
    """``clients`` POSTs of ``body`` at the same time, each waiting up to ``timeout`` for its answer."""
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: post(url, body, timeout), range(clients)))


def bad_replies(replies: list[Reply]) -> list[Reply]:
    """Replies that are neither a 200 nor a 503 saying when to retry."""
    return [r for r in replies if not (r.status == 200 or (r.status == 503 and r.retry_after))]


def _summary(replies: list[Reply]) -> str:
    counts: dict[str, int] = {}
    for r in replies:
        key = str(r.status) if r.status is not None else "no answer"
        counts[key] = counts.get(key, 0) + 1
    slowest = max((r.seconds for r in replies), default=0.0)
    return f"answers {json.dumps(counts, sort_keys=True)}, slowest {slowest:.1f} s"


def _row(case: str, clear: bool, message: str, **counts: object) -> dict:
    verdict = {"traceback": False, "down": False, "orphans": 0, **counts}
    unclear = not clear and not verdict["traceback"] and not verdict["down"] and not verdict["orphans"]
    return {
        "group": "abuse",
        "case": case,
        "stage": "serve",
        "exit": None,
        "clear": clear,
        "silent": False,
        "unclear": unclear,
        **verdict,
        "message": message[:600],
    }


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (None where /proc does not say)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return None if kb is None else kb / 1024


def dropped_case(server: RestServer, n_products: int) -> dict:
    """CLIENTS heavy top-K requests sent and dropped, then a fresh small one: it must be
    answered 200 within FRESH_S (waiting out 503s as Retry-After says)."""
    assert server.proc is not None  # started
    before = rss_mb(server.proc.pid)
    send_and_drop(server.port, heavy_topk_body(n_products), CLIENTS)
    reply, busy = post_honouring_retry_after(server.url, small_topk_body(), FRESH_S)
    after = rss_mb(server.proc.pid)
    alive = server.ping() == 200 and server.proc.poll() is None
    clear = reply.status == 200 and reply.seconds <= FRESH_S
    said = f"{reply.status} after {reply.seconds:.1f} s ({busy} x 503 first): {reply.message[:200]}"
    memory = f"; server RSS {before:.0f} -> {after:.0f} MB" if before and after else ""
    return _row(
        DROPPED,
        clear and alive,
        f"a fresh request then: {said}{memory}",
        traceback=reply.status is None or (reply.status >= 500 and reply.status != 503),
        down=not alive,
    )


def at_once_case(server: RestServer, n_products: int) -> dict:
    """CLIENTS heavy top-K requests at once, every client waiting: each gets a 200 or a 503
    with Retry-After within ANSWER_S (some must be 503: more clients than slots and queue)."""
    replies = at_once(server.url, heavy_topk_body(n_products), CLIENTS, ANSWER_S)
    bad = bad_replies(replies)
    alive = server.ping() == 200 and server.proc is not None and server.proc.poll() is None
    refused = sum(r.status == 503 for r in replies)
    clear = not bad and refused > 0 and alive
    return _row(
        AT_ONCE,
        clear,
        _summary(replies) + (f"; first bad: {bad[0].message[:200]}" if bad else ""),
        traceback=bool(bad),
        down=not alive,
    )


def sigterm_case(
    make_server: Callable[[Path], RestServer], n_products: int, drain_s: float, tmp: Path
) -> dict:
    """CLIENTS heavy top-K requests in flight (each written whole: waiting for its answer),
    then SIGTERM to the server's group: it must be gone within drain_s + DRAIN_MARGIN_S, every
    client answered 200 or 503 with Retry-After, and no traceback logged."""
    server = make_server(tmp / "serve-sigterm.log")
    with ThreadPoolExecutor(CLIENTS) as pool, server:  # the server stops before the pool waits
        assert server.proc is not None  # entering the block started it
        body = heavy_topk_body(n_products)
        sent = threading.Semaphore(0)
        pending = [
            pool.submit(post, server.url, body, ANSWER_S + drain_s, sent.release) for _ in range(CLIENTS)
        ]
        deadline = time.monotonic() + SEND_S
        in_flight = sum(sent.acquire(timeout=max(deadline - time.monotonic(), 0)) for _ in range(CLIENTS))
        started = time.perf_counter()
        bound = drain_s + DRAIN_MARGIN_S
        gone = procs.signal_and_wait(server.proc, signal.SIGTERM, bound)
        took = time.perf_counter() - started
        replies = [p.result() for p in pending] if gone else []
        log = server.log()
    bad = bad_replies(replies)
    logged_traceback = TRACEBACK in log
    clear = gone and not bad and not logged_traceback
    said = f"gone {took:.1f} s after SIGTERM" if gone else f"still running {bound:.0f} s after SIGTERM"
    said += "" if in_flight == CLIENTS else f" ({in_flight} of {CLIENTS} requests sent by then)"
    return _row(
        SIGTERM,
        clear,
        f"{said} (serving.drain_s {drain_s:g}); {_summary(replies)}"
        + ("; traceback in the server log" if logged_traceback else ""),
        traceback=bool(bad) or logged_traceback,
        orphans=0 if gone else 1,
    )


# ---- every serving case --------------------------------------------------------------------


def _post_request(url: str, request: Request) -> tuple[int | None, str]:
    req = urllib.request.Request(
        f"{url}/invocations", data=request.body, method="POST", headers={"Content-Type": request.content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as err:
        return None, str(err)


def request_cases(
    project: Project, tmp: Path, selected: Callable[[str], bool] = lambda _: True
) -> list[dict]:
    """The malformed requests, then the abuse cases, whose name ``selected`` takes (``--only``),
    to the champion served as ``make serve`` serves it; the SIGTERM case gets a server of its own."""

    def server(log: Path) -> RestServer:
        uri = f"models:/{project.params['deploy']['model_name']}@champion"
        tracking = project.env["MLFLOW_TRACKING_URI"]
        return RestServer(uri, tracking, log, params=project.root / "params.yaml")

    n_products = len(pd.read_parquet(project.root / paths.PRODUCTS, columns=["product_id"]))
    rows = []
    running = server(tmp / "serve.log")
    with running:
        assert running.proc is not None  # entering the block started it
        for request in requests(MAX_REQUEST_ROWS, MAX_TOP_K, MAX_BODY_BYTES):
            if not selected(request.name):
                continue
            status, message = _post_request(running.url, request)
            alive = running.ping() == 200 and running.proc.poll() is None
            verdict = judge_request(request, status, message, alive)
            rows.append(
                {
                    "group": "request",
                    "case": request.name,
                    "stage": "serve",
                    "exit": status,
                    **verdict,
                    "message": message[:600],
                }
            )
        if selected(DROPPED):
            rows.append(dropped_case(running, n_products))
        if selected(AT_ONCE):
            rows.append(at_once_case(running, n_products))
    if selected(SIGTERM):
        drain_s = project.params["serving"]["drain_s"]
        rows.append(sigterm_case(server, n_products, drain_s, tmp))
    return rows
