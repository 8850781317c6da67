"""`nextbuy bench serve`: batch pair scoring, top-K over the whole catalogue, and
REST latency of the real MLflow server — on a synthetic 100k-product bundle.

Figures (JSON keys):
  pairs_per_s   ServingBundle.score on 1M random pairs, best of a few repeats; side
                by side, the bare dot products of the gathered mean rows
                (``dot_pairs_per_s``) and the ratio of the two (``score_over_dot``).
  topk_100k_s   top-20 for EVERY product via ``batch.write_top_k`` (parquet into a temp
                dir) with the candidate retrieval of params.yaml ``deploy.retrieval``
                (``topk_index``: the index it chose), measured once, the index build
                included (``topk_index_build_s``); not extrapolated.
  topk_recall_vs_exact
                recall@20 of those served lists against the exact method (every source
                scored against the whole catalogue: ``top_k(..., exact=True)``) on
                ``topk_exact_sampled_sources`` seeded random sources.
  topk_exact_100k_s
                the exact method on the same bundle in the same run, measured on those
                sampled sources and EXTRAPOLATED linearly to every product.
  topk_1m_s …   with ``--topk-products 1000000`` (``run(topk_products=...)``): the same
                on a synthetic 1M-product bundle: ``topk_1m_s`` (measured, every product),
                ``topk_1m_recall_vs_exact``, ``topk_exact_1m_s`` (extrapolated), ``topk_1m_index``.
  topk_trained_<size>_s …
                with ``--topk-bundle PROJECT`` (``run(topk_bundle=...)``): the same on the
                trained bundle a pipeline run left in PROJECT (``topk_trained_products``
                products): synthetic moments are i.i.d. Gaussian, the hardest case for an
                approximate index; the one trained model measured (the 1M preset's) was far
                easier.
  rest_p50_ms / rest_p99_ms
                ``mlflow models serve`` of the registered synthetic model (temp SQLite
                store, own process group, stopped in ``finally``), 100-candidate
                requests from one local keep-alive client on 127.0.0.1, sequential.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy.bench import serving_fixtures as fixtures
from nextbuy.bench.serve_rest import (
    LOAD_REQUESTS,
    LOAD_WORKERS,
    REST_WARMUP,
    bench_rest,
)

if TYPE_CHECKING:
    from rich.table import Table

    from nextbuy.config import RetrievalConfig
    from nextbuy.serving import ServingBundle

N_PRODUCTS = 100_000
DIM = 32
N_PAIRS = 1_000_000
PAIR_REPEATS = 5
TOP_K = 20
TOPK_WARMUP_SOURCES = 100
TOPK_EXACT_SAMPLE = 1_000  # sources the exact method scores: its timing, and the recall reference
GOALS = {
    "pairs_per_s": 1_000_000,
    "rest_p99_ms": 50.0,
    "topk_recall_vs_exact": 0.99,
    "topk_100k_s": 60.0,  # at 100,000 products
    "topk_1m_s": 900.0,  # at 1,000,000 products
    "load_p99_ms_16": 50.0,  # p99 with 16 concurrent clients
}


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), times


def bench_pairs(bundle: ServingBundle, rng: np.random.Generator) -> dict:
    n = bundle.n_products
    src = rng.integers(0, n, N_PAIRS)
    dst = rng.integers(0, n, N_PAIRS)
    s_mean, t_mean = bundle.moments["s_mean"], bundle.moments["t_mean"]
    bundle.score(src[:1000], dst[:1000])  # first-touch / import warm-up
    # Interleaved so that machine noise hits both the same way.
    score_t, dot_t = [], []
    for _ in range(PAIR_REPEATS):
        score_t.append(_best(lambda: bundle.score(src, dst), 1)[0])
        dot_t.append(_best(lambda: np.einsum("ij,ij->i", s_mean[src], t_mean[dst]), 1)[0])
    best_score, best_dot = min(score_t), min(dot_t)
    return {
        "pairs_per_s": N_PAIRS / best_score,
        "pairs_best_s": best_score,
        "pairs_all_s": [round(t, 4) for t in score_t],
        "dot_pairs_per_s": N_PAIRS / best_dot,
        "dot_best_s": best_dot,
        "dot_all_s": [round(t, 4) for t in dot_t],
        "score_over_dot": best_score / best_dot,
    }


def size_label(n: int) -> str:
    """The key of a catalogue size: 1000000 -> '1m', 100000 -> '100k', 1234 -> '1234'."""
    for unit, name in ((1_000_000, "m"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{name}"
    return str(n)


def served_recall(served: pd.DataFrame, exact: pd.DataFrame) -> float:
    """Mean over the exact lists' sources of |served ∩ exact| / |exact| (candidate ids)."""
    got = served.groupby("source_id")["candidate_id"].apply(set)
    want = exact.groupby("source_id")["candidate_id"].apply(set)
    return float(np.mean([len(got.get(s, set()) & ids) / len(ids) for s, ids in want.items()]))


def _read_served(path: Path, sources: np.ndarray) -> pd.DataFrame:
    served = pd.concat(
        [pd.read_parquet(p, columns=["source_id", "candidate_id"]) for p in sorted(path.iterdir())],
        ignore_index=True,
    )
    return served[served["source_id"].isin(sources)]


def bench_topk(
    bundle: ServingBundle, tmp: Path, exact_sample: int = TOPK_EXACT_SAMPLE, seed: int = 0
) -> dict:
    """Top-K of every product with the bundle's retrieval settings, written by
    ``batch.write_top_k`` (index build included), and the exact method on a seeded sample of
    sources (timed, extrapolated), which is also the recall reference. Keys: :func:`topk_keys`."""
    from nextbuy.serving import write_top_k

    n = bundle.n_products
    sources = np.sort(np.random.default_rng(seed).choice(n, min(exact_sample, n), replace=False))
    bundle.top_k(sources[:TOPK_WARMUP_SOURCES], TOP_K, exact=True)  # first touch / imports
    t = time.perf_counter()
    exact = bundle.top_k(sources, TOP_K, exact=True)
    exact_s = time.perf_counter() - t
    fresh = bundle.with_retrieval(bundle.retrieval)  # its index is not built yet
    t = time.perf_counter()
    index = fresh.candidate_index
    build_s = time.perf_counter() - t
    full = write_top_k(fresh, tmp, TOP_K, progress=False)
    all_s = time.perf_counter() - t
    return {
        "index": index.kind,
        "index_build_s": build_s,
        "all_s": all_s,
        "sources": full["sources"],
        "rows": full["rows"],
        "recall": served_recall(_read_served(Path(full["path"]), sources), exact),
        "exact_sample_s": exact_s,
        "exact_sampled_sources": int(sources.size),
        "exact_all_s": exact_s * n / sources.size,
    }


def topk_keys(figures: dict, label: str | None = None) -> dict:
    """JSON keys of :func:`bench_topk`'s figures: the bench's own catalogue (``label`` None)
    keeps the ``topk_100k_s`` name whatever its size (``n_products`` says it); another
    catalogue size gets ``topk_<label>_*`` (``topk_1m_s``)."""
    p = "topk" if label is None else f"topk_{label}"
    size = "100k" if label is None else label
    return {
        f"topk_{size}_s": figures["all_s"],
        f"topk_{size}_extrapolated": False,
        f"{p}_index": figures["index"],
        f"{p}_index_build_s": figures["index_build_s"],
        f"{p}_measured_sources": figures["sources"],
        f"{p}_rows": figures["rows"],
        f"{p}_recall_vs_exact": figures["recall"],
        f"topk_exact_{size}_s": figures["exact_all_s"],
        f"{p}_exact_sampled_sources": figures["exact_sampled_sources"],
        f"{p}_exact_sample_s": figures["exact_sample_s"],
    }


def _goal_row(t: Table, label: str, value: str, goal: str, ok: bool | None) -> None:
    t.add_row(label, value, goal, "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]"))


def _topk_rows(t: Table, fig: dict, n: int, label: str | None, prefix: str = "") -> None:
    p = "topk" if label is None else f"topk_{label}"
    size = "100k" if label is None else label
    seconds, goal = fig[f"topk_{size}_s"], GOALS.get(f"topk_{size_label(n)}_s")
    _goal_row(
        t,
        f"{prefix}top-{fig['topk_k']} for all {n:,} products ({fig[f'{p}_index']} index, build included)",
        f"{seconds:,.1f} s",
        "" if goal is None else f"≤ {goal:,.0f} s",
        None if goal is None else seconds <= goal,
    )
    sampled = fig[f"{p}_exact_sampled_sources"]
    _goal_row(
        t,
        f"  exact method, extrapolated from {sampled:,} sources",
        f"{fig[f'topk_exact_{size}_s']:,.1f} s",
        "",
        None,
    )
    recall, floor = fig[f"{p}_recall_vs_exact"], GOALS["topk_recall_vs_exact"]
    _goal_row(
        t,
        f"  recall@{fig['topk_k']} vs exact ({sampled:,} sources)",
        f"{recall:.4f}",
        f"≥ {floor}",
        recall >= floor,
    )


def _table(fig: dict) -> Table:
    from rich.table import Table

    t = Table(title=f"bench serve — {fig['n_products']:,} products, d={fig['d']}, {fig['cpu_count']} cores")
    for col in ("figure", "measured", "goal", "met"):
        t.add_column(col)
    _goal_row(
        t,
        f"pairs/s (ServingBundle.score, 1M pairs, best of {PAIR_REPEATS})",
        f"{fig['pairs_per_s']:,.0f}",
        f"≥ {GOALS['pairs_per_s']:,}",
        fig["pairs_per_s"] >= GOALS["pairs_per_s"],
    )
    _goal_row(
        t, "dot products alone, pairs/s (einsum of gathered rows)", f"{fig['dot_pairs_per_s']:,.0f}", "", None
    )
    _goal_row(t, "score time / dot-product time", f"{fig['score_over_dot']:.2f}×", "near 1×", None)
    _topk_rows(t, fig, fig["n_products"], None)
    for n in fig.get("topk_products", []):
        _topk_rows(t, fig, n, size_label(n))
    if "topk_trained_products" in fig:
        n = fig["topk_trained_products"]
        _topk_rows(t, fig, n, trained_label(n), "trained bundle: ")
    _goal_row(
        t,
        f"REST p50, {fig['rest_candidates']} candidates ({fig['rest_requests']} requests)",
        f"{fig['rest_p50_ms']:.1f} ms",
        "",
        None,
    )
    _goal_row(
        t,
        "REST p99",
        f"{fig['rest_p99_ms']:.1f} ms",
        f"≤ {GOALS['rest_p99_ms']:.0f} ms",
        fig["rest_p99_ms"] <= GOALS["rest_p99_ms"],
    )
    for level in fig.get("load_levels", []):
        p99, at16 = level["p99_ms"], level["clients"] == 16
        _goal_row(
            t,
            f"load: {level['clients']} clients, {fig['load_workers']} workers — req/s, p99, errors",
            _level_text(level),
            f"≤ {GOALS['load_p99_ms_16']:.0f} ms, 0 errors" if at16 else "0 errors",
            (p99 is not None and p99 <= GOALS["load_p99_ms_16"] and not level["errors"])
            if at16
            else not level["errors"],
        )
    for level in fig.get("load_levels_mlflow_path", []):
        _goal_row(
            t,
            f"  same, MLflow's path only (--no-fast-path): {level['clients']} clients",
            _level_text(level),
            "",
            None,
        )
    return t


def _level_text(level: dict) -> str:
    p99 = level["p99_ms"]
    return f"{level['rps']:.0f}/s, {'-' if p99 is None else f'{p99:.1f} ms'}, {level['errors']}"


def _retrieval_settings() -> RetrievalConfig:
    """params.yaml ``deploy.retrieval`` (run from the project root): what deploy bundles."""
    from nextbuy.config import DeployConfig, load_section

    return load_section(DeployConfig).retrieval


def bench_topk_size(n: int, tmp: Path, settings: RetrievalConfig) -> dict:
    """Top-K figures on a synthetic catalogue of ``n`` products (``topk_<label>_*`` keys)."""
    files = fixtures.write_bundle_files(tmp / f"bundle-{n}", n, DIM, seed=0, retrieval=settings)
    return topk_keys(bench_topk(fixtures.load_bundle(files), tmp / f"topk-{n}"), size_label(n))


def trained_label(n: int) -> str:
    return f"trained_{size_label(n)}"


def bench_topk_trained(project: Path, tmp: Path, settings: RetrievalConfig) -> dict:
    """Top-K figures on a trained bundle (``topk_trained_<size>_*`` keys): the moments,
    calibration and thresholds a pipeline run wrote under ``project`` (e.g. a clone that ran
    ``make run-preset``), with the retrieval settings of the params.yaml in use."""
    from nextbuy import paths
    from nextbuy.serving import ServingBundle

    files = (paths.GNN_MOMENTS, paths.CALIBRATION_MODEL, paths.THRESHOLDS_MODEL)
    bundle = ServingBundle.load(*(Path(project) / f for f in files)).with_retrieval(settings)
    label = trained_label(bundle.n_products)
    return {
        "topk_trained_products": bundle.n_products,
        "topk_trained_bundle": str(Path(project).resolve()),
        **topk_keys(bench_topk(bundle, tmp / label), label),
    }


NOTES = (
    "Synthetic random moments (no training), except topk_trained_* (the trained bundle in "
    "topk_trained_bundle); all candidates are known products. "
    "pairs_per_s and dot_pairs_per_s are the best of interleaved repeats in the same process. "
    f"REST latency is client-side wall time over a keep-alive session, {REST_WARMUP} warm-up requests "
    "dropped, one uvicorn worker, client and server on the same 127.0.0.1 machine. load_levels: "
    f"{LOAD_WORKERS} workers, {LOAD_REQUESTS} requests per level from concurrent asyncio (aiohttp) "
    "clients of this process (one keep-alive connection each), rps over the level's wall time; "
    "load_levels_mlflow_path: the same requests right after, with the pair fast path off "
    "(nextbuy serve --no-fast-path), every request through MLflow's scoring server. "
    "topk_*_s are MEASURED for every product (index build included) with the retrieval settings "
    "in topk_retrieval; topk_exact_*_s are the exact method timed on *_exact_sampled_sources "
    "sources and EXTRAPOLATED linearly; recall_vs_exact is recall@k of the served lists vs the "
    "exact lists on those sources."
)


def _header(products: int, settings: RetrievalConfig, topk_products: Sequence[int]) -> dict:
    """What the run measured on: sizes, settings and the machine."""
    return {
        "date": dt.date.today().isoformat(),
        "n_products": products,
        "d": DIM,
        "n_pairs": N_PAIRS,
        "cpu_count": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg_1m_at_start": os.getloadavg()[0],
        "topk_k": TOP_K,
        "topk_retrieval": settings.model_dump(),
        "topk_products": [int(n) for n in topk_products],
    }


def run(
    out: Path,
    products: int = N_PRODUCTS,
    topk_products: Sequence[int] = (),
    topk_bundle: Path | None = None,
) -> dict:
    """The bench on a synthetic catalogue of ``products``; ``topk_products``: further
    catalogue sizes (e.g. 1,000,000) on which only top-K is timed; ``topk_bundle``: a
    pipeline run's project folder whose trained bundle's top-K is timed too."""
    from rich.console import Console

    console = Console()
    rng = np.random.default_rng(0)
    settings = _retrieval_settings()
    fig = _header(products, settings, topk_products)
    with tempfile.TemporaryDirectory(prefix="nextbuy-bench-serve-") as tmp_str:
        tmp = Path(tmp_str)
        files = fixtures.write_bundle_files(tmp / "bundle", products, DIM, seed=0, retrieval=settings)
        bundle = fixtures.load_bundle(files)
        with console.status("pairs: ServingBundle.score vs bare dot products"):
            fig.update(bench_pairs(bundle, rng))
        with console.status(f"top-{TOP_K} for all {products:,} products, and exact on a sample"):
            fig.update(topk_keys(bench_topk(bundle, tmp / "topk")))
        with console.status("REST: nextbuy serve, sequential then concurrent 100-candidate requests"):
            fig.update(bench_rest(files, tmp, rng, products))
        for n in topk_products:
            with console.status(f"top-{TOP_K} for all {n:,} products, and exact on a sample"):
                fig.update(bench_topk_size(int(n), tmp, settings))
        if topk_bundle is not None:
            with console.status(f"top-{TOP_K} for every product of the trained bundle in {topk_bundle}"):
                fig.update(bench_topk_trained(Path(topk_bundle), tmp, settings))
    fig["load_avg_1m_at_end"] = os.getloadavg()[0]
    fig["notes"] = NOTES
    fig["goals"] = GOALS  # what the table judged against, kept with the figures
    fig = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fig.items()}
    console.print(_table(fig))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fig, indent=2) + "\n")
    return fig
