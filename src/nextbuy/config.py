"""Typed view of params.yaml: one pydantic model per stage section.

Types and bounds only: every value lives in params.yaml (no defaults here), so
``dvc params diff`` shows every change a run would see. Each stage reads its own
section (``load_section``), so DVC's per-stage ``params:`` lists stay honest:
changing ``train.epochs`` re-runs train and what follows, never ingest.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from nextbuy.constants import WEIGHTING_METHODS

PARAMS_FILE = "params.yaml"


# A float whose finiteness a validator of its own checks (with a message naming the key).
_AnyFloat = Annotated[float, Field(allow_inf_nan=True)]


class _Section(BaseModel):
    # strict: YAML's types are taken as written (``true`` is no epoch count, ``"0.3"`` no
    # precision); an int is still a float. No infinite or NaN value is a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _number_written_as_text(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads ``1e6`` (no dot) as text: say how to write the number instead of
        refusing it as a string."""
        field = cls.model_fields.get(info.field_name or "")
        if not isinstance(value, str) or field is None or field.annotation not in (int, float):
            return value
        try:
            number = float(value)
        except ValueError:
            return value  # not a number at all: the type check names it
        written = str(int(number)) if field.annotation is int and number.is_integer() else repr(number)
        why = (
            "YAML reads an exponent without a dot (1e6) as text"
            if "e" in value.lower()
            else "quoted, it is text"
        )
        raise ValueError(f"{value!r} is not a number ({why}): write it as {written}")


# Words pandas parses relative to the clock: a run would depend on when it ran.
_CLOCK_WORDS = {"now", "today", "yesterday", "tomorrow"}


def _as_timestamp_text(value: Any, key: str) -> Any:
    """A date/time param as ISO-ish text pandas parses to a naive (UTC) timestamp.

    YAML turns an unquoted 2026-05-10 into a date: accepted and written back as text.
    Garbage, empty text, NaT, clock words and time zones are refused here, so the
    error names the key instead of surfacing as a traceback inside a stage.
    """
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    if not isinstance(value, str):
        return value  # the str annotation refuses it, naming the type
    import pandas as pd

    hint = "give a date or date-time such as '2026-05-10' or '2026-05-10T06:00:00'"
    if value.strip().lower() in _CLOCK_WORDS:
        raise ValueError(f"{key}={value!r} depends on when the run happens; {hint}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"{key}={value!r} is not a date ({err}); {hint}") from None
    if stamp is pd.NaT:
        raise ValueError(f"{key}={value!r} is not a date (empty or NaT); {hint}")
    if stamp.tzinfo is not None:
        raise ValueError(
            f"{key}={value!r} has a time zone; the pipeline's times are naive UTC: {hint} (in UTC)"
        )
    return value


class SimulatorConfig(_Section):
    """Size and behaviour of the built-in simulated store."""

    n_products: int = Field(ge=10)
    n_categories: int = Field(ge=2)
    latent_dim: int = Field(ge=2)
    product_noise: float = Field(ge=0.0)
    complements_per_category: int = Field(ge=1)
    reciprocal_share: float = Field(ge=0.0, le=1.0)
    zipf_exponent: float = Field(gt=0.0)
    n_purchases: int = Field(ge=100)
    complement_share: float = Field(ge=0.0, le=1.0)
    candidates_per_draw: int = Field(ge=1)
    n_impressions: int = Field(ge=100)
    policy_explore_share: float = Field(ge=0.0, le=1.0)
    history_days: float = Field(gt=1.0)
    base_conversion_logit: float
    affinity_scale: float = Field(ge=0.0)
    delay_median_hours: float = Field(gt=0.0)
    delay_sigma: float = Field(gt=0.0)
    delay_price_elasticity: float = Field(ge=0.0, le=3.0)
    launch_rate: float = Field(ge=0.0)
    prelaunch_purchases: Literal["move", "drop"]
    browse_click_rate: float = Field(ge=0.0, le=0.9)
    click_relevance: float = Field(ge=0.0)
    cart_if_convert: float = Field(ge=0.0, le=1.0)
    cart_if_browse: float = Field(ge=0.0, le=1.0)
    start_date: str

    @field_validator("start_date", mode="before")
    @classmethod
    def _start_date_is_a_date(cls, value: Any) -> Any:
        return _as_timestamp_text(value, "ingest.simulator.start_date")

    @model_validator(mode="after")
    def _launches_fit_the_catalogue(self) -> SimulatorConfig:
        if self.launch_rate * self.history_days > 1.0:
            raise ValueError(
                f"ingest.simulator.launch_rate * history_days must be <= 1 (at most the whole "
                f"catalogue is launched during the history), got {self.launch_rate} * "
                f"{self.history_days} = {self.launch_rate * self.history_days:g}"
            )
        return self


class SplitConfig(_Section):
    """Holdout of sessions (a source product's impressions of one day), interleaved in time."""

    calib_share: float = Field(gt=0.0, lt=1.0)
    test_share: float = Field(gt=0.0, lt=1.0)
    seed: int

    @model_validator(mode="after")
    def _train_left(self) -> SplitConfig:
        if self.calib_share + self.test_share >= 1.0:
            raise ValueError(
                f"calib_share + test_share = {self.calib_share + self.test_share:g} leaves no training data"
            )
        return self


class IngestConfig(_Section):
    source: Literal["simulated", "edge_list", "npz"]
    graph_path: str | None
    impressions_path: str | None
    seed: int
    # The data snapshot time (Airflow sets it to the run's logical date): the simulated
    # store as it stood then (one timeline: a later snapshot is the same store with more
    # days); a real log is censored here. None: the simulator's start_date +
    # history_days, or the last event of a real log.
    snapshot: str | None
    simulator: SimulatorConfig
    split: SplitConfig

    @field_validator("snapshot", mode="before")
    @classmethod
    def _snapshot_is_a_date(cls, value: Any) -> Any:
        return None if value is None else _as_timestamp_text(value, "ingest.snapshot")

    @model_validator(mode="after")
    def _real_source_needs_path(self) -> IngestConfig:
        if self.source != "simulated" and not self.graph_path:
            raise ValueError(f"ingest.source={self.source!r} needs ingest.graph_path")
        return self


class LabelDelayConfig(_Section):
    delay_family: Literal["lognormal", "weibull"]
    max_weight: float = Field(gt=0.0)
    normalise_weights: bool
    wait_days: float = Field(ge=0.0)
    seed: int


class TrainConfig(_Section):
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


class CalibrateConfig(_Section):
    n_buckets: int = Field(ge=1)
    maturity_days: float = Field(ge=0.0)
    min_bucket_size: int = Field(ge=1)


class ThresholdsConfig(_Section):
    target_precision: float = Field(gt=0.0, lt=1.0)
    # Cut points both policies choose among: None = every distinct score (exact), else a cap (quantiles).
    n_candidates: int | None = Field(ge=2)
    # Support floor: a bucket with fewer fit positives gets the single threshold; the target needs >= this TP.
    min_bucket_positives: int = Field(ge=0)
    # Folds of the out-of-fold check that keeps the per-bucket policy only where it wins (< 2: off).
    cross_fit_folds: int = Field(ge=0)
    seed: int  # fold assignment of that check


class RetrievalConfig(_Section):
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


class DeployConfig(_Section):
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


class DriftConfig(_Section):
    """Drift injected into simulated post-snapshot traffic (a drill for the monitor)."""

    kind: Literal["none", "bucket_shift"]
    # bucket_shift: the true conversion odds of pairs the current model puts in
    # this uncertainty bucket are multiplied by odds_multiplier from start_day on.
    bucket: int = Field(ge=0)
    start_day: float = Field(ge=0.0)
    odds_multiplier: float = Field(gt=0.0)


class TrafficConfig(_Section):
    """New traffic after the training snapshot, for monitoring."""

    days: int = Field(ge=1)
    impressions_per_day: int = Field(ge=10)
    seed: int
    # A real post-snapshot impressions log replaces the simulation.
    impressions_path: str | None
    drift: DriftConfig


class MonitorConfig(_Section):
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


def read_params(params_file: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file as a dict (every section)."""
    path = Path(params_file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no params file (every knob lives there)")
    return yaml.safe_load(path.read_text()) or {}


def model_of(dotted: str) -> type[_Section]:
    """The pydantic model of a section or sub-section: ``train``, ``ingest.simulator``."""
    name, *rest = dotted.split(".")
    model: Any = SECTIONS[name]
    for key in rest:
        model = model.model_fields[key].annotation
    return model


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["ingest"], **changes: Any) -> IngestConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["label_delay"], **changes: Any
) -> LabelDelayConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["train"], **changes: Any) -> TrainConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["calibrate"], **changes: Any
) -> CalibrateConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["thresholds"], **changes: Any
) -> ThresholdsConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: Literal["deploy"], **changes: Any) -> DeployConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["traffic"], **changes: Any
) -> TrafficConfig: ...


@overload
def section_config(
    params: Mapping[str, Any], dotted: Literal["monitor"], **changes: Any
) -> MonitorConfig: ...


@overload
def section_config(params: Mapping[str, Any], dotted: str, **changes: Any) -> Any: ...


def section_config(params: Mapping[str, Any], dotted: str, **changes: Any) -> Any:
    """Validate ``params[dotted]`` (every key required), with ``changes`` applied on top
    (a nested section given as a dict is merged key by key)."""
    node: Any = params
    for key in dotted.split("."):
        node = (node or {}).get(key)
    return model_of(dotted).model_validate(merge(node or {}, changes))


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` applied; nested dicts are merged, not replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = merge(out[key], value)
        out[key] = value
    return out


def with_changes(section: S, **changes: Any) -> S:
    """A validated copy of ``section`` with some fields changed (bounds checked again)."""
    return type(section).model_validate(merge(section.model_dump(), changes))


@overload
def load_section(name: Literal["ingest"], params_file: str | os.PathLike = ...) -> IngestConfig: ...


@overload
def load_section(name: Literal["label_delay"], params_file: str | os.PathLike = ...) -> LabelDelayConfig: ...


@overload
def load_section(name: Literal["train"], params_file: str | os.PathLike = ...) -> TrainConfig: ...


@overload
def load_section(name: Literal["calibrate"], params_file: str | os.PathLike = ...) -> CalibrateConfig: ...


@overload
def load_section(name: Literal["thresholds"], params_file: str | os.PathLike = ...) -> ThresholdsConfig: ...


@overload
def load_section(name: Literal["deploy"], params_file: str | os.PathLike = ...) -> DeployConfig: ...


@overload
def load_section(name: Literal["traffic"], params_file: str | os.PathLike = ...) -> TrafficConfig: ...


@overload
def load_section(name: Literal["monitor"], params_file: str | os.PathLike = ...) -> MonitorConfig: ...


@overload
def load_section(name: str, params_file: str | os.PathLike = ...) -> _Section: ...


def load_section(name: str, params_file: str | os.PathLike = PARAMS_FILE) -> _Section:
    """Read one section of the params file and validate it (every knob must be there)."""
    return section_config(read_params(params_file), name)


def flat_fields(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Dotted names of every knob the models declare (sub-sections expanded)."""
    if model is None:
        return set().union(*(flat_fields(m, name) for name, m in SECTIONS.items()))
    out: set[str] = set()
    for key, field in model.model_fields.items():
        dotted = f"{prefix}.{key}"
        sub = field.annotation
        out |= flat_fields(sub, dotted) if isinstance(sub, type) and issubclass(sub, BaseModel) else {dotted}
    return out
