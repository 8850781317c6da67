"""traffic: the days of traffic after the training snapshot that monitoring
watches — simulated from the same store (with an optional injected drift), or
read from a real log: ``traffic.impressions_path``, else the part after the snapshot of the
log ingest read (``ingest.impressions_path``, or the raw logs of ``ingest.source: events``,
labelled by the same attribution rules, observed at the logs' end).

It simulates *more of the same store*, so besides its own section it reads
``ingest.simulator`` and ``ingest.seed``, and for a real log ``ingest.source``,
``ingest.impressions_path`` and ``ingest.events`` (declared in dvc.yaml).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import DriftConfig, EngineConfig, IngestConfig, TrafficConfig, load_section
from nextbuy.data.simulator import Window, simulate_traffic, store_world
from nextbuy.data.sources import read_event_logs, read_impressions_log
from nextbuy.domain import events
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.timeunits import DAY
from nextbuy.domain.uncertainty import BucketCalibration, assign_buckets
from nextbuy.mlops import io, schemas

if TYPE_CHECKING:
    from nextbuy.data.simulator import StoreWorld, Traffic
    from nextbuy.domain.uncertainty import BucketCalibration

log = logging.getLogger(__name__)


def bucket_drift(
    moments: Mapping[str, np.ndarray],
    calibration: BucketCalibration,
    drift: DriftConfig,
    drift_start: pd.Timestamp,
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Odds multiplier for pairs the given model puts in ``drift.bucket`` from ``drift_start`` on."""

    def multiplier(source: np.ndarray, shown: np.ndarray, shown_ns: np.ndarray) -> np.ndarray:
        _, uncertainty = score_and_uncertainty(moments, source, shown)
        hit = (assign_buckets(uncertainty, calibration.edges) == drift.bucket) & (
            shown_ns >= drift_start.value
        )
        return np.where(hit, drift.odds_multiplier, 1.0)

    return multiplier


def simulate(
    world: StoreWorld,
    ingest_cfg: IngestConfig,
    cfg: TrafficConfig,
    multiplier: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[Traffic, pd.Timestamp, pd.Timestamp]:
    """Pure core: ``cfg.days`` of traffic starting at the snapshot, observed at the end ("now")."""

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


EVENTS = ["shown_at", "clicked_at", "carted_at", "converted_at"]


def _nothing_after(path: str | None, snapshot: pd.Timestamp, last: pd.Timestamp) -> io.DataError:
    return io.DataError(
        str(path),
        f"no impression after the snapshot {snapshot} to monitor (the log ends {last}): set "
        "ingest.snapshot before the log's end, or traffic.impressions_path to a post-snapshot log",
        column="shown_at",
    )


def attribution(engine: EngineConfig | None) -> Callable[..., pd.DataFrame]:
    """``events.attribute``, or on ``engine.kind: spark`` its Spark twin
    (``nextbuy.engines.spark.events``)."""

    if engine is None or engine.kind == "pandas":
        return events.attribute
    # pyspark: only when engine.kind is spark
    from nextbuy.engines.spark import events as spark_events

    return spark_events.builders(engine.spark, paths.TRAFFIC.parent).attribute


def logged_after_snapshot(
    ingest_cfg: IngestConfig, engine: EngineConfig | None = None
) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp, int]:
    """The impressions after the ingested snapshot in the log ingest read, labelled as ingest
    labels (on ``engine``), observed at the log's end; and how many were dropped for showing or
    recommending a product the ingested catalogue lacks (no model can score it)."""

    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    snapshot = pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"])
    if ingest_cfg.source != "events":
        assert ingest_cfg.impressions_path is not None  # the caller's condition
        logged = read_impressions_log(ingest_cfg.impressions_path, products)
        after = logged[logged["shown_at"] > snapshot].reset_index(drop=True)
        if after.empty:
            raise _nothing_after(ingest_cfg.impressions_path, snapshot, logged["shown_at"].max())
        return after, snapshot, pd.Timestamp(logged[EVENTS].max().max()), 0
    ev = ingest_cfg.events
    assert ev.orders_path is not None  # IngestConfig requires it with ingest.source: events
    origin = ev.impressions_path or ev.orders_path
    logs = read_event_logs(
        ev.orders_path,
        ev.impressions_path,
        ev.interactions_path,
        ingest_cfg.catalogue_path,
        None,
        ingest_cfg.max_event_gap_days,
        ev,
    )
    logged = logs.impressions
    if not ev.impressions_path:
        # The policy replayed over every order line, as ingest replays those up to the
        # snapshot (the same exposures and ids there), refreshing as the store's days go on.
        logged = events.replayed_exposures(logs.orders, len(logs.products), ev, ev.replay).impressions
    to_ingested = pd.Index(products["product_key"]).get_indexer(logs.products["product_key"])
    imp = logged.assign(source_id=to_ingested[logged["source_id"]])
    imp = imp.assign(shown_id=to_ingested[imp["shown_id"]])[imp["shown_at"] > snapshot]
    unknown = (imp["source_id"] < 0) | (imp["shown_id"] < 0)
    if (~unknown).sum() == 0:
        raise _nothing_after(origin, snapshot, logged["shown_at"].max())
    orders = logs.orders.assign(product=to_ingested[logs.orders["product"]])
    inter = logs.interactions.assign(product=to_ingested[logs.interactions["product"]])
    labelled = attribution(engine)(
        imp[~unknown],
        orders[orders["product"] >= 0],
        inter[inter["product"] >= 0],
        len(products),
        round(ev.attribution_days * events.NS_PER_DAY),
    )
    labelled = labelled.sort_values(["shown_at", "impression_id"], ignore_index=True)
    return labelled, snapshot, logs.last_event, int(unknown.sum())


def read_traffic_log(path: str) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """``traffic.impressions_path``: a post-snapshot impressions log on the ingested products,
    from its first impression to its last event."""

    io.watched_input(path, "traffic.impressions_path", paths.INPUTS)
    impressions = read_impressions_log(path, io.read_table(paths.PRODUCTS, schemas.PRODUCTS))
    return impressions, impressions["shown_at"].min(), pd.Timestamp(impressions[EVENTS].max().max())


def load_world(ingest_cfg: IngestConfig) -> StoreWorld:

    if not paths.TRUTH_PRODUCTS.exists() or io.read_frame(paths.TRUTH_PRODUCTS).empty:
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
    cfg = load_section(TrafficConfig, params_file)
    drift_start = None
    unknown = 0
    if cfg.impressions_path:
        impressions, start, now = read_traffic_log(cfg.impressions_path)
        truth = None
    elif (ingest_cfg := load_section(IngestConfig, params_file)).source == "events" or (
        ingest_cfg.source != "simulated" and ingest_cfg.impressions_path
    ):
        impressions, start, now, unknown = logged_after_snapshot(
            ingest_cfg, load_section(EngineConfig, params_file)
        )
        truth = None
        if unknown:
            log.warning(
                "traffic: dropped %d impression(s) of products the ingested catalogue lacks "
                "(counted in metrics/traffic.json)",
                unknown,
            )
    else:
        world = load_world(ingest_cfg)
        multiplier = None
        if cfg.drift.kind == "bucket_shift":
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
        "drift": cfg.drift.model_dump() if truth is not None else None,
        "drift_start": str(drift_start) if drift_start is not None else None,
    }
    io.write_json(meta, paths.TRAFFIC_META)
    metrics = {
        "impressions": len(impressions),
        "days": float((now - start) / DAY),
        "observed_positivity": float(impressions["converted_at"].notna().mean()),
        "unknown_product_impressions_dropped": unknown,
        **meta,
    }
    io.write_json(metrics, paths.metrics_file("traffic"))
    return metrics
