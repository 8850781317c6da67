"""The stage cores chained in memory — no files, no MLflow — for benchmarks and
tests that need a trained model on a simulated store. `dvc repro` runs the
same cores through the stage modules."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nextbuy.domain import delay
from nextbuy.config import SECTIONS
from nextbuy.data.simulate import StoreWorld
from nextbuy.stages import calibrate, ingest, label_delay, thresholds, train


@dataclass(frozen=True)
class InMemoryRun:
    world: StoreWorld
    config: dict  # validated sections by name
    ingested: ingest.Ingested
    weighted: pd.DataFrame
    delay_model: delay.DelayModel
    bundle: object  # serving.ServingBundle


def run_in_memory(params: dict, progress: bool = False) -> InMemoryRun:
    """ingest -> label_delay -> train -> calibrate -> thresholds on a simulated store."""
    from nextbuy.data.simulate import simulate_world
    from nextbuy.mlops.serving import ServingBundle

    cfg = {name: model.model_validate(params.get(name) or {}) for name, model in SECTIONS.items()}
    if cfg["ingest"].source != "simulated":
        raise ValueError("run_in_memory needs the simulated store")
    data = ingest.ingest(cfg["ingest"])
    world = simulate_world(cfg["ingest"].simulator_for_snapshot(), cfg["ingest"].seed)
    weighted, delay_model = label_delay.weigh(data.impressions, data.snapshot, cfg["label_delay"])
    _, moments, _ = train.fit(data.products, data.edges, weighted, cfg["train"], progress=progress)
    scored, calibration = calibrate.score_holdout(weighted, moments, cfg["calibrate"])
    per_bucket, _ = thresholds.fit(scored, len(calibration.edges) + 1, cfg["thresholds"])
    bundle = ServingBundle.from_arrays(moments, calibration, per_bucket)
    return InMemoryRun(world, cfg, data, weighted, delay_model, bundle)
