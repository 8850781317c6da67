"""train: the dual-embedding (source/target) GNN on the directed graph, with the
importance-weighted conversion loss and the directed link loss; logged to MLflow.
(Its examples come from :mod:`nextbuy.domain.graph.training_data`, re-exported here.)"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.allocator import release_freed_memory
from nextbuy.config import TrainConfig, load_section
from nextbuy.domain import delay
from nextbuy.domain.delay import DelayFamily
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.graph.training_data import (
    conversion_validation,
    conversions,
    em_targets,
    training_logits,
    training_rows,
)
from nextbuy.domain.graph.training_data import (
    conversion_weights as conversion_weights,  # for the benchmarks and tests
)
from nextbuy.mlops import io, schemas, tracking

if TYPE_CHECKING:
    import scipy.sparse as sp

    from nextbuy.domain.graph.blade import Architecture, BladeModel, DirectedGraph
    from nextbuy.domain.graph.collective import Collective


def build_graph(
    products: pd.DataFrame, edges: pd.DataFrame, extra_features: sp.spmatrix | None = None
) -> DirectedGraph:
    """The model's view of the store: directed edges plus product features (no labels, no truth).

    ``extra_features`` (scipy sparse, one row per product in product_id order: the source's own
    features, e.g. an npz's bag-of-words) are row-normalised and appended to the store's columns.
    """
    import scipy.sparse as sp
    import torch

    # torch: imported where a model is built or trained
    from nextbuy.domain.graph.blade import DirectedGraph
    from nextbuy.domain.graph.features import row_normalised, store_features, to_torch

    if not (products["product_id"].to_numpy() == np.arange(len(products))).all():
        raise io.DataError(paths.PRODUCTS, "product_id must be 0..n-1 in order", column="product_id")

    src, dst = edges["src"].to_numpy(np.int64), edges["dst"].to_numpy(np.int64)
    category = products["category"].to_numpy(np.int64)
    features = store_features(category, products["price"].to_numpy(dtype=float), src, dst)
    if extra_features is not None and extra_features.shape[1] > 0:
        if extra_features.shape[0] != len(products):
            raise io.DataError(
                paths.FEATURES,
                f"{extra_features.shape[0]} feature row(s) for {len(products)} products",
            )
        features = sp.hstack([features, row_normalised(extra_features)], format="csr", dtype=np.float32)
    return DirectedGraph(
        n_nodes=len(products),
        src=torch.as_tensor(src),
        dst=torch.as_tensor(dst),
        features=to_torch(features),
        group=torch.as_tensor(category),
    )


def phase(progress: bool | str, name: str) -> bool | str:
    """What training's progress bar shows: ``name`` (after an outer phase, when one is
    given) while progress is on, so a new phase does not look like a restart; off: False."""
    if not progress:
        return False
    return f"{progress} · {name}" if isinstance(progress, str) else name


def train_rounds(
    graph: DirectedGraph,
    weighted: pd.DataFrame,
    cfg: TrainConfig,
    *,
    architecture: Architecture,
    delay_family: DelayFamily,
    progress: bool | str,
    collective: Collective | None = None,
    bootstrap: bool = False,
) -> tuple[BladeModel, pd.DataFrame, list[dict]]:
    """Train, then ``cfg.em_rounds`` times: refit the delay model with the model's own score
    (:func:`em_targets`) and continue training on the new targets. Methods whose delay model
    sees no pair features (``delay.rescores``) continue on their own targets: every method gets
    the same rounds, so a gain of the EM step is not the warm restart's (which helps by itself).
    Returns the model, the training rows it ended on, and the history
    (``em_round`` 0 first, epochs numbered on). ``bootstrap``: weigh each training impression by a
    Poisson(1) count seeded by ``cfg.seed`` (a bootstrap resample, the same in every round)."""
    import torch

    # torch: imported where a model is built or trained
    from nextbuy.domain.graph import blade
    from nextbuy.domain.graph.collective import SINGLE

    # Same inputs, same outputs: multithreaded CPU scatter/index_add otherwise
    # sums in a varying order and the embeddings drift in the last bits.
    torch.use_deterministic_algorithms(True)
    schedule = blade.TrainingSchedule.from_config(cfg)
    model: BladeModel | None = None
    history: list[dict] = []
    for em_round in range(cfg.em_rounds + 1):
        if em_round and delay.rescores(cfg.weighting):
            assert model is not None  # the round before trained it
            score = training_logits(model, graph, weighted, cfg.export_chunk)
            weighted = em_targets(weighted, score, cfg.weighting, delay_family)
        rows, held = training_rows(weighted, cfg)
        resample = np.random.default_rng([cfg.seed, 1]).poisson(1.0, len(rows)) if bootstrap else None
        run = blade.BladeTraining(
            graph,
            conversions(rows, cfg.weighting, resample),
            architecture=architecture,
            schedule=replace(schedule, seed=schedule.seed + 104729 * em_round),
            validate=conversion_validation(held, cfg.weighting, cfg.export_chunk),
            initial=model,
            collective=SINGLE if collective is None else collective,
        )
        model, more = run.complete(phase(progress, f"EM round {em_round + 1}/{cfg.em_rounds + 1}"))
        history += [
            {**row, "epoch": len(history) + i + 1, "em_round": em_round} for i, row in enumerate(more)
        ]
        release_freed_memory()  # the training steps' freed blocks: export allocates other sizes
    assert model is not None  # em_rounds + 1 >= 1 rounds trained it
    return model, rows, history


def fit(
    graph: DirectedGraph,
    weighted: pd.DataFrame,
    cfg: TrainConfig,
    *,
    delay_family: str,
    progress: bool = True,
    collective: Collective | None = None,
    architecture: Architecture | None = None,
    delay_horizon_days: float | None = None,
) -> tuple[BladeModel, dict[str, np.ndarray] | None, list[dict]]:
    """Pure core: returns (model, moments, per-epoch history) of the model trained on ``graph``
    (:func:`build_graph`). ``delay_family``, ``delay_horizon_days``: label_delay's model's (the
    EM step refits that model);
    ``collective``: this process's rank in a data-parallel run (None: one process); every rank
    trains its share, only rank 0 exports (the others get None for moments). ``architecture``:
    the train section's (None) or a variant of it (benchmarks compare some)."""
    # torch: imported where a model is built or trained
    from nextbuy.domain.graph import blade
    from nextbuy.domain.graph.collective import SINGLE

    group = SINGLE if collective is None else collective
    ensemble = cfg.uncertainty == "ensemble"
    # One clock over every planned epoch (EM rounds, then ensemble members): the progress
    # bar's time left covers the whole training.
    epochs = (cfg.em_rounds + 1) * cfg.epochs + (
        cfg.ensemble_members * cfg.ensemble_epochs if ensemble else 0
    )
    with blade.one_training(epochs):
        model, rows, history = train_rounds(
            graph,
            weighted,
            cfg,
            architecture=blade.Architecture.from_config(cfg) if architecture is None else architecture,
            delay_family=DelayFamily(delay_family, delay_horizon_days),
            progress=progress,
            collective=group,
        )
        members = ensemble_members(model, graph, rows, cfg, progress, group) if ensemble else None
        if group.rank:
            for _ in members or ():  # every rank trains its share of each member
                pass
            return model, None, history
        return model, moments_of(model, members, graph, cfg), history


def moments_of(
    model: BladeModel, members: Iterable[BladeModel] | None, graph: DirectedGraph, cfg: TrainConfig
) -> dict:
    """The stage's export: the ensemble moments of ``members`` (each trained, embedded and dropped
    in turn) when given, else ``export_moments`` with the train section's estimator."""
    # torch: imported where a model is built or trained
    from nextbuy.domain.graph import blade

    if members is not None:
        return blade.ensemble_moments(members, graph, chunk=cfg.export_chunk)
    return blade.export_moments(
        model,
        graph,
        mc_samples=cfg.mc_samples,
        chunk=cfg.export_chunk,
        seed=cfg.seed,
        estimator=cfg.uncertainty,
    )


def ensemble_members(
    base: BladeModel,
    graph: DirectedGraph,
    rows: pd.DataFrame,
    cfg: TrainConfig,
    progress: bool | str,
    collective: Collective | None = None,
) -> Iterator[BladeModel]:
    """``cfg.ensemble_members`` models, each trained ``cfg.ensemble_epochs`` more epochs from the
    trained ``base`` on a Poisson bootstrap of the training impressions, with its own seed
    (negatives, neighbourhood samples, dropout, batch order). A generator: a member is trained
    when the previous one has been used, so one member is in memory at a time.

    Products with thin history (new launches, few impressions) get disagreeing members: their
    few rows are in or out of each resample. Members start from one model, not from fresh
    initialisations as in a classic deep ensemble (Lakshminarayanan et al. 2017): their
    embedding spaces stay aligned, so the serving bundle keeps per-node moments (no torch,
    O(n d)) and costs ensemble_epochs x members epochs rather than members full trainings.
    ``collective``: as in :func:`fit` (every rank trains its share of each member).
    """
    # torch: imported where a model is built or trained
    from nextbuy.domain.graph import blade
    from nextbuy.domain.graph.collective import SINGLE

    schedule = blade.TrainingSchedule.from_config(cfg)
    for k in range(cfg.ensemble_members):
        resample = np.random.default_rng([cfg.seed, k]).poisson(1.0, len(rows))
        run = blade.BladeTraining(
            graph,
            conversions(rows, cfg.weighting, resample),
            architecture=base.architecture,
            schedule=replace(schedule, epochs=cfg.ensemble_epochs, seed=schedule.seed + 7919 * (k + 1)),
            initial=base,
            collective=SINGLE if collective is None else collective,
        )
        member, _ = run.complete(phase(progress, f"ensemble member {k + 1}/{cfg.ensemble_members}"))
        release_freed_memory()
        yield member
        del member


def loss_table(history: list[dict]) -> pd.DataFrame:
    """Per-epoch losses for the plot: conversion, link and the held-out conversion loss (where checked)."""
    table = pd.DataFrame(history)
    held = -table["validation"] if "validation" in table else pd.Series(np.nan, index=table.index)
    return table.drop(columns=["validation"], errors="ignore").assign(held_out_loss=held)


def best_validation(history: list[dict]) -> float | None:
    """The held-out weighted log loss of the restored (best) weights; None without validation."""
    values = [row["validation"] for row in history if "validation" in row]
    return -max(values) if values else None


def holdout_auc(moments: Mapping[str, np.ndarray], weighted: pd.DataFrame) -> float | None:
    """Ranking quality of raw scores on the calibration split's observed labels (a quick sanity figure)."""
    from sklearn.metrics import roc_auc_score

    rows = weighted[weighted["split"] == "calib"]
    if rows["label"].nunique() < 2:
        return None
    score, _ = score_and_uncertainty(moments, rows["source_id"].to_numpy(), rows["shown_id"].to_numpy())
    return float(roc_auc_score(rows["label"].to_numpy(), score))


@dataclass(frozen=True)
class StageInputs:
    """What the stage reads: ingest's tables and features, label_delay's weighted impressions and
    the family of its delay model (the EM step refits that model)."""

    products: pd.DataFrame
    edges: pd.DataFrame
    features: sp.csr_matrix  # one row per product
    weighted: pd.DataFrame
    delay_family: str
    delay_horizon_days: float | None  # the attribution window the delay is truncated at

    @classmethod
    def read(cls) -> StageInputs:
        products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
        delay_model = io.read_json(paths.DELAY_MODEL)
        return cls(
            products,
            io.read_table(paths.EDGES, schemas.EDGES),
            io.read_sparse(paths.FEATURES, n_rows=len(products)),
            io.read_table(paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED),
            delay_model["family"],
            delay_model.get("horizon_days"),
        )


def run(params_file: str = "params.yaml") -> dict:
    """The stage.  Under torchrun with ``train.distributed``, every rank trains its share and
    only rank 0 logs and writes; the other ranks return ``{}``."""
    # torch.distributed: only under torchrun
    from nextbuy.mlops import distributed

    cfg = load_section(TrainConfig, params_file)
    data = StageInputs.read()
    graph = build_graph(data.products, data.edges, data.features)
    with distributed.collective(cfg.distributed, cfg.distributed_backend) as group:
        started = time.perf_counter()
        fitted = fit(
            graph,
            data.weighted,
            cfg,
            delay_family=data.delay_family,
            delay_horizon_days=data.delay_horizon_days,
            progress=not group.rank,
            collective=group,
        )
        seconds = time.perf_counter() - started
        return {} if group.rank else record(cfg, data, fitted, seconds, group.world_size)


def record(cfg: TrainConfig, data: StageInputs, fitted: tuple, seconds: float, world_size: int) -> dict:
    """Rank 0's (or the only process's) part: log the fit to MLflow, write the stage's outputs."""
    import mlflow
    import torch

    model, moments, history = fitted
    products, edges, features, weighted = data.products, data.edges, data.features, data.weighted
    tracking.configure()
    with tracking.stage_run("train") as run:
        mlflow.set_tags({"stage": "train", "world_size": str(world_size), **tracking.lineage_tags()})
        mlflow.log_params({f"train.{k}": v for k, v in cfg.model_dump().items()})
        for row in history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        metrics = {
            "final_conv_loss": history[-1]["conv_loss"],
            "final_link_loss": history[-1]["link_loss"],
            "epochs_run": len(history),
            "best_validation_log_loss": best_validation(history),
            "calib_auc_observed": holdout_auc(moments, weighted),
            "train_seconds": round(seconds, 2),
            # This process's peak resident memory so far (Linux reports KiB).
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_examples": int((weighted["split"] == "train").sum()),
            "edges": len(edges),
            "source_feature_columns": int(features.shape[1]),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        state = BytesIO()  # written by Python: a full disk is an OSError naming the file
        torch.save(model.state_dict(), state)
        with io.atomic_path(paths.GNN_STATE) as tmp:
            tmp.write_bytes(state.getbuffer())
        keys = products.sort_values("product_id")["product_key"].to_numpy(str)
        io.write_npz({**moments, schemas.PRODUCT_KEY_ARRAY: keys}, paths.GNN_MOMENTS)
        io.write_json(
            {
                "n_nodes": len(products),
                "embedding_dim": cfg.embedding_dim,
                "weighting": cfg.weighting,
                "mlflow_run_id": run.info.run_id,
            },
            paths.GNN_META,
        )
        io.write_csv(loss_table(history), paths.plots_dir("train") / "loss.csv")
        mlflow.log_artifact(str(paths.GNN_MOMENTS), artifact_path="gnn")
        mlflow.log_artifact(str(paths.GNN_META), artifact_path="gnn")
    io.write_json(metrics, paths.metrics_file("train"))
    return metrics
