"""The ``ingest`` section of params.yaml: the data source, the built-in simulated store and
the holdout split."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from nextbuy.config.base import Section, _as_timestamp_text


class SimulatorConfig(Section):
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


class SplitConfig(Section):
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


ORDER_FIELDS = ("customer", "product", "ordered_at", "quantity", "price", "order")
REQUIRED_ORDER_FIELDS = ("customer", "product", "ordered_at")


class ReplayConfig(Section):
    """Exposures replayed from a store's orders when it logs no impressions
    (``nextbuy.domain.replay``)."""

    shown_per_order: int = Field(ge=1, le=100)
    explore_share: float = Field(ge=0.0, le=1.0)
    policy_refresh_days: float = Field(gt=0.0)
    order_line_share: float = Field(gt=0.0, le=1.0)
    seed: int


class EventsConfig(Section):
    """``ingest.source: events``: a store's raw logs, and the rules that turn them into the
    directed graph and the impressions' labels (``nextbuy.domain.events``)."""

    orders_path: str | None
    # field -> the export's column name (customer, product, ordered_at required; quantity,
    # price, order optional: null = the export has none)
    orders_columns: dict[str, str | None]
    missing_customer: Literal["refuse", "drop"]
    cancellation_prefix: str | None
    drop_cancelled_lines: bool
    unlisted_products: Literal["refuse", "keep"]
    non_product_pattern: str | None
    impressions_path: str | None
    interactions_path: str | None
    graph_window_days: float = Field(gt=0.0)
    graph_lookback_orders: int = Field(ge=1, le=50)
    attribution_days: float = Field(gt=0.0)
    replay: ReplayConfig

    @field_validator("orders_columns")
    @classmethod
    def _known_order_fields(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(value) - set(ORDER_FIELDS))
        if unknown:
            raise ValueError(
                f"ingest.events.orders_columns: unknown field(s) {', '.join(unknown)} "
                f"(the fields are {', '.join(ORDER_FIELDS)})"
            )
        missing = [f for f in REQUIRED_ORDER_FIELDS if not value.get(f)]
        if missing:
            raise ValueError(f"ingest.events.orders_columns must name the column of {', '.join(missing)}")
        named = [c for c in value.values() if c]
        if len(set(named)) != len(named):
            raise ValueError("ingest.events.orders_columns names one column for two fields")
        return value

    @field_validator("non_product_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(
                    f"ingest.events.non_product_pattern {value!r} is no regular expression: {err}"
                ) from None
        return value

    @model_validator(mode="after")
    def _cancellations_need_an_order_column(self) -> EventsConfig:
        if self.cancellation_prefix and not self.orders_columns.get("order"):
            raise ValueError(
                "ingest.events.cancellation_prefix marks cancellations by their order id: "
                "name that column in ingest.events.orders_columns.order"
            )
        return self


class IngestConfig(Section):
    source: Literal["simulated", "edge_list", "npz", "events"]
    graph_path: str | None
    impressions_path: str | None
    catalogue_path: str | None
    seed: int
    # The data snapshot time (Airflow sets it to the run's logical date): the simulated
    # store as it stood then (one timeline: a later snapshot is the same store with more
    # days); a real log is censored here. None: the simulator's start_date +
    # history_days, or the last event of a real log.
    snapshot: str | None
    # A real log's events cut off from the rest of it by a longer gap are refused (a mistyped
    # year would otherwise move a snapshot taken from the log's last event).
    max_event_gap_days: float = Field(gt=0)
    simulator: SimulatorConfig
    events: EventsConfig
    split: SplitConfig

    @field_validator("snapshot", mode="before")
    @classmethod
    def _snapshot_is_a_date(cls, value: Any) -> Any:
        return None if value is None else _as_timestamp_text(value, "ingest.snapshot")

    @model_validator(mode="after")
    def _real_source_needs_path(self) -> IngestConfig:
        if self.source in ("edge_list", "npz") and not self.graph_path:
            raise ValueError(f"ingest.source={self.source!r} needs ingest.graph_path")
        if self.source == "events":
            if not self.events.orders_path:
                raise ValueError("ingest.source='events' needs ingest.events.orders_path")
            if self.graph_path or self.impressions_path:
                raise ValueError(
                    "ingest.source='events' builds the graph and the impressions from the logs "
                    "named in ingest.events: leave ingest.graph_path and ingest.impressions_path null"
                )
        if self.catalogue_path and self.source not in ("edge_list", "events"):
            raise ValueError(
                f"ingest.catalogue_path is read with ingest.source edge_list or events, not {self.source!r} "
                "(the simulated store has its own catalogue; an npz's products are its rows)"
            )
        return self
