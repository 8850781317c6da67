"""traffic: the days of traffic after the training snapshot that monitoring
watches — simulated from the same store (with an optional injected drift), or
read from a real post-snapshot impressions log.

It simulates *more of the same store*, so besides its own section it reads
``ingest.simulator`` and ``ingest.seed`` (declared in dvc.yaml).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import DriftConfig, IngestConfig, TrafficConfig, load_section
from nextbuy.domain.timeunits import DAY
from nextbuy.mlops import io, schemas


def bucket_drift(moments, calibration, drift: DriftConfig, drift_start: pd.Timestamp):
    """Odds multiplier for pairs the given model puts in ``drift.bucket`` from ``drift_start`` on."""
    from nextbuy.domain.graph.scoring import score_and_uncertainty
    from nextbuy.domain.uncertainty import assign_buckets

    def multiplier(source: np.ndarray, shown: np.ndarray, shown_ns: np.ndarray) -> np.ndarray:
        _, uncertainty = score_and_uncertainty(moments, source, shown)
        hit = (assign_buckets(uncertainty, calibration.edges) == drift.bucket) & (
            shown_ns >= drift_start.value
        )
        return np.where(hit, drift.odds_multiplier, 1.0)

    return multiplier


def simulate(world, ingest_cfg: IngestConfig, cfg: TrafficConfig, multiplier=None):
    """Pure core: ``cfg.days`` of traffic starting at the snapshot, observed at the end ("now")."""
    from nextbuy.data.simulate import Window, simulate_traffic

    start = world.snapshot
    now = start + cfg.days * DAY
    traffic = simulate_traffic(
        world,
        ingest_cfg.simulator,
        cfg.seed,
        cfg.days * cfg.impressions_per_day,
        Window(start, now, now),
        id_offset=10**12,
        odds_multiplier=multiplier,
    )
    return traffic, start, now


def load_world(ingest_cfg: IngestConfig):
    from nextbuy.data.simulate import store_world

    if not paths.TRUTH_PRODUCTS.exists():
        raise io.DataError(
            paths.TRUTH_PRODUCTS,
            "no simulated store to draw traffic from (real impressions log "
            "ingested); set traffic.impressions_path to a post-snapshot log",
        )
    return store_world(
        io.read_table(paths.PRODUCTS, schemas.PRODUCTS),
        io.read_table(paths.TRUTH_PRODUCTS, schemas.TRUTH_PRODUCTS),
        io.read_table(paths.EDGES, schemas.EDGES),
        pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"]),
        ingest_cfg.simulator.history_days,
    )


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section("traffic", params_file)
    drift_start = None
    if cfg.impressions_path:
        from nextbuy.data.sources import read_impressions_log

        io.watched_input(cfg.impressions_path, "traffic.impressions_path", paths.INPUTS)
        products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
        impressions = read_impressions_log(cfg.impressions_path, products)
        start = impressions["shown_at"].min()
        now = pd.Timestamp(impressions[["shown_at", "clicked_at", "carted_at", "converted_at"]].max().max())
        truth = None
    else:
        ingest_cfg = load_section("ingest", params_file)
        world = load_world(ingest_cfg)
        multiplier = None
        if cfg.drift.kind == "bucket_shift":
            from nextbuy.domain.uncertainty import BucketCalibration

            drift_start = world.snapshot + cfg.drift.start_day * DAY
            multiplier = bucket_drift(
                schemas.read_moments(paths.GNN_MOMENTS),
                BucketCalibration.from_dict(io.read_json(paths.CALIBRATION_MODEL)),
                cfg.drift,
                drift_start,
            )
        traffic, start, now = simulate(world, ingest_cfg, cfg, multiplier)
        impressions, truth = traffic.impressions, traffic.truth
    tables = [(impressions, paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)]
    if truth is not None:
        tables.append((truth, paths.TRAFFIC_TRUTH_IMPRESSIONS, schemas.TRUTH_IMPRESSIONS))
    io.write_tables(tables)
    if truth is None:
        # A real log has no ground truth, but dvc.yaml declares data/traffic_truth as an
        # out: DVC fails a stage whose out is missing. An empty, typed truth table keeps
        # the out defined (and replaces a simulated run's stale truth); evaluation code
        # reading it through io.read_table is told the table is empty.
        io.write_empty_table(paths.TRAFFIC_TRUTH_IMPRESSIONS, schemas.TRUTH_IMPRESSIONS)
    meta = {
        "start": str(start),
        "now": str(now),
        "drift": cfg.drift.model_dump() if not cfg.impressions_path else None,
        "drift_start": str(drift_start) if drift_start is not None else None,
    }
    io.write_json(meta, paths.TRAFFIC_META)
    metrics = {
        "impressions": len(impressions),
        "days": float((now - start) / DAY),
        "observed_positivity": float(impressions["converted_at"].notna().mean()),
        **meta,
    }
    io.write_json(metrics, paths.metrics_file("traffic"))
    return metrics
