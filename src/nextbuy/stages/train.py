"""train: the dual-embedding (source/target) GNN on the directed graph, with the
importance-weighted conversion loss and the directed link loss; logged to MLflow."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.allocator import release_freed_memory
from nextbuy.config import TrainConfig, load_section
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.mlops import io, schemas, tracking

if TYPE_CHECKING:
    from nextbuy.domain.graph.blade import Architecture, TrainingSchedule
    from nextbuy.domain.graph.collective import Collective


def build_graph(products: pd.DataFrame, edges: pd.DataFrame, extra_features=None):
    """The model's view of the store: directed edges plus product features (no labels, no truth).

    ``extra_features`` (scipy sparse, one row per product in product_id order: the source's own
    features, e.g. an npz's bag-of-words) are row-normalised and appended to the store's columns.
    """
    import scipy.sparse as sp
    import torch

    from nextbuy.domain.graph.blade import DirectedGraph
    from nextbuy.domain.graph.features import row_normalised, store_features, to_torch

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


def conversion_weights(train_rows: pd.DataFrame, weighting: str) -> np.ndarray:
    return train_rows[f"weight_{weighting}"].to_numpy(dtype=float)


def blade_arguments(cfg: TrainConfig) -> tuple[Architecture, TrainingSchedule, dict]:
    """The one place the train section is unpacked for the model: its architecture, the training
    schedule, and the keyword arguments of ``blade.export_moments``.  (``weighting``,
    ``validation_share`` and ``shuffle_labels`` pick the training data, in :func:`fit`.)"""
    from nextbuy.domain.graph.blade import Architecture, TrainingSchedule

    architecture = Architecture(
        embedding_dim=cfg.embedding_dim,
        n_layers=cfg.n_layers,
        fanout_rule=cfg.fanout_rule,
        fanout_min=cfg.fanout_min,
        fanout_max=cfg.fanout_max,
        dropout=cfg.dropout,
        cold_start_fallback=cfg.cold_start_fallback,
        id_embeddings=cfg.id_embeddings,
    )
    schedule = TrainingSchedule(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        id_weight_decay=cfg.id_weight_decay,
        link_loss_weight=cfg.link_loss_weight,
        n_negatives=cfg.n_negatives,
        reverse_penalty=cfg.reverse_penalty,
        supervision_share=cfg.supervision_share,
        eval_every=cfg.eval_every,
        patience=cfg.patience,
        seed=cfg.seed,
        neighbour_history=cfg.neighbour_history,
        export_chunk=cfg.export_chunk,
    )
    export = {"mc_samples": cfg.mc_samples, "chunk": cfg.export_chunk, "seed": cfg.seed}
    return architecture, schedule, export


def training_rows(weighted: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training impressions, split by a seeded draw into (fit rows, early-stopping rows), their
    ``label`` the weighting method's target (soft for the Rao-Blackwellised importance methods, see
    ``nextbuy.domain.delay``); labels permuted first for the gate drill."""
    rows = weighted[weighted["split"] == "train"]
    rng = np.random.default_rng(cfg.seed)
    if cfg.shuffle_labels:
        permutation = rng.permutation(len(rows))
        shuffled = [
            "label", "p_flip", *(f"{kind}_{m}" for m in WEIGHTING_METHODS for kind in ("target", "weight"))
        ]  # fmt: skip
        rows = rows.assign(**{c: rows[c].to_numpy()[permutation] for c in shuffled})
    rows = rows.assign(label=rows[f"target_{cfg.weighting}"].to_numpy())
    held = rng.random(len(rows)) < cfg.validation_share
    return rows[~held], rows[held]


def conversion_validation(rows: pd.DataFrame, weighting: str, chunk: int):
    """Early-stopping score: minus the weighted log loss of the conversion head on ``rows``
    (the same weights as training), from deterministic embeddings; None without rows."""
    import torch
    import torch.nn.functional as F

    from nextbuy.domain.graph.blade import embed

    weight = torch.as_tensor(conversion_weights(rows, weighting), dtype=torch.float32)
    if not len(rows) or float(weight.sum()) <= 0:
        return None
    src = torch.as_tensor(rows["source_id"].to_numpy(), dtype=torch.int64)
    dst = torch.as_tensor(rows["shown_id"].to_numpy(), dtype=torch.int64)
    label = torch.as_tensor(rows["label"].to_numpy(), dtype=torch.float32)

    @torch.no_grad()
    def validate(model, graph) -> float:
        s, t = embed(model, graph, chunk=chunk)
        logit = model.conversion_logit(s[src], t[dst])
        loss = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
        return -float((weight * loss).sum() / weight.sum())

    return validate


def fit(
    products: pd.DataFrame,
    edges: pd.DataFrame,
    weighted: pd.DataFrame,
    cfg: TrainConfig,
    *,
    delay_family: str,
    progress: bool = True,
    extra_features=None,
    collective: Collective | None = None,
):
    """Pure core: returns (model, moments, per-epoch history). ``delay_family``: label_delay's
    (the EM step refits that model); ``extra_features``: see :func:`build_graph`;
    ``collective``: see :func:`fit_graph`."""
    if not (products["product_id"].to_numpy() == np.arange(len(products))).all():
        raise io.DataError(paths.PRODUCTS, "product_id must be 0..n-1 in order", column="product_id")
    architecture, schedule, export = blade_arguments(cfg)
    graph = build_graph(products, edges, extra_features)
    return fit_graph(
        graph, weighted, cfg, architecture, schedule, export, delay_family=delay_family, progress=progress,
        collective=collective,
    )  # fmt: skip


def phase(progress: bool | str, name: str) -> bool | str:
    """What training's progress bar shows: ``name`` (after an outer phase, when one is
    given) while progress is on, so a new phase does not look like a restart; off: False."""
    if not progress:
        return False
    return f"{progress} · {name}" if isinstance(progress, str) else name


def train_rounds(
    graph,
    weighted,
    cfg: TrainConfig,
    architecture,
    schedule,
    *,
    delay_family: str,
    progress: bool | str,
    collective: Collective | None = None,
    bootstrap: bool = False,
):
    """Train, then ``cfg.em_rounds`` times: refit the delay model with the model's own score
    (:func:`em_targets`) and continue training on the new targets. Methods whose delay model
    sees no pair features (``delay.rescores``) continue on their own targets: every method gets
    the same rounds, so a gain of the EM step is not the warm restart's (which helps by itself).
    Returns the model, the training rows it ended on, and the history
    (``em_round`` 0 first, epochs numbered on). ``bootstrap``: weigh each training impression by a
    Poisson(1) count seeded by ``cfg.seed`` (a bootstrap resample, the same in every round)."""
    import torch

    from nextbuy.domain import delay
    from nextbuy.domain.graph import blade
    from nextbuy.domain.graph.collective import SINGLE

    # Same inputs, same outputs: multithreaded CPU scatter/index_add otherwise
    # sums in a varying order and the embeddings drift in the last bits.
    torch.use_deterministic_algorithms(True)
    group = SINGLE if collective is None else collective
    model, history = None, []
    for em_round in range(cfg.em_rounds + 1):
        if em_round and delay.rescores(cfg.weighting):
            score = training_logits(model, graph, weighted, cfg.export_chunk)
            weighted = em_targets(weighted, score, cfg.weighting, delay_family)
        rows, held = training_rows(weighted, cfg)
        weight = conversion_weights(rows, cfg.weighting)
        if bootstrap:
            weight = weight * np.random.default_rng([cfg.seed, 1]).poisson(1.0, len(rows))
        model, more = blade.train_blade(
            graph,
            torch.as_tensor(rows["source_id"].to_numpy(), dtype=torch.int64),
            torch.as_tensor(rows["shown_id"].to_numpy(), dtype=torch.int64),
            torch.as_tensor(rows["label"].to_numpy(), dtype=torch.float32),
            torch.as_tensor(weight, dtype=torch.float32),
            architecture=architecture,
            schedule=replace(schedule, seed=schedule.seed + 104729 * em_round),
            validate=conversion_validation(held, cfg.weighting, cfg.export_chunk),
            progress=phase(progress, f"EM round {em_round + 1}/{cfg.em_rounds + 1}"),
            initial=model,
            collective=group,
        )
        history += [
            {**row, "epoch": len(history) + i + 1, "em_round": em_round} for i, row in enumerate(more)
        ]
        release_freed_memory()  # the training steps' freed blocks: export allocates other sizes
    return model, rows, history


def em_targets(weighted: pd.DataFrame, score: np.ndarray, method: str, family: str) -> pd.DataFrame:
    """``weighted`` with ``target_<method>`` of the train split recomputed by one EM step
    (``nextbuy.domain.delay.rescored_targets``): the delay model refitted with ``score``, a
    conversion model's logit of each training impression (train-split order), as a feature.
    Any conversion model can take the step (``bench model`` gives its baselines the same)."""
    from nextbuy.domain import delay

    train = (weighted["split"] == "train").to_numpy()
    rows = weighted[train]
    signals = rows[["elapsed_days", "label", "delay_days", "engaged_days", *delay.ENGAGEMENT]].join(
        rows[[c for c in delay.FEATURES if c in rows]]
    )
    target, _ = delay.rescored_targets(signals, score, np.ones(len(rows), bool), method, family)
    column = weighted[f"target_{method}"].to_numpy(copy=True)
    column[train] = target
    return weighted.assign(**{f"target_{method}": column})


def training_logits(model, graph, weighted: pd.DataFrame, chunk: int) -> np.ndarray:
    """The model's deterministic conversion logit of every train-split impression."""
    import torch

    from nextbuy.domain.graph.blade import embed

    rows = weighted[weighted["split"] == "train"]
    with torch.no_grad():
        s, t = embed(model, graph, chunk=chunk)
        src = torch.as_tensor(rows["source_id"].to_numpy(), dtype=torch.int64)
        dst = torch.as_tensor(rows["shown_id"].to_numpy(), dtype=torch.int64)
        return model.conversion_logit(s[src], t[dst]).double().numpy()


def fit_graph(
    graph,
    weighted: pd.DataFrame,
    cfg: TrainConfig,
    architecture,
    schedule,
    export,
    *,
    delay_family: str,
    progress: bool,
    collective: Collective | None = None,
):
    """:func:`fit` on a built graph with explicit model arguments (benchmarks vary them).
    ``collective``: this process's rank in a data-parallel run (None: one process); every rank
    trains its share, only rank 0 exports (the others get None for moments)."""
    from nextbuy.domain.graph import blade
    from nextbuy.domain.graph.collective import SINGLE

    group = SINGLE if collective is None else collective
    model, rows, history = train_rounds(
        graph,
        weighted,
        cfg,
        architecture,
        schedule,
        delay_family=delay_family,
        progress=progress,
        collective=group,
    )
    members = (
        ensemble_members(model, graph, rows, cfg, architecture, schedule, progress, group)
        if cfg.uncertainty == "ensemble"
        else None
    )
    if group.rank:
        for _ in members or ():  # every rank trains its share of each member
            pass
        return model, None, history
    if members is not None:  # each member is trained, embedded and dropped in turn
        moments = blade.ensemble_moments(members, graph, chunk=cfg.export_chunk)
    else:
        moments = blade.export_moments(model, graph, **export, estimator=cfg.uncertainty)
    return model, moments, history


def ensemble_members(
    base,
    graph,
    rows: pd.DataFrame,
    cfg: TrainConfig,
    architecture,
    schedule,
    progress: bool | str,
    collective: Collective | None = None,
):
    """``cfg.ensemble_members`` models, each trained ``cfg.ensemble_epochs`` more epochs from the
    trained ``base`` on a Poisson bootstrap of the training impressions, with its own seed
    (negatives, neighbourhood samples, dropout, batch order). A generator: a member is trained
    when the previous one has been used, so one member is in memory at a time.

    Products with thin history (new launches, few impressions) get disagreeing members: their
    few rows are in or out of each resample. Members start from one model, not from fresh
    initialisations as in a classic deep ensemble (Lakshminarayanan et al. 2017): their
    embedding spaces stay aligned, so the serving bundle keeps per-node moments (no torch,
    O(n d)) and costs ensemble_epochs x members epochs rather than members full trainings.
    ``collective``: as in :func:`fit_graph` (every rank trains its share of each member).
    """
    import torch

    from nextbuy.domain.graph import blade
    from nextbuy.domain.graph.collective import SINGLE

    as_long = lambda col: torch.as_tensor(rows[col].to_numpy(), dtype=torch.int64)  # noqa: E731
    weight = conversion_weights(rows, cfg.weighting)
    for k in range(cfg.ensemble_members):
        resample = np.random.default_rng([cfg.seed, k]).poisson(1.0, len(rows))
        member, _ = blade.train_blade(
            graph,
            as_long("source_id"),
            as_long("shown_id"),
            torch.as_tensor(rows["label"].to_numpy(), dtype=torch.float32),
            torch.as_tensor(weight * resample, dtype=torch.float32),
            architecture=architecture,
            schedule=replace(schedule, epochs=cfg.ensemble_epochs, seed=schedule.seed + 7919 * (k + 1)),
            progress=phase(progress, f"ensemble member {k + 1}/{cfg.ensemble_members}"),
            initial=base,
            collective=SINGLE if collective is None else collective,
        )
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


def holdout_auc(moments, weighted: pd.DataFrame) -> float | None:
    """Ranking quality of raw scores on the calibration split's observed labels (a quick sanity figure)."""
    from sklearn.metrics import roc_auc_score

    from nextbuy.domain.graph.scoring import score_and_uncertainty

    rows = weighted[weighted["split"] == "calib"]
    if rows["label"].nunique() < 2:
        return None
    score, _ = score_and_uncertainty(moments, rows["source_id"].to_numpy(), rows["shown_id"].to_numpy())
    return float(roc_auc_score(rows["label"].to_numpy(), score))


def run(params_file: str = "params.yaml") -> dict:
    """The stage.  Under torchrun with ``train.distributed``, every rank trains its share and
    only rank 0 logs and writes; the other ranks return ``{}``."""
    from nextbuy.mlops import distributed

    cfg = load_section("train", params_file)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    features = io.read_sparse(paths.FEATURES, n_rows=len(products))
    weighted = io.read_table(paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    delay_family = io.read_json(paths.DELAY_MODEL)["family"]  # the EM step refits label_delay's model
    with distributed.collective(cfg.distributed, cfg.distributed_backend) as group:
        if group.rank:
            fit(
                products, edges, weighted, cfg, delay_family=delay_family, progress=False,
                extra_features=features, collective=group,
            )  # fmt: skip
            return {}
        return train_and_record(cfg, products, edges, features, weighted, group, delay_family)


def train_and_record(
    cfg: TrainConfig, products, edges, features, weighted, group: Collective, delay_family: str
) -> dict:
    """Rank 0's (or the only process's) part: train, log to MLflow, write the stage's outputs."""
    import mlflow
    import torch

    tracking.configure()
    with mlflow.start_run(run_name="train") as run:
        mlflow.set_tags({"stage": "train", "world_size": str(group.world_size), **tracking.lineage_tags()})
        mlflow.log_params({f"train.{k}": v for k, v in cfg.model_dump().items()})
        started = time.perf_counter()
        model, moments, history = fit(
            products,
            edges,
            weighted,
            cfg,
            delay_family=delay_family,
            extra_features=features,
            collective=group,
        )
        seconds = time.perf_counter() - started
        for row in history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        metrics = {
            "final_conv_loss": history[-1]["conv_loss"],
            "final_link_loss": history[-1]["link_loss"],
            "epochs_run": len(history),
            "best_validation_log_loss": best_validation(history),
            "calib_auc_observed": holdout_auc(moments, weighted),
            "train_seconds": round(seconds, 2),
            "train_examples": int((weighted["split"] == "train").sum()),
            "edges": len(edges),
            "source_feature_columns": int(features.shape[1]),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        with io.atomic_path(paths.GNN_STATE) as tmp:
            torch.save(model.state_dict(), tmp)
        io.write_npz(moments, paths.GNN_MOMENTS)
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
