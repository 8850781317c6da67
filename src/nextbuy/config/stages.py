"""The params.yaml sections after ingest: label delay, train, calibrate, thresholds, deploy
(with its retrieval), traffic (with its drift) and monitor; and ``serving``, the section of
``nextbuy serve``, which no stage reads."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from nextbuy.config.base import Section, _AnyFloat
from nextbuy.constants import WEIGHTING_METHODS


class LabelDelayConfig(Section):
    delay_family: Literal["lognormal", "weibull"]
    max_weight: float = Field(gt=0.0)
    normalise_weights: bool
    wait_days: float = Field(ge=0.0)
    seed: int
    # train rows the delay models are fitted on (a seeded hash sample of impression ids above it)
    fit_sample_rows: int = Field(ge=1000)


class TrainConfig(Section):
    embedding_dim: int = Field(ge=4)
    n_layers: int = Field(ge=1, le=4)
    fanout_rule: Literal["power_law", "fixed"]
    fanout_max: int = Field(ge=1)
    fanout_min: int = Field(ge=1)
    neighbour_history: bool  # sample one hop per step, deeper hops from per-epoch states (linear epochs)
    dropout: float = Field(ge=0.0, lt=1.0)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=16)
    lr: float = Field(gt=0.0)
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0.0)
    id_weight_decay: float = Field(ge=0.0)
    link_loss_weight: float = Field(ge=0.0)
    n_negatives: int = Field(ge=1)
    reverse_penalty: float = Field(ge=0.0)
    supervision_share: float = Field(gt=0.0, lt=1.0)
    eval_every: int = Field(ge=1)
    patience: int = Field(ge=1)
    validation_share: float = Field(ge=0.0, lt=1.0)
    weighting: Literal[WEIGHTING_METHODS]  # type: ignore[valid-type]
    em_rounds: int = Field(ge=0, le=5)  # training rounds after the first (importance: EM step before each)
    uncertainty: Literal["ensemble", "mc_dropout", "sampler"]
    ensemble_members: int = Field(ge=2)
    ensemble_epochs: int = Field(ge=1)
    mc_samples: int = Field(ge=2)
    cold_start_fallback: (
        bool  # nodes with no neighbours in a direction sample neighbours of same-category products
    )
    id_embeddings: bool  # a learned id embedding per product beside its features (off: features only)
    export_chunk: int = Field(ge=1)  # nodes per chunk whenever every node is embedded (memory bound)
    # Gate drill: train on permuted labels; the deploy gate must refuse the result.
    shuffle_labels: bool
    seed: int
    # Under torchrun: data-parallel training, batch_size per process, only rank 0 writes.
    distributed: bool
    distributed_backend: Literal["auto", "gloo", "nccl"]  # auto: nccl where CUDA is, else gloo

    @model_validator(mode="after")
    def _fanout_order(self) -> TrainConfig:
        if self.fanout_min > self.fanout_max:
            raise ValueError("train.fanout_min must be <= train.fanout_max")
        return self


class ServedRankingConfig(Section):
    """The out-of-fold choice of the served top-K order (``nextbuy.domain.served_ranking``)."""

    k: int = Field(ge=1)  # Hits@k decides
    max_rows: int = Field(ge=2)  # calibration-split next purchases ranked (a seeded sample above it)
    confidence: float = Field(gt=0.0, lt=1.0)  # a count ranking is served when its gap's CI is above zero
    priors: list[float] = Field(min_length=1)  # co-purchase's popularity pseudo-counts tried
    cross_fit_folds: int = Field(ge=2)  # the prior's choice measured out of fold
    seed: int

    @field_validator("priors")
    @classmethod
    def _counts(cls, priors: list[float]) -> list[float]:
        if any(not math.isfinite(p) or p < 0 for p in priors):
            raise ValueError(f"every prior is a count >= 0, got {priors}")
        return priors


class CalibrateConfig(Section):
    n_buckets: int = Field(ge=1)
    maturity_days: float = Field(ge=0.0)
    min_bucket_size: int = Field(ge=1)
    served_ranking: ServedRankingConfig


class ThresholdsConfig(Section):
    target_precision: float = Field(gt=0.0, lt=1.0)
    # Cut points both policies choose among: None = every distinct score (exact), else a cap (quantiles).
    n_candidates: int | None = Field(ge=2)
    # Support floor: a bucket with fewer fit positives gets the single threshold; the target needs >= this TP.
    min_bucket_positives: int = Field(ge=0)
    # Folds of the out-of-fold check that keeps the per-bucket policy only where it wins (< 2: off).
    cross_fit_folds: int = Field(ge=0)
    seed: int  # fold assignment of that check


class RetrievalConfig(Section):
    """Candidate retrieval for top-K (``nextbuy.domain.retrieval``): deploy stores these
    settings with the serving model, so every top-K of that model (REST, batch-topk) uses them."""

    kind: Literal["auto", "flat", "ivf", "hnsw"]
    # auto: flat (exact search) up to this many products, ivf above.
    flat_max_products: int = Field(ge=0)
    # Products retrieved per source (by mean logit) before the exact re-rank.
    candidates: int = Field(ge=1)
    # A source whose top-K the re-rank cannot prove complete: "scan" completes it exactly over
    # the whole catalogue, "none" serves its re-ranked candidates, "auto" scans with flat only.
    completion: Literal["auto", "scan", "none"]
    ivf_lists_per_sqrt: float = Field(gt=0.0)  # ivf: inverted lists = this x sqrt(products)
    nprobe: int = Field(ge=1)  # ivf: lists searched per source
    hnsw_m: int = Field(ge=2, le=256)  # hnsw: links per product in the graph
    hnsw_ef_construction: int = Field(ge=1)  # hnsw: search depth while building the graph
    ef_search: int = Field(ge=1)  # hnsw: search depth per source (at least the products retrieved)


class DeployConfig(Section):
    """The release gate: absolute floors, then non-inferiority against the champion."""

    model_name: str
    # Floors on the fresh evaluation data (test split, delay-corrected labels).
    min_recall: float = Field(ge=0.0, le=1.0)
    min_precision: float = Field(ge=0.0, le=1.0)
    min_auc: float = Field(ge=0.0, le=1.0)
    max_calibration_error: float = Field(ge=0.0)
    # Candidate passes against the champion when the lower bound of the paired
    # bootstrap CI of (candidate - champion) is above -tolerance, per metric.
    compare_metrics: tuple[Literal["auc", "recall"], ...] = Field(strict=False)  # YAML gives a list
    tolerance: float = Field(ge=0.0)
    bootstrap_samples: int = Field(ge=20)
    confidence: float = Field(gt=0.5, lt=1.0)
    seed: int
    # Top-K candidate retrieval, stored with the serving model this stage registers.
    retrieval: RetrievalConfig
    # Model card: its "cold sources" row covers the test rows whose source has at most this many out-edges.
    card_low_out_degree: int = Field(ge=0)


class DriftConfig(Section):
    """Drift injected into simulated post-snapshot traffic (a drill for the monitor)."""

    kind: Literal["none", "bucket_shift"]
    # bucket_shift: the true conversion odds of pairs the current model puts in
    # this uncertainty bucket are multiplied by odds_multiplier from start_day on.
    bucket: int = Field(ge=0)
    start_day: float = Field(ge=0.0)
    odds_multiplier: float = Field(gt=0.0)


class TrafficConfig(Section):
    """New traffic after the training snapshot, for monitoring."""

    days: int = Field(ge=1)
    impressions_per_day: int = Field(ge=10)
    seed: int
    # A real post-snapshot impressions log replaces the simulation.
    impressions_path: str | None
    drift: DriftConfig


class MonitorConfig(Section):
    window_days: float = Field(gt=0.0)
    # Observed positivity counts only windows' rows at least this old at "now".
    maturity_days: float = Field(ge=0.0)
    # Alert when the CI of delay-corrected positivity lies outside predicted * (1 +- tolerance);
    # one number for every bucket, or a list with one per bucket (least uncertain first).
    # finiteness is checked below, with a message naming the key (not per union member)
    relative_tolerance: _AnyFloat | list[_AnyFloat]
    min_volume: int = Field(ge=1)
    confidence: float = Field(gt=0.5, lt=1.0)
    prior_conversions: float = Field(gt=0.0)
    min_seen_share: float = Field(ge=0.0, le=1.0)
    workspace: str
    project: str
    dashboard: str
    # Model cards: the latest this many versions are re-scored on traffic whose labels matured
    # for each of matured_days days (a maturity with fewer than matured_min_conversions
    # conversions gives no row yet).
    matured_versions: int = Field(ge=0)
    matured_days: tuple[Annotated[int, Field(ge=1)], ...] = Field(strict=False, min_length=1)  # YAML: a list
    matured_min_conversions: int = Field(ge=1)

    @field_validator("relative_tolerance")
    @classmethod
    def _tolerance_is_non_negative(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("monitor.relative_tolerance: give one number, or a list with one per bucket")
        bad = [v for v in values if not (math.isfinite(v) and v >= 0.0)]
        if bad:
            raise ValueError(
                f"monitor.relative_tolerance must be finite and >= 0 (a share of the predicted "
                f"positivity), got {value!r}: bad value(s) {bad}"
            )
        return value

    def tolerance(self, bucket: np.ndarray) -> np.ndarray:
        """The relative tolerance of each bucket (the last listed value covers any further bucket)."""
        tol = np.atleast_1d(np.asarray(self.relative_tolerance, dtype=float))
        if (tol < 0).any():
            raise ValueError("monitor.relative_tolerance must be >= 0")
        return tol[np.minimum(np.asarray(bucket), tol.size - 1)]


# Requests computed at once run on the event loop's default thread pool, which asyncio sizes
# min(32, CPUs + 4): more slots than that would queue inside the pool, out of reach of the
# queue bound and of cancellation.
MAX_CONCURRENT = 32


class ServingConfig(Section):
    """How much work one server process takes on at once, what it answers when that is full,
    and how long SIGTERM gives it to drain. Changing it re-runs no stage; a restarted server
    takes it up."""

    max_concurrent: int = Field(ge=1, le=MAX_CONCURRENT)
    max_queue: int = Field(ge=0, le=10_000)
    retry_after_s: int = Field(ge=1, le=3600)
    drain_s: int = Field(ge=2, le=600)  # the last second is for writing the 503s of what is cut off
