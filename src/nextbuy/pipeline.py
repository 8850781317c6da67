"""The stage cores chained in memory — no files, no MLflow — for benchmarks and
tests that need a trained model on a simulated store (``run_in_memory``) and
monitored traffic after its snapshot (``watch_traffic``). `dvc repro` runs the
same cores through the stage modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy.config import (
    CalibrateConfig,
    IngestConfig,
    LabelDelayConfig,
    MonitorConfig,
    RetrievalConfig,
    ThresholdsConfig,
    TrafficConfig,
    TrainConfig,
    section_config,
)
from nextbuy.data.simulator import StoreWorld, store_world
from nextbuy.domain import delay
from nextbuy.domain.timeunits import DAY
from nextbuy.stages import calibrate, ingest, label_delay, monitor, thresholds, traffic, train

if TYPE_CHECKING:
    from nextbuy.serving import ServingBundle


@dataclass(frozen=True)
class InMemoryRun:
    world: StoreWorld
    ingest_config: IngestConfig
    ingested: ingest.Ingested
    weighted: pd.DataFrame
    delay_model: delay.DelayModel
    bundle: ServingBundle


def run_in_memory(params: dict, progress: bool = False) -> InMemoryRun:
    """ingest -> label_delay -> train -> calibrate -> thresholds on a simulated store."""
    # MLflow and faiss: imported where a bundle is built
    from nextbuy.serving import ServingBundle

    ingest_cfg = section_config(params, IngestConfig)
    if ingest_cfg.source != "simulated":
        raise ValueError("run_in_memory needs the simulated store")
    data = ingest.ingest(ingest_cfg)
    world = store_world(
        data.products, data.truth_products, data.edges, data.snapshot, ingest_cfg.simulator.history_days
    )
    weighted, delay_models = label_delay.weigh(
        data.impressions, data.snapshot, section_config(params, LabelDelayConfig), data.products, data.edges
    )
    delay_model = delay_models["importance"]
    graph = train.build_graph(data.products, data.edges, data.features)
    _, moments, _ = train.fit(
        graph,
        weighted,
        section_config(params, TrainConfig),
        delay_family=delay_model.family,
        delay_horizon_days=delay_model.horizon_days,
        progress=progress,
    )
    assert moments is not None  # a single process exports (only other ranks get None)
    scored, calibration = calibrate.score_holdout(weighted, moments, section_config(params, CalibrateConfig))
    n_buckets = len(calibration.edges) + 1
    per_bucket, _ = thresholds.fit(scored, n_buckets, section_config(params, ThresholdsConfig))
    retrieval = section_config(params, RetrievalConfig)
    bundle = ServingBundle.from_arrays(moments, calibration, per_bucket, retrieval)
    return InMemoryRun(world, ingest_cfg, data, weighted, delay_model, bundle)


def _moments_without_prior(bundle: ServingBundle) -> dict[str, np.ndarray]:
    """The bundle's moments as the train stage writes them (serving appends a prior row)."""
    m = dict(bundle.moments)
    for key in ("s_mean", "s_var", "t_mean", "t_var"):
        m[key] = m[key][:-1]
    return m


def watch_traffic(
    trained: InMemoryRun, traffic_cfg: TrafficConfig, monitor_cfg: MonitorConfig
) -> tuple[pd.DataFrame, list[dict]]:
    """traffic -> monitor on a trained in-memory run: simulate ``traffic_cfg`` after the
    snapshot (with its drift drill, judged by the trained model's buckets) and watch it
    with the trained bundle as champion. Returns the per-window, per-bucket table and
    the alerts, as the monitor stage computes them."""
    multiplier = None
    if traffic_cfg.drift.kind == "bucket_shift":
        drift_start = trained.world.snapshot + traffic_cfg.drift.start_day * DAY
        multiplier = traffic.bucket_drift(
            _moments_without_prior(trained.bundle), trained.bundle.calibration, traffic_cfg.drift, drift_start
        )
    simulated, start, now = traffic.simulate(trained.world, trained.ingest_config, traffic_cfg, multiplier)
    rows = monitor.score_rows(
        trained.bundle,
        simulated.impressions,
        trained.ingested.products,
        trained.ingested.edges,
        trained.delay_model,
        now,
    )
    return monitor.watch(rows, start, monitor_cfg)
