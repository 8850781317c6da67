"""`nextbuy bench linkpred`: directed link prediction scored the DirLinkBench way
(Hits@20/100 against one global pool of test negatives, MRR with half ties, AUC, AP),
plus direction AUC and Hits@20 of low-out-degree sources.

Every trained model gets the same tuning budget (``linkpred_models.N_CONFIGS`` configs, raced by
successive halving) judged on validation Hits@20 (at the test's quantile, below) with the first
seed; the other seeds refit the chosen config (``blade_fixed``, the sampling ablation, takes
BLADE's).  The test split is scored once per reported number.  ``<key>+aa`` fuses a model's
standardised score with standardised Adamic-Adar, its weight chosen on validation; ``<key>+ps``
(and BLADE's own rows) add the pair-structure head, a logistic regression fitted on the validation
pool (``linkpred_models.stacked_score``).  Validation negatives are the split's plus
``linkpred_models.VALIDATION_POOL`` random non-edges and validation Hits@K is taken at the test's
quantile (``validation_hits``): a split's own few validation negatives saturate it (411 on
Cora-ML).  With a fixed split (DirLinkBench's split 0 by default) seeds vary the models'
initialisation and negatives; without one each seed draws its own split.  ``members`` > 1 makes
every trained method a seed ensemble of that many fits (``linkpred_models.ensemble``).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from nextbuy.mlops import io
from nextbuy_lab import linkpred_models as models
from nextbuy_lab import linkpred_split as lp
from nextbuy_lab import paired
from nextbuy_lab.linkpred_data import LinkGraph, check_split_matches, load_graph, load_split

DEFAULT_GRAPH = Path(__file__).resolve().parents[3] / "shared" / "data" / "cora_ml" / "cora_ml.npz"
TRAINED = ("blade", "blade_fixed", "dual_mf", "gcn", "sage", "dirgnn")
# Baselines also given BLADE's pair-structure head (``<key>+ps``), so that the head's gain is not
# credited to BLADE's encoder: the undirected and the directed GNN (all would cost the time budget).
STRUCTURED_BASELINES = ("gcn", "dirgnn")
PAIRED = ("hits@20", "mrr", "lowdeg_hits@20", "direction_auc")  # paired vs blade, in FILE.paired.json
METRICS = ("hits@20", "hits@100", "mrr", "auc", "ap", "lowdeg_hits@20", "direction_auc", "epoch_s", "train_s")


def evaluate(score: models.ScoreFn, split: lp.LinkSplit, full_edges: np.ndarray) -> dict[str, float]:
    """The test metrics of ``score`` (the only place the test split is scored)."""
    pos, neg = score(*split.pos_test.T), score(*split.neg_test.T)
    auc, ap = lp.auc_ap(pos, neg)
    low = lp.low_degree_mask(split.pos_test, split.observed, split.n_nodes)
    one_way = split.pos_test[lp.reverse_free_mask(split.pos_test, full_edges, split.n_nodes)]
    return {
        "hits@20": lp.hits_at_k(pos, neg, 20),
        "hits@100": lp.hits_at_k(pos, neg, 100),
        "mrr": lp.mrr(pos, neg),
        "auc": auc,
        "ap": ap,
        "lowdeg_hits@20": lp.hits_at_k(pos[low], neg, 20),
        "direction_auc": lp.direction_auc(score, edges=one_way),
    }


def _structure_rows(graph: LinkGraph, split: lp.LinkSplit) -> dict[str, dict]:
    """The untrained rows of one seed: Adamic-Adar and the pair-structure head on the structure alone."""
    aa = models.adamic_adar(split)
    rows = {"adamic_adar": {**evaluate(aa.score, split, graph.edges), "epoch_s": 0.0, "train_s": aa.train_s}}
    ps = models.pair_structure(split, graph.features)
    rows["pair_structure"] = {**evaluate(ps.score, split, graph.edges), "epoch_s": 0.0, "train_s": ps.train_s}
    return rows


def _method_rows(
    graph: LinkGraph, split: lp.LinkSplit, seed: int, key: str, config: dict | None, members: int = 1
) -> tuple[dict[str, dict], dict]:
    """One trained method on one split and seed: tuned on validation when ``config`` is None, else
    refit with ``config``; with ``members`` > 1, a seed ensemble of that many fits of the config
    (``linkpred_models.ensemble``).  Returns its rows (the method, its ``+aa`` fusion, BLADE without
    its head, a structured baseline with it) and the config it ran."""
    aa = models.adamic_adar(split)
    if config is None:
        fitted = models.tune(key, split, graph.features, seed)
    else:
        fitted = models.refit(key, split, graph.features, config, seed)
    fitted = models.ensemble(key, fitted, split, graph.features, seed, members)
    timing = {"epoch_s": fitted.epoch_s, "train_s": fitted.train_s}
    rows = {key: {**evaluate(fitted.score, split, graph.edges), **timing}}
    fused, _ = models.fuse(fitted.score, aa.score, split)
    rows[f"{key}+aa"] = {**evaluate(fused, split, graph.edges), **timing}
    if fitted.embedding is not None:  # the pair-structure head's gain, beside it
        rows[f"{key}_embedding"] = {**evaluate(fitted.embedding, split, graph.edges), **timing}
    if key in STRUCTURED_BASELINES:
        with_head = models.with_structure(fitted, split, graph.features)
        rows[f"{key}+ps"] = {**evaluate(with_head.score, split, graph.edges), "epoch_s": with_head.epoch_s,
                             "train_s": with_head.train_s}  # fmt: skip
    return rows, fitted.config


class _InProcess:
    """An executor that runs each task when it is submitted (``workers=1``: no processes)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # noqa: BLE001 - re-raised by ``result()``, as a process pool would
            future.set_exception(error)
        return future


# The training budget of every method (linkpred_models' module settings): a spawned worker
# imports them afresh, so it is handed this process's values and trains under the same budget.
BUDGET = ("MAX_EPOCHS", "BLADE_MAX_EPOCHS", "EVAL_EVERY", "PATIENCE", "N_CONFIGS")


def _worker_setup(budget: dict[str, int]) -> None:
    _one_thread()
    for name, value in budget.items():
        setattr(models, name, value)


def _one_thread() -> None:
    # two single-threaded workers beat one two-threaded process ~1.5x on these small graphs
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    # numpy/scipy's BLAS and scikit-learn's OpenMP too: two threads per worker on two cores cost a
    # BLADE fit ~20% (its structure prior and head criterion); results equal up to summation order
    threadpool_limits(1)


def _cpu_kernels() -> str:
    """torch's CPU kernel set here (``AVX512``, ``AVX2``, ...). Why record it: a baseline's fit is
    chaotic in the last bits of its float sums, which the kernel set changes. On Cora-ML, GCN's
    seed-0 fit moved 6 Hits@20 points between AVX-512 and AVX2 kernels, same config, so rows
    from runs on different kernels are not paired comparisons."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def _executor(workers: int):
    if workers <= 1:
        return _InProcess()
    # spawn, not fork: forking a process whose torch has started its thread pool can hang
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_setup,
        initargs=({name: getattr(models, name) for name in BUDGET},),
    )


def _dispatch_order(task: tuple[int, str, dict | None], fit_s: dict[str, float]) -> tuple[bool, float]:
    """Tunings first (every refit waits on one), then the refit expected to take longest: the
    method's seed-0 fit time (``blade_fixed``, never tuned, is costed at BLADE's), so that no long
    refit is left for last while the other worker idles."""
    _, key, config = task
    if config is None:
        return True, 0.0
    return False, fit_s.get(key, fit_s.get("blade", 0.0))


def _trained_rows(
    graph: LinkGraph, splits: list[lp.LinkSplit], keys: tuple[str, ...], workers: int, members: int = 1
) -> list[dict[str, dict]]:
    """Every trained method on every seed's split, as tasks in ``workers`` processes.  Each method is
    tuned on the first seed; once its config is chosen the other seeds refit it.  ``blade_fixed`` is
    the ablation: BLADE's chosen config with fixed fanout on every seed, never tuned on its own.
    A task is handed out only when a worker is free, in :func:`_dispatch_order`."""
    per_seed: list[dict[str, dict]] = [{} for _ in splits]
    ablation_only = "blade" in keys  # blade_fixed waits for BLADE's config
    ready = [(0, key, None) for key in keys if not (key == "blade_fixed" and ablation_only)]
    fit_s: dict[str, float] = {}
    started, done_count = time.perf_counter(), 0
    total = len(splits) * len(keys)
    with _executor(workers) as pool:
        pending: dict[Future, tuple[int, str]] = {}
        while ready or pending:
            while ready and len(pending) < max(workers, 1):
                task = max(ready, key=lambda t: _dispatch_order(t, fit_s))  # the first of equals
                ready.remove(task)
                seed, key, config = task
                future = pool.submit(_method_rows, graph, splits[seed], seed, key, config, members)
                pending[future] = (seed, key)
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: (pending[f][0], keys.index(pending[f][1]))):
                seed, key = pending.pop(future)
                rows, config = future.result()
                per_seed[seed].update(rows)
                done_count += 1
                elapsed = time.perf_counter() - started
                hits, fused = rows[key]["hits@20"], rows[key + "+aa"]["hits@20"]
                progress = f"[{done_count}/{total}, {elapsed:.0f} s] seed {seed} {key}"
                print(f"{progress}: {hits:.3f} (+aa {fused:.3f})", flush=True)
                if seed > 0 or (key == "blade_fixed" and ablation_only):
                    continue
                fit_s[key] = rows[key]["train_s"]
                print(f"{key}: chosen on validation {config}", flush=True)
                ready += [(other, key, config) for other in range(1, len(splits))]
                if key == "blade" and "blade_fixed" in keys:  # the ablation: BLADE's config, fixed fanout
                    ready += [(other, "blade_fixed", config) for other in range(len(splits))]
    return per_seed


def _aggregate(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    out = {}
    for key in per_seed[0]:
        values = {m: np.array([row[key][m] for row in per_seed], dtype=float) for m in METRICS}
        out[key] = {m: float(np.mean(v)) for m, v in values.items()}
        # sample std over seeds (ddof=1), as bench model reports it; 0 for a single seed
        out[key]["std"] = {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
        out[key]["seeds"] = len(per_seed)
    return out


def _print_gaps(gaps: dict[str, dict]) -> None:
    table = Table(title="paired Hits@20 gap, blade − method (same seed), mean [95% t CI], points")
    table.add_column("method")
    table.add_column("gap", justify="right")
    for key, gap in sorted(gaps.items(), key=lambda item: item[1]["mean"]):
        low, high = gap["ci95"]
        table.add_row(key, f"{100 * gap['mean']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
    Console(width=150).print(table)


def _print(figures: dict[str, dict], title: str) -> None:
    table = Table(title=title)
    table.add_column("method")
    shown = METRICS[:-2]
    for m in shown:
        table.add_column(m, justify="right")
    table.add_column("train s", justify="right")
    order = sorted(figures, key=lambda k: -figures[k]["hits@20"])
    for key in order:
        row = figures[key]
        cells = [f"{100 * row[m]:.1f}±{100 * row['std'][m]:.1f}" for m in shown]
        table.add_row(key, *cells, f"{row['train_s']:.1f}")
    Console(width=150).print(table)


def run(
    out: Path,
    graph: Path | None = None,
    split: Path | None = None,
    seeds: int = 5,
    keys: tuple[str, ...] = TRAINED,
    workers: int = 1,
    members: int = 1,
) -> dict:
    """Every method of ``keys`` on ``graph`` (``split``, or a random split per seed); ``workers``
    processes train side by side (1: in this process); ``members`` > 1: every trained method is a
    seed ensemble of that many fits (the same for all, so none is favoured)."""
    graph_path = Path(graph) if graph is not None else DEFAULT_GRAPH
    if graph is None and split is None:
        split = graph_path.parent / "split0"
    g = load_graph(graph_path)
    fixed = load_split(split, g.n_nodes) if split is not None else None
    if fixed is not None and not check_split_matches(g, fixed):
        print(f"warning: {split} positives are not exactly the edges of {graph_path}")
    started = time.perf_counter()
    keys = tuple(sorted(keys, key=lambda k: k != "blade"))  # BLADE first: blade_fixed reuses its config
    splits = [
        models.with_validation_pool(fixed if fixed is not None else lp.make_split(g.edges, g.n_nodes, seed))
        for seed in range(int(seeds))
    ]
    trained = _trained_rows(g, splits, keys, workers, members)
    per_seed = [{**_structure_rows(g, s), **rows} for s, rows in zip(splits, trained, strict=True)]
    figures = _aggregate(per_seed)
    kernels = _cpu_kernels()
    ensembles = f", {members}-member seed ensembles" if members > 1 else ""
    where = f"{graph_path.name} ({split or 'random splits'})"
    title = f"linkpred on {where}, {seeds} seed(s){ensembles}, {kernels} kernels"
    _print(figures, title)
    io.write_json(figures, out)
    if "blade" in per_seed[0]:  # beside the main JSON, whose keys are methods only (a stable interface)
        gaps = {m: paired.paired_gaps(per_seed, "blade", m, per_seed[0]) for m in PAIRED}
        _print_gaps(gaps["hits@20"])
        io.write_json(gaps, Path(out).with_suffix(".paired.json"))
    # Each seed's rows too, so a later run can be paired with this one seed by seed (on the same kernels).
    per_seed_file = Path(out).with_suffix(".per_seed.json")
    io.write_json({"seeds": per_seed, "cpu_kernels": kernels, "members": members}, per_seed_file)
    print(f"linkpred wall time: {time.perf_counter() - started:.1f} s")
    return figures
