"""`nextbuy bench serve`'s REST figures: sequential latency of the real MLflow server on
the registered synthetic champion, then concurrent load levels against several workers,
with the pair fast path and through MLflow's scoring server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from nextbuy.bench import serving_fixtures as fixtures

REST_WARMUP, REST_REQUESTS, REST_CANDIDATES = 20, 300, 100
REST_TIME_BUDGET_S = 120.0
# Load test: concurrent clients against several uvicorn workers, requests per level.
LOAD_CLIENTS, LOAD_WORKERS, LOAD_REQUESTS = (1, 4, 16), 2, 320


def bench_rest(files: fixtures.BundleFiles, tmp: Path, rng: np.random.Generator, n_products: int) -> dict:
    import requests

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    t = time.perf_counter()
    fixtures.register_champion(files, tmp, uri)
    register_s = time.perf_counter() - t

    bodies = []
    for _ in range(REST_WARMUP + REST_REQUESTS):
        source = int(rng.integers(0, n_products))
        candidates = rng.integers(0, n_products, REST_CANDIDATES)
        bodies.append(
            fixtures.invocations_body(["source_id", "candidate_id"], [[source, int(c)] for c in candidates])
        )
    server = fixtures.RestServer(fixtures.champion_uri(), uri, tmp / "serve.log", start_timeout=180)
    latencies, errors = [], 0
    t = time.perf_counter()
    try:
        server.start()
        start_s = time.perf_counter() - t
        deadline = time.monotonic() + REST_TIME_BUDGET_S
        with requests.Session() as http:
            url = f"{server.url}/invocations"
            headers = {"Content-Type": "application/json"}
            for i, body in enumerate(bodies):
                if time.monotonic() > deadline:
                    break
                t = time.perf_counter()
                r = http.post(url, data=body, headers=headers, timeout=30)
                elapsed = time.perf_counter() - t
                ok = r.status_code == 200 and len(r.json()["predictions"]) == REST_CANDIDATES
                if i >= REST_WARMUP:
                    if ok:
                        latencies.append(elapsed * 1e3)
                    else:
                        errors += 1
                elif not ok:
                    raise RuntimeError(f"warm-up request failed: {r.status_code} {r.text[:500]}")
    finally:
        stopped = server.stop()
    if not latencies:
        raise RuntimeError(f"no successful REST request; server log:\n{server.log()}")
    load = bench_load(uri, tmp, bodies)
    lat = np.array(latencies)
    return {
        "rest_p50_ms": float(np.percentile(lat, 50)),
        "rest_p99_ms": float(np.percentile(lat, 99)),
        "rest_mean_ms": float(lat.mean()),
        "rest_max_ms": float(lat.max()),
        "rest_requests": int(lat.size),
        "rest_errors": errors,
        "rest_warmup": REST_WARMUP,
        "rest_candidates": REST_CANDIDATES,
        "rest_register_s": register_s,
        "rest_server_start_s": start_s,
        "rest_server_stopped": stopped,
        **load,
    }


def latency_summary(latencies_ms: list[float], errors: int, seconds: float, clients: int) -> dict:
    """One load level: throughput over the level's wall time, latency percentiles, errors."""
    lat = np.asarray(latencies_ms, dtype=float)
    return {
        "clients": clients,
        "requests": int(lat.size) + errors,
        "errors": errors,
        "rps": float(lat.size / seconds) if seconds > 0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
    }


def _load_level(url: str, bodies: list[bytes], clients: int) -> dict:
    """``clients`` concurrent clients, each on its own keep-alive connection, share ``bodies`` (one
    each).  One asyncio event loop (aiohttp) drives them all. A thread per client (``requests``)
    costs more per request on the 2 cores the server needs too: at one client its p50 was ~1.5 ms
    above this client's, side by side."""
    return asyncio.run(_async_load_level(url, bodies, clients))


async def _async_load_level(url: str, bodies: list[bytes], clients: int) -> dict:
    import aiohttp

    pending = list(bodies)
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while pending:
            body = pending.pop()
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    answer = await r.json(content_type=None) if r.status == 200 else {}
                ok = len(answer.get("predictions", ())) == REST_CANDIDATES
            except (aiohttp.ClientError, TimeoutError, ValueError):
                ok = False
            elapsed = (time.perf_counter() - t) * 1e3
            if ok:
                latencies.append(elapsed)
            else:
                errors += 1

    timeout = aiohttp.ClientTimeout(total=30)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=clients)  # one keep-alive connection per client
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return latency_summary(latencies, errors, time.perf_counter() - started, clients)


def bench_load(uri: str, tmp: Path, bodies: list[bytes]) -> dict:
    """The champion served by ``LOAD_WORKERS`` workers; each level of ``LOAD_CLIENTS``
    concurrent clients sends ``LOAD_REQUESTS`` 100-candidate requests (after a warm-up).
    ``load_levels``: as `nextbuy serve` serves (the pair fast path on);
    ``load_levels_mlflow_path``: the same requests, every one through MLflow's scoring server
    (``--no-fast-path``), right after, for the side-by-side ratio."""
    fast = _load_levels(uri, tmp / "serve-load.log", bodies, fast_path=True)
    mlflow_path = _load_levels(uri, tmp / "serve-load-mlflow.log", bodies, fast_path=False)
    return {
        "load_workers": LOAD_WORKERS,
        "load_levels": fast["levels"],
        "load_levels_mlflow_path": mlflow_path["levels"],
        "load_server_stopped": fast["stopped"] and mlflow_path["stopped"],
    }


def _load_levels(uri: str, log: Path, bodies: list[bytes], fast_path: bool) -> dict:
    server = fixtures.RestServer(
        fixtures.champion_uri(), uri, log, workers=LOAD_WORKERS, start_timeout=180, fast_path=fast_path
    )
    try:
        server.start()
        url = f"{server.url}/invocations"
        _load_level(url, bodies[: REST_WARMUP * LOAD_WORKERS], LOAD_WORKERS)  # every worker warm
        levels = [_load_level(url, bodies[:LOAD_REQUESTS], clients) for clients in LOAD_CLIENTS]
    finally:
        stopped = server.stop()
    return {"levels": levels, "stopped": stopped}
