"""The per-size core of `nextbuy bench scale`: the pipeline's pure cores on one simulated store.

:func:`measure` times, on the store of params.yaml scaled to ``n_products`` (purchases and
impressions in proportion, so edges grow linearly), each stage's pure core in the order the
pipeline runs them:

* ``ingest_s``: ``ingest.ingest`` (simulate, cross-table checks, split) and the schema
  validation the stage runs before writing its tables (no parquet is written);
* ``label_delay_s``: ``label_delay.weigh``;
* ``graph_s``: ``train.build_graph`` (store features, sparse feature rows);
* ``train_epoch_s``: one epoch of ``blade.train_blade`` (the epoch's message graph index,
  sampling, steps), no early-stopping check (best of two where an epoch is quick:
  :func:`time_epochs`); ``validation_s``: one early-stopping check
  (``train.conversion_validation``), which the stage runs after every epoch;
* ``export_s``: the uncertainty export of ``train.uncertainty``: ``ensemble`` exports
  ``ensemble_members`` models (stand-ins: the trained model with jittered id embeddings;
  the export pass costs the same whatever the weights, fine-tuning the real members costs
  ``ensemble_members x ensemble_epochs`` more epochs, see ``ensemble_train_s_estimated``),
  the others ``blade.export_moments``;
* ``calibrate_s``: ``calibrate.score_holdout``; ``thresholds_s``: ``thresholds.fit_policies``;
* ``topk_s``: ``ServingBundle.top_k`` (top-20) for a fixed seeded sample of sources, after a
  warm-up call that builds the bundle's retrieval index (``topk_index_s``);
  ``topk_all_s_extrapolated`` = index + sample time x catalogue / sample.

Beside them, not stage costs: ``sage_epoch_s``, one epoch of torch-geometric's ``GraphSAGE``
(:class:`SageModel`) through the same training loop on the same graph and batches, right
after a BLADE epoch at the same neighbour budget (``train_epoch_sampled_s``: every hop sampled,
which is the configured epoch unless ``train.neighbour_history`` is on), up to
``SAGE_MAX_PRODUCTS``; and ``sampler_edges_per_s`` of BLADE's neighbour sampler.

Run as ``python -m nextbuy.bench.scale_core PARAMS N SAMPLE``, it prints one line per stage
(``SCALE-STAGE name``) and the figures last (``SCALE-RESULT {json}``) with its peak RSS.
"""

from __future__ import annotations

import copy
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from nextbuy.bench.sage import SageModel
from nextbuy.config import (
    CalibrateConfig,
    IngestConfig,
    LabelDelayConfig,
    RetrievalConfig,
    ThresholdsConfig,
    TrainConfig,
    merge,
    read_params,
    section_config,
)
from nextbuy.domain.graph.blade import Architecture, BladeModel, Conversions, DirectedGraph

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

    from nextbuy.serving import ServingBundle
    from nextbuy.stages.ingest import Ingested

TOP_K = 20
SAMPLE_SOURCES = 2_000
SAMPLER_BATCHES = 20
EPOCH_PAIRS = 2  # BLADE + GraphSAGE epochs, timed back to back, best of this many pairs...
REPEAT_BELOW_S = 120.0  # ...when a pair takes less than this (one pair at large sizes)
SAGE_MAX_PRODUCTS = 200_000  # GraphSAGE beside BLADE up to this size: sampling every hop, 1M takes hours
MEMBER_JITTER = 0.1  # stand-in ensemble members: id embeddings + this x their std x N(0, 1)
STAGE_KEYS = (  # summed as a size's total_s (the exponent's time)
    "ingest_s", "label_delay_s", "graph_s", "train_epoch_s", "validation_s", "export_s", "calibrate_s",
    "thresholds_s",
)  # fmt: skip
STEPS = (
    "ingest", "label_delay", "graph", "train_epoch", "sage_epoch", "sampler", "validation", "export",
    "calibrate", "thresholds", "topk",
)  # fmt: skip
STAGE_PREFIX, RESULT_PREFIX = "SCALE-STAGE ", "SCALE-RESULT "


def scaled_params(params: dict, n_products: int) -> dict:
    """``params`` with the simulated catalogue at ``n_products``, purchases and impressions
    scaled in proportion, and one training epoch."""
    sim = params["ingest"]["simulator"]
    factor = n_products / sim["n_products"]
    scaled = {
        "n_products": int(n_products),
        "n_purchases": max(100, round(sim["n_purchases"] * factor)),
        "n_impressions": max(100, round(sim["n_impressions"] * factor)),
    }
    return merge(params, {"ingest": {"simulator": scaled}, "train": {"epochs": 1}})


def peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@contextmanager
def _timed(times: dict, step: str, on_step: Callable[[str], None]) -> Iterator[None]:
    on_step(step)
    started = time.perf_counter()
    yield
    times[f"{step}_s"] = time.perf_counter() - started


# -- the measured steps -------------------------------------------------------------------------


def ingest_and_validate(params: dict) -> Ingested:
    """``ingest.ingest`` and the schema checks its stage runs on every table it writes."""
    from nextbuy import paths
    from nextbuy.mlops import io, schemas
    from nextbuy.stages import ingest

    data = ingest.ingest(section_config(params, IngestConfig))
    tables = [
        (data.products, paths.PRODUCTS, schemas.PRODUCTS),
        (data.edges, paths.EDGES, schemas.EDGES),
        (data.impressions, paths.IMPRESSIONS, schemas.IMPRESSIONS),
        (data.truth_impressions, paths.TRUTH_IMPRESSIONS, schemas.TRUTH_IMPRESSIONS),
        (data.truth_products, paths.TRUTH_PRODUCTS, schemas.TRUTH_PRODUCTS),
    ]
    for frame, path, schema in tables:
        if frame is not None:
            io.validate(frame.reset_index(drop=True), schema, path)
    return data


def one_epoch(
    graph: DirectedGraph, data: Conversions, cfg: TrainConfig, initial: BladeModel | None = None
) -> BladeModel:
    """One epoch of BLADE's training loop (of ``initial``'s model when given), no validation."""
    from nextbuy.domain.graph import blade

    model, _ = blade.train_blade(
        graph, data, architecture=blade.Architecture.from_config(cfg),
        schedule=replace(blade.TrainingSchedule.from_config(cfg), epochs=1), progress=False, initial=initial,
    )  # fmt: skip
    return model


def _best_of(epoch: Callable[[], BladeModel]) -> tuple[BladeModel, list[float]]:
    """Run ``epoch`` and time it; once more when it took under ``REPEAT_BELOW_S`` (a busy machine
    slows some epochs: the figure is the best of them)."""
    times: list[float] = []
    while True:
        started = time.perf_counter()
        model = epoch()
        times.append(time.perf_counter() - started)
        if len(times) >= EPOCH_PAIRS or times[-1] > REPEAT_BELOW_S:
            return model, times


def time_epochs(
    graph: DirectedGraph,
    data: Conversions,
    cfg: TrainConfig,
    sage: SageModel | None,
    on_step: Callable[[str], None],
) -> tuple:
    """One BLADE epoch as configured (``train_epoch_s``); with ``sage``, the side-by-side pair at the
    same neighbour budget: one BLADE epoch sampling every hop (``train_epoch_sampled_s``: the
    configured epoch itself unless ``neighbour_history`` reads deeper hops from states) and one
    GraphSAGE epoch from ``sage`` (built, torch-geometric imported, before the clock starts),
    back to back; again while a pair takes under ``REPEAT_BELOW_S``, up to ``EPOCH_PAIRS``
    pairs.  Each figure is the best of its epochs. Returns the last configured model and the times."""
    times: dict = {}
    sampled_cfg = cfg.model_copy(update={"neighbour_history": False})
    if cfg.neighbour_history or sage is None:
        on_step("train_epoch")
        model, configured = _best_of(lambda: one_epoch(graph, data, cfg))
        times |= {"train_epoch_s": min(configured), "train_epoch_all_s": configured}
    if sage is None:
        return model, times | {"train_epoch_sampled_s": None, "sage_epoch_s": None}
    blade_s, sage_s = [], []
    while True:
        started = time.perf_counter()
        on_step("train_epoch")
        sampled = one_epoch(graph, data, sampled_cfg)
        blade_s.append(time.perf_counter() - started)
        on_step("sage_epoch")
        one_epoch(graph, data, sampled_cfg, sage)
        sage_s.append(time.perf_counter() - started - blade_s[-1])
        if len(blade_s) >= EPOCH_PAIRS or time.perf_counter() - started > REPEAT_BELOW_S:
            break
    times |= {"train_epoch_sampled_s": min(blade_s), "sampled_epoch_all_s": blade_s}
    times |= {"sage_epoch_s": min(sage_s), "sage_epoch_all_s": sage_s}
    if not cfg.neighbour_history:
        model = sampled
        times |= {"train_epoch_s": min(blade_s), "train_epoch_all_s": blade_s}
    return model, times


def sampler_edges_per_s(
    graph: DirectedGraph, architecture: Architecture, batch_size: int, seed: int
) -> float:
    """Message edges BLADE's neighbour sampler draws per second, over ``SAMPLER_BATCHES`` batches of
    ``2 x batch_size`` random seeds (a training step's conversion sources and destinations)."""
    from nextbuy.domain.graph.blade import GraphIndex

    index = GraphIndex.build(graph, architecture)
    generator = torch.Generator().manual_seed(seed)
    size = min(2 * batch_size, graph.n_nodes)
    batches = [
        torch.randperm(graph.n_nodes, generator=generator)[:size].sort().values
        for _ in range(SAMPLER_BATCHES)
    ]
    edges, started = 0, time.perf_counter()
    for seeds in batches:
        _, blocks = index.blocks(seeds, architecture.n_layers, True, generator)
        edges += sum(b.out_dst.numel() + b.in_dst.numel() for b in blocks)
    return edges / max(time.perf_counter() - started, 1e-9)


def stand_in_members(model: BladeModel, count: int, seed: int) -> list[BladeModel]:
    """``count`` copies of ``model``, id embeddings jittered (seeded): an ensemble to export."""
    generator = torch.Generator().manual_seed(seed)
    members = []
    for _ in range(count):
        member = copy.deepcopy(model)
        with torch.no_grad():
            weight = member.id_emb.weight
            weight.add_(
                torch.randn(weight.shape, generator=generator) * (MEMBER_JITTER * float(weight.std()))
            )
        members.append(member.eval())
    return members


def export(
    model: BladeModel, graph: DirectedGraph, cfg: TrainConfig, members: list[BladeModel] | None
) -> dict:
    """The train stage's export: ensemble moments of ``members``, else ``export_moments``."""
    from nextbuy.stages import train

    return train.moments_of(model, members, graph, cfg)


def time_top_k(bundle: ServingBundle, n_sources: int, seed: int) -> dict:
    """``bundle.top_k`` (top-``TOP_K``) for a seeded sample of sources, after a warm-up call on
    ten sources that builds the retrieval index; extrapolated to the whole catalogue."""
    n = bundle.n_products
    sources = np.random.default_rng(seed).choice(n, size=min(int(n_sources), n), replace=False)
    started = time.perf_counter()
    bundle.top_k(sources[:10], TOP_K)
    index_s = time.perf_counter() - started
    started = time.perf_counter()
    bundle.top_k(sources, TOP_K)
    topk_s = time.perf_counter() - started
    return {
        "topk_index_s": index_s,
        "topk_s": topk_s,
        "topk_sources": int(sources.size),
        "topk_all_s_extrapolated": index_s + topk_s * n / sources.size,
    }


# -- one size -------------------------------------------------------------------------------------


def _quiet(_: str) -> None:
    pass


def _store(
    params: dict, times: dict, on_step: Callable[[str], None]
) -> tuple[pd.DataFrame, pd.DataFrame, sp.csr_matrix | None, pd.DataFrame]:
    """Ingest and label_delay, timed: (products, edges, features, weighted)."""
    from nextbuy.stages import label_delay

    with _timed(times, "ingest", on_step):
        data = ingest_and_validate(params)
    with _timed(times, "label_delay", on_step):
        weighted, _ = label_delay.weigh(
            data.impressions,
            data.snapshot,
            section_config(params, LabelDelayConfig),
            data.products,
            data.edges,
        )
    return data.products, data.edges, data.features, weighted


def _train(
    products: pd.DataFrame,
    edges: pd.DataFrame,
    features: sp.spmatrix | None,
    weighted: pd.DataFrame,
    cfg: TrainConfig,
    times: dict,
    on_step: Callable[[str], None],
) -> tuple[DirectedGraph, BladeModel]:
    """Graph, one BLADE epoch, one GraphSAGE epoch, the sampler's rate, one validation check."""
    from nextbuy.stages import train

    with _timed(times, "graph", on_step):
        graph = train.build_graph(products, edges, features)
    torch.use_deterministic_algorithms(True)  # as train.train_rounds
    rows, held = train.training_rows(weighted, cfg)
    data = train.conversions(rows, cfg.weighting)
    architecture = Architecture.from_config(cfg)
    compare = architecture.n_layers and graph.n_nodes <= SAGE_MAX_PRODUCTS
    sage = SageModel(graph.n_nodes, graph.n_features, architecture) if compare else None
    model, epochs = time_epochs(graph, data, cfg, sage, on_step)
    times.update(epochs)
    on_step("sampler")
    times["sampler_edges_per_s"] = sampler_edges_per_s(graph, architecture, cfg.batch_size, cfg.seed)
    validate = train.conversion_validation(held, cfg.weighting, cfg.export_chunk)
    with _timed(times, "validation", on_step):
        if validate is not None:
            validate(model, graph)
    return graph, model


def _serve(
    params: dict,
    weighted: pd.DataFrame,
    moments: dict,
    sample_sources: int,
    times: dict,
    on_step: Callable[[str], None],
) -> None:
    """Calibrate, thresholds and top-K of the serving bundle, timed."""
    from nextbuy.serving import ServingBundle
    from nextbuy.stages import calibrate, thresholds

    with _timed(times, "calibrate", on_step):
        scored, calibration = calibrate.score_holdout(
            weighted, moments, section_config(params, CalibrateConfig)
        )
    with _timed(times, "thresholds", on_step):
        fitted = thresholds.fit_policies(
            scored, calibration.n_buckets, section_config(params, ThresholdsConfig)
        )
    retrieval = section_config(params, RetrievalConfig)
    bundle = ServingBundle.from_arrays(moments, calibration, fitted.thresholds, retrieval)
    on_step("topk")
    times.update(time_top_k(bundle, sample_sources, seed=0))


def measure(
    params: dict,
    n_products: int,
    sample_sources: int = SAMPLE_SOURCES,
    on_step: Callable[[str], None] = _quiet,
) -> dict:
    """Every figure of one size (see the module docstring), in this process."""
    params = scaled_params(params, n_products)
    cfg = section_config(params, TrainConfig)
    times: dict = {}
    products, edges, features, weighted = _store(params, times, on_step)
    graph, model = _train(products, edges, features, weighted, cfg, times, on_step)
    members = None
    if cfg.uncertainty == "ensemble":
        members = stand_in_members(model, cfg.ensemble_members, cfg.seed)
    with _timed(times, "export", on_step):
        moments = export(model, graph, cfg, members)
    del members, model
    _serve(params, weighted, moments, sample_sources, times, on_step)
    extra_epochs = cfg.ensemble_members * cfg.ensemble_epochs if cfg.uncertainty == "ensemble" else 0
    sage = times.get("sage_epoch_s")
    return {
        "n_products": int(n_products),
        "n_edges": len(edges),
        "n_impressions": len(weighted),
        "n_train_rows": int((weighted["split"] == "train").sum()),
        **{key: times[key] for key in STAGE_KEYS},
        **{key: value for key, value in times.items() if key not in STAGE_KEYS},
        "total_s": sum(times[key] for key in STAGE_KEYS),
        "blade_vs_sage_epoch_ratio": times["train_epoch_sampled_s"] / sage if sage else None,
        "ensemble_train_s_estimated": extra_epochs * times["train_epoch_s"],
        "peak_rss_gib": peak_rss_gib(),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str]) -> None:
    """Child process: ``PARAMS N SAMPLE`` -> stage lines, then the figures as JSON."""
    from nextbuy.allocator import keep_freed_memory

    keep_freed_memory()  # as every nextbuy command: the stages' times are the CLI's
    params_file, n_products, sample_sources = argv[0], int(argv[1]), int(argv[2])
    say = lambda text: print(text, flush=True)  # noqa: E731
    started = time.perf_counter()
    figures = measure(read_params(params_file), n_products, sample_sources, lambda s: say(STAGE_PREFIX + s))
    figures["child_s"] = time.perf_counter() - started
    say(RESULT_PREFIX + json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
