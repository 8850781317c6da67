"""Typed view of params.yaml: one pydantic model per stage section.

Each stage reads only its own section (``load_section``), so DVC's per-stage
``params:`` lists stay honest: changing ``train.epochs`` re-runs train and what
follows, never ingest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

PARAMS_FILE = "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatorConfig(_Section):
    """Size and behaviour of the built-in simulated store."""

    n_products: int = Field(5000, ge=10)
    n_categories: int = Field(40, ge=2)
    latent_dim: int = Field(8, ge=2)
    complements_per_category: int = Field(3, ge=1)
    reciprocal_share: float = Field(0.15, ge=0.0, le=1.0)
    zipf_exponent: float = Field(1.1, gt=0.0)
    n_purchases: int = Field(120_000, ge=100)
    complement_share: float = Field(0.8, ge=0.0, le=1.0)
    candidates_per_draw: int = Field(8, ge=1)
    n_impressions: int = Field(150_000, ge=100)
    policy_explore_share: float = Field(0.3, ge=0.0, le=1.0)
    history_days: float = Field(56.0, gt=1.0)
    base_conversion_logit: float = -3.0
    affinity_scale: float = Field(1.5, ge=0.0)
    delay_median_hours: float = Field(30.0, gt=0.0)
    delay_sigma: float = Field(1.3, gt=0.0)
    start_date: str = "2026-01-01"


class SplitConfig(_Section):
    """Time split of impressions by shown_at, counted back from the snapshot."""

    calib_days: float = Field(14.0, gt=0.0)
    test_days: float = Field(7.0, gt=0.0)


class IngestConfig(_Section):
    source: Literal["simulated", "edge_list", "npz"] = "simulated"
    graph_path: str | None = None
    impressions_path: str | None = None
    seed: int = 7
    # The data snapshot time (Airflow sets it to the run's logical date): a simulated
    # store's history ends here; a real log is censored here. None: the simulator's
    # start_date + history_days, or the last event of a real log.
    snapshot: str | None = None
    simulator: SimulatorConfig = SimulatorConfig()
    split: SplitConfig = SplitConfig()

    def simulator_for_snapshot(self) -> SimulatorConfig:
        """The simulator settings whose history ends at ``snapshot``."""
        if self.snapshot is None:
            return self.simulator
        import pandas as pd

        start = pd.Timestamp(self.snapshot) - pd.Timedelta(days=self.simulator.history_days)
        return self.simulator.model_copy(update={"start_date": str(start)})

    @model_validator(mode="after")
    def _real_source_needs_path(self) -> "IngestConfig":
        if self.source != "simulated" and not self.graph_path:
            raise ValueError(f"ingest.source={self.source!r} needs ingest.graph_path")
        return self


class LabelDelayConfig(_Section):
    delay_family: Literal["lognormal", "weibull"] = "lognormal"
    max_weight: float = Field(10.0, gt=0.0)
    seed: int = 0


class TrainConfig(_Section):
    embedding_dim: int = Field(32, ge=4)
    hidden_dim: int = Field(64, ge=4)
    fanout_max: int = Field(20, ge=1)
    fanout_min: int = Field(4, ge=1)
    two_hop_degree: int = Field(5, ge=0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(2048, ge=16)
    lr: float = Field(0.01, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    link_loss_weight: float = Field(1.0, ge=0.0)
    reverse_negative_share: float = Field(0.5, ge=0.0, le=1.0)
    weighting: Literal["importance", "naive"] = "importance"
    mc_samples: int = Field(8, ge=2)
    cold_start_fallback: bool = True  # nodes with no neighbours in a direction sample neighbours of same-category products
    export_chunk: int = Field(8192, ge=1)  # nodes per chunk in export_moments (memory bound)
    # Gate drill: train on permuted labels; the deploy gate must refuse the result.
    shuffle_labels: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _fanout_order(self) -> "TrainConfig":
        if self.fanout_min > self.fanout_max:
            raise ValueError("train.fanout_min must be <= train.fanout_max")
        return self


class CalibrateConfig(_Section):
    n_buckets: int = Field(3, ge=1)
    maturity_days: float = Field(7.0, ge=0.0)
    min_bucket_size: int = Field(50, ge=1)


class ThresholdsConfig(_Section):
    target_precision: float = Field(0.3, gt=0.0, lt=1.0)
    n_candidates: int = Field(200, ge=2)


class DeployConfig(_Section):
    """The release gate: absolute floors, then non-inferiority against the champion."""

    model_name: str = "nextbuy"
    # Floors on the fresh evaluation data (test split, delay-corrected labels).
    min_recall: float = Field(0.0, ge=0.0, le=1.0)
    min_precision: float = Field(0.0, ge=0.0, le=1.0)
    min_auc: float = Field(0.5, ge=0.0, le=1.0)
    max_calibration_error: float = Field(0.2, ge=0.0)
    # Candidate passes against the champion when the lower bound of the paired
    # bootstrap CI of (candidate - champion) is above -tolerance, per metric.
    compare_metrics: tuple[Literal["auc", "recall"], ...] = ("auc", "recall")
    tolerance: float = Field(0.02, ge=0.0)
    bootstrap_samples: int = Field(300, ge=20)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0


class DriftConfig(_Section):
    """Drift injected into simulated post-snapshot traffic (a drill for the monitor)."""

    kind: Literal["none", "bucket_shift"] = "none"
    # bucket_shift: the true conversion odds of pairs the current model puts in
    # this uncertainty bucket are multiplied by odds_multiplier from start_day on.
    bucket: int = Field(2, ge=0)
    start_day: float = Field(10.0, ge=0.0)
    odds_multiplier: float = Field(0.4, gt=0.0)


class TrafficConfig(_Section):
    """New traffic after the training snapshot, for monitoring."""

    days: int = Field(28, ge=1)
    impressions_per_day: int = Field(3000, ge=10)
    seed: int = 101
    # A real post-snapshot impressions log replaces the simulation.
    impressions_path: str | None = None
    drift: DriftConfig = DriftConfig()


class MonitorConfig(_Section):
    model_name: str = "nextbuy"
    window_days: float = Field(1.0, gt=0.0)
    # Observed positivity counts only windows' rows at least this old at "now".
    maturity_days: float = Field(7.0, ge=0.0)
    # Alert when the CI of delay-corrected positivity lies outside predicted * (1 +- tolerance);
    # one number for every bucket, or a list with one per bucket (least uncertain first).
    relative_tolerance: float | list[float] = 0.3
    min_volume: int = Field(300, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    workspace: str = "monitoring/workspace"
    project: str = "nextbuy on-call"
    dashboard: str = "monitoring/dashboard.yaml"

    def tolerance(self, bucket: np.ndarray) -> np.ndarray:
        """The relative tolerance of each bucket (the last listed value covers any further bucket)."""
        tol = np.atleast_1d(np.asarray(self.relative_tolerance, dtype=float))
        if (tol < 0).any():
            raise ValueError("monitor.relative_tolerance must be >= 0")
        return tol[np.minimum(np.asarray(bucket), tol.size - 1)]


SECTIONS: dict[str, type[_Section]] = {
    "ingest": IngestConfig,
    "label_delay": LabelDelayConfig,
    "train": TrainConfig,
    "calibrate": CalibrateConfig,
    "thresholds": ThresholdsConfig,
    "deploy": DeployConfig,
    "traffic": TrafficConfig,
    "monitor": MonitorConfig,
}

S = TypeVar("S", bound=_Section)


def load_section(name: str, params_file: str | os.PathLike = PARAMS_FILE) -> _Section:
    """Read one section of params.yaml and validate it (missing keys take defaults)."""
    path = Path(params_file)
    raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    section = (raw or {}).get(name) or {}
    return SECTIONS[name].model_validate(section)
