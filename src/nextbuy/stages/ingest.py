"""ingest: load or simulate products, the directed co-purchase graph and
impressions; validate them; split impressions by time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy import paths
from nextbuy.config import EngineConfig, IngestConfig, load_section

if TYPE_CHECKING:
    from nextbuy.data.sources import keys as sources_keys
    from nextbuy.domain.events import Builders
    from nextbuy.engines.spark import logs as spark_logs
    from nextbuy.engines.spark.impressions import SparkImpressions
from nextbuy.data import sources
from nextbuy.data.ingest_checks import (
    assign_split,
    censored,
    check_graph_size,
    check_orders_span,
    check_splits,
    finalise,
    refuse_future_events,
)
from nextbuy.data.simulator import simulate_history, simulate_store, world_from_graph
from nextbuy.data.sources import read_event_logs
from nextbuy.domain import events, ingest_summary
from nextbuy.domain import split as session_split
from nextbuy.domain.replay import REPLAYED_NOTE
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)

# GraphSource.cleaning keys with these endings count a change to the source's rows
# (self_loops_dropped, duplicate_edges_merged, explicit_zeros_dropped); the rest are sizes.
CLEANING_CHANGE_SUFFIXES = ("_dropped", "_merged")


@dataclass(frozen=True)
class Ingested:
    products: pd.DataFrame
    edges: pd.DataFrame
    # schemas.IMPRESSIONS (with split); on Spark (raw logs read there): parquet parts to write
    impressions: pd.DataFrame | SparkImpressions
    snapshot: pd.Timestamp
    cleaning: dict[str, int] = field(default_factory=dict)
    truth_impressions: pd.DataFrame | None = None
    truth_products: pd.DataFrame | None = None
    # The source's node features, one row per product in product_id order ((n, 0): none).
    features: sp.csr_matrix | None = None
    # Exposures replayed from orders (no impression log): impression_id, slot, explored,
    # propensity (domain.replay); None when the impressions were logged or simulated.
    replay_policy: pd.DataFrame | None = None
    # The calibration split's next purchases from the orders (schemas.NEXT_PURCHASES); None
    # where ingest reads no orders (simulated, edge lists, logs built on Spark).
    next_purchases: pd.DataFrame | None = None


def held_out_purchases(
    products: pd.DataFrame, orders: pd.DataFrame, snapshot: pd.Timestamp, cfg: IngestConfig
) -> pd.DataFrame:
    """The next purchases u -> v by the snapshot (both orders) whose session (u's key, the day of u's order)
    the split puts in calib: held-out purchases calibrate judges the served ranking on."""

    purchases = events.next_purchases(orders[orders["ordered_at"] <= snapshot], cfg.events)
    purchases = purchases.drop(columns="customer")
    key = products.set_index("product_id")["product_key"].reindex(purchases["source_id"])
    split = assign_split(key.to_numpy(), purchases["ordered_at"], cfg.split)
    return purchases[split == "calib"].reset_index(drop=True)


def source_features(features: sp.spmatrix | None, n_products: int) -> sp.csr_matrix:
    """The source's features as float32 CSR, or an (n, 0) matrix when it has none (the
    simulator, edge lists), so the ingested features always exist."""
    if features is None:
        return sp.csr_matrix((n_products, 0), dtype=np.float32)
    if features.shape[0] != n_products:
        raise ValueError(f"{features.shape[0]} feature rows for {n_products} products")
    return sp.csr_matrix(features, dtype=np.float32)


def log_builders(engine: EngineConfig | None) -> Builders:
    """What builds the graph and the labels of raw logs: the pandas engine's functions, or on
    ``engine.kind: spark`` their Spark twins (``nextbuy.engines.spark.events``)."""

    if engine is None or engine.kind == "pandas":
        return events.Builders()
    # pyspark: only when engine.kind is spark
    from nextbuy.engines.spark import events as spark_events

    return spark_events.builders(engine.spark, paths.INGESTED.parent)


def ingest_events(cfg: IngestConfig, engine: EngineConfig | None = None) -> Ingested:
    """``ingest.source: events``: the store's raw logs read, then the graph and the labelled
    impressions built from them (``nextbuy.domain.events``, on ``engine``), censored at the
    snapshot."""

    ev = cfg.events
    assert ev.orders_path is not None  # IngestConfig requires it
    origin = ev.impressions_path or ev.orders_path  # replayed exposures come from the orders
    at = None if cfg.snapshot is None else pd.Timestamp(cfg.snapshot)
    gap = cfg.max_event_gap_days
    if engine is not None and engine.kind == "spark":  # the reader too on Spark
        # pyspark: only when engine.kind is spark
        from nextbuy.engines.spark import logs as spark_logs

        on_spark = spark_logs.read_and_build(cfg, engine.spark, paths.INGESTED.parent)
        if on_spark is not None:
            return ingest_built_on_spark(cfg, on_spark)
    # the pandas reader: the pandas engine, and what the Spark one leaves to it (CSV, refusals)
    logs = read_event_logs(
        ev.orders_path, ev.impressions_path, ev.interactions_path, cfg.catalogue_path, at, gap, ev
    )
    products, snapshot, cleaning = logs.products, logs.last_event if at is None else at, logs.cleaning
    check_orders_span(logs.orders, ev.graph_window_days, ev.orders_path)
    built = events.build_from_logs(
        logs.orders,
        logs.impressions,
        logs.interactions,
        len(products),
        ev,
        snapshot,
        log_builders(engine),
        None if ev.impressions_path else ev.replay,
    )
    labelled = built.impressions.sort_values(["shown_at", "impression_id"], kind="stable", ignore_index=True)
    if labelled.empty:
        shown = (
            "impression shown"
            if ev.impressions_path
            else "exposure replayed (no order line had a product ordered before it)"
        )
        raise io.DataError(origin, f"no {shown} by the snapshot ({snapshot})", column="shown_at")
    edges, impressions = finalise(products, built.edges, labelled, snapshot, cfg.split, origin)
    check_graph_size(products, edges, ev.orders_path)
    n = len(products)
    return Ingested(
        products,
        edges,
        impressions,
        snapshot,
        cleaning | built.counts,
        features=source_features(None, n),
        replay_policy=built.policy,
        next_purchases=held_out_purchases(products, logs.orders, snapshot, cfg),
    )


def ingest_built_on_spark(cfg: IngestConfig, built: spark_logs.BuiltOnSpark) -> Ingested:
    """:func:`ingest_events`' checks of logs built on Spark, the labelled impressions left there
    (``nextbuy.engines.spark.impressions``); a failed check is worded by ``finalise`` on the rows
    brought here."""
    origin = str(cfg.events.impressions_path)
    imp = built.impressions
    try:
        if imp.rows == 0:
            raise io.DataError(
                origin, f"no impression shown by the snapshot ({built.snapshot})", column="shown_at"
            )
        if imp.refused:
            labelled = imp.to_pandas().drop(columns="split")
            finalise(built.products, built.edges, labelled, built.snapshot, cfg.split, origin)
        check_splits(imp.sizes, imp.rows, origin)
        edges = censored(built.edges, built.snapshot)
        check_graph_size(built.products, edges, str(cfg.events.orders_path))
    except BaseException:
        imp.release()
        raise
    n = len(built.products)
    return Ingested(
        built.products, edges, imp, built.snapshot, built.cleaning, features=source_features(None, n)
    )


def ingest_logged(cfg: IngestConfig, graph: sources_keys.GraphSource, cleaning: dict[str, int]) -> Ingested:
    """A real graph with a real impressions log (``ingest.impressions_path``), censored at the
    snapshot (None: the log's last event)."""

    assert cfg.impressions_path is not None  # the caller's condition
    log_frame = sources.read_impressions_log(cfg.impressions_path, graph.products)
    events = ["shown_at", "clicked_at", "carted_at", "converted_at"]
    refuse_future_events(log_frame, events, str(cfg.impressions_path), pd.Timestamp.now("UTC"))
    io.rows_error(
        cfg.impressions_path,
        log_frame,
        schemas.check_isolated_times(log_frame, events, cfg.max_event_gap_days),
        f"lie more than {cfg.max_event_gap_days:g} days from the rest of the log (ingest.max_event_gap_days)",
    )
    if cfg.snapshot is None:
        snapshot = pd.Timestamp(log_frame[events].max().max())
    else:  # what the store knew at the snapshot: later impressions and events do not exist yet
        snapshot = pd.Timestamp(cfg.snapshot)
        later = log_frame["shown_at"] > snapshot
        cleaning["impressions_after_snapshot_dropped"] = int(later.sum())
        log_frame = log_frame[~later].copy()
        for col in events[1:]:
            log_frame[col] = log_frame[col].where(log_frame[col] <= snapshot)
    edges, impressions = finalise(
        graph.products, graph.edges, log_frame, snapshot, cfg.split, str(cfg.impressions_path)
    )
    check_graph_size(graph.products, edges, str(cfg.graph_path))
    return Ingested(
        graph.products,
        edges,
        impressions,
        snapshot,
        cleaning,
        features=source_features(graph.features, len(graph.products)),
    )


def read_graph(source: str, path: str, engine: EngineConfig | None) -> sources_keys.GraphSource:
    """A graph file: an edge list read, checked and cleaned on ``engine`` (on Spark:
    ``nextbuy.engines.spark.edge_list``); an ``.npz`` in this process on either engine (one
    compressed archive, which numpy reads whole in one process: what follows is a vectorised
    pass over arrays already in memory)."""

    if source == "npz":
        return sources.read_npz_graph(path)
    if engine is None or engine.kind == "pandas":
        return sources.read_edge_list(path)
    # pyspark: only when engine.kind is spark
    from nextbuy.engines.spark import edge_list as spark_edge_list

    return spark_edge_list.read_edge_list(engine.spark, paths.INGESTED.parent, path)


def ingest(cfg: IngestConfig, engine: EngineConfig | None = None) -> Ingested:
    """Build the ingested tables from the configured source (raw logs and edge lists: on
    ``engine``, default pandas; the simulator and an ``.npz`` graph are read and generated in
    this process)."""

    if cfg.source == "events":
        return ingest_events(cfg, engine)

    truth_impressions = truth_products = None
    cleaning: dict[str, int] = {}
    features = None
    simulator = cfg.simulator
    if cfg.source == "simulated":
        world, traffic = simulate_store(simulator, cfg.seed, cfg.snapshot)
        origin = "simulator"
    else:
        assert cfg.graph_path is not None  # IngestConfig requires it for a real source
        graph = read_graph(cfg.source, cfg.graph_path, engine)
        if cfg.catalogue_path:  # IngestConfig allows it with an edge list only
            graph = sources.graph_with_catalogue(graph, cfg.graph_path, cfg.catalogue_path)
        cleaning = dict(graph.cleaning)
        features = graph.features  # rows follow graph.products, which is never reordered or cut below
        origin = str(cfg.graph_path)
        world = world_from_graph(graph.products, graph.edges, simulator, cfg.seed)
        if cfg.impressions_path:
            return ingest_logged(cfg, graph, cleaning)
        # Impressions simulated on the real graph, on the world's one timeline.
        snapshot = world.snapshot if cfg.snapshot is None else pd.Timestamp(cfg.snapshot)
        traffic = simulate_history(world, simulator, cfg.seed, snapshot)
        world = replace(world, start=snapshot - pd.Timedelta(days=simulator.history_days), snapshot=snapshot)
    if cfg.source == "simulated" or not cfg.impressions_path:
        truth_impressions, truth_products = traffic.truth, world.truth_products
    edges, impressions = finalise(
        world.products, world.edges, traffic.impressions, world.snapshot, cfg.split, origin
    )
    if cfg.source != "simulated":
        check_graph_size(world.products, edges, origin)
    return Ingested(
        world.products,
        edges,
        impressions,
        world.snapshot,
        cleaning,
        truth_impressions,
        truth_products,
        source_features(features, len(world.products)),
    )


def figures(impressions: pd.DataFrame | SparkImpressions) -> ingest_summary.ImpressionFigures:
    """The impressions' figures for the metrics and the meta: counted here, or on Spark."""
    if isinstance(impressions, pd.DataFrame):
        return ingest_summary.impression_figures(impressions)
    first, last = impressions.learned_span
    return ingest_summary.ImpressionFigures(
        impressions.sizes,
        impressions.converted,
        None if first is None else pd.Timestamp(first),
        None if last is None else pd.Timestamp(last),
    )


def exposures_kind(cfg: IngestConfig, result: Ingested) -> str:
    """Where the impressions come from: ``logged`` (a store's log), ``replayed`` (from its
    orders, ``domain.replay``) or ``simulated``."""
    if result.replay_policy is not None:
        return "replayed"
    if cfg.source == "events" or cfg.impressions_path:
        return "logged"
    return "simulated"


def summarise(result: Ingested, counted: ingest_summary.ImpressionFigures, cfg: IngestConfig) -> dict:
    features = 0 if result.features is None else int(result.features.shape[1])
    extra = {
        "feature_columns": features,
        "exposures": exposures_kind(cfg, result),
        "cleaning": result.cleaning,
    }
    if result.replay_policy is not None:
        extra["exposures_note"] = REPLAYED_NOTE
    return ingest_summary.summarise(len(result.products), result.edges, counted, result.snapshot, extra)


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section(IngestConfig, params_file)
    for key, path in (
        ("ingest.graph_path", cfg.graph_path),
        ("ingest.impressions_path", cfg.impressions_path),
        ("ingest.catalogue_path", cfg.catalogue_path),
        *((f"ingest.events.{k}", v) for k, v in cfg.events.model_dump().items() if k.endswith("_path")),
    ):
        if path and cfg.source != "simulated":
            io.watched_input(path, key, paths.INPUTS)
    result = ingest(cfg, load_section(EngineConfig, params_file))
    try:
        metrics = write(cfg, result)
    finally:
        if not isinstance(result.impressions, pd.DataFrame):
            result.impressions.release()
    changed = cleaning_changes(result.cleaning)
    if changed:
        log.warning(
            "ingest cleaned %s: %s (counted in metrics/ingest.json, cleaning)",
            "the raw logs of ingest.events" if cfg.source == "events" else cfg.graph_path,
            ", ".join(f"{key}={n}" for key, n in changed.items()),
        )
    return metrics


def write(cfg: IngestConfig, result: Ingested) -> dict:
    """The stage's outputs (every table checked before any is written; impressions kept on Spark
    streamed into their one file first) and its metrics."""
    counted = figures(result.impressions)
    metrics = summarise(result, counted, cfg)
    tables = [(result.products, paths.PRODUCTS, schemas.PRODUCTS), (result.edges, paths.EDGES, schemas.EDGES)]
    if isinstance(result.impressions, pd.DataFrame):
        tables.append((result.impressions, paths.IMPRESSIONS, schemas.IMPRESSIONS))
    else:
        for frame, path, schema in tables:
            io.validate(frame.reset_index(drop=True), schema, path)
        result.impressions.write(paths.IMPRESSIONS)
    if result.truth_impressions is not None:
        tables += [
            (result.truth_impressions, paths.TRUTH_IMPRESSIONS, schemas.TRUTH_IMPRESSIONS),
            (result.truth_products, paths.TRUTH_PRODUCTS, schemas.TRUTH_PRODUCTS),
        ]
    if result.replay_policy is not None:  # replayed exposures' slots and propensities
        tables.append((result.replay_policy, paths.REPLAY_POLICY, schemas.REPLAY_POLICY))
    if result.next_purchases is not None:
        tables.append((result.next_purchases, paths.NEXT_PURCHASES, schemas.NEXT_PURCHASES))
    io.write_tables(tables)
    if result.next_purchases is None:  # no orders read: an empty table, no stale one
        io.write_empty_table(paths.NEXT_PURCHASES, schemas.NEXT_PURCHASES)
    if result.replay_policy is None:  # logged or simulated: an empty table, no stale one
        io.write_empty_table(paths.REPLAY_POLICY, schemas.REPLAY_POLICY)
    if result.truth_impressions is None:
        # A real log has no ground truth, but dvc.yaml declares data/truth as an out: empty,
        # typed tables keep it defined (no "empty output" from DVC) and replace a simulated
        # run's stale truth; a reader through io.read_table is told the table is empty.
        io.write_empty_table(paths.TRUTH_IMPRESSIONS, schemas.TRUTH_IMPRESSIONS)
        io.write_empty_table(paths.TRUTH_PRODUCTS, schemas.TRUTH_PRODUCTS)
    io.write_sparse(source_features(result.features, len(result.products)), paths.FEATURES)
    # What the models trained on this data learned from: a later release gate tests its
    # rows against it (deploy records it on the registered version).
    learned = session_split.span_record(
        counted.first_learned, counted.last_learned, result.snapshot, cfg.split.model_dump()
    )
    # What later stages read, and nothing else: a count of what the reader cleaned (in
    # metrics/ingest.json) changing here would re-run every stage downstream.
    io.write_json(
        {
            "snapshot": str(result.snapshot),
            "source": cfg.source,
            "exposures": exposures_kind(cfg, result),
            # a store's raw logs attribute conversions within this window: none is seen later
            "attribution_days": cfg.events.attribution_days if cfg.source == "events" else None,
            "training_data": learned,
        },
        paths.INGEST_META,
    )
    io.write_csv(
        ingest_summary.degree_ccdf(result.edges, len(result.products)),
        paths.plots_dir("ingest") / "degree_ccdf.csv",
    )
    io.write_json(metrics, paths.metrics_file("ingest"))
    return metrics


def cleaning_changes(cleaning: dict[str, int]) -> dict[str, int]:
    """The entries of a source's ``cleaning`` counts that record a change to the data
    (rows dropped or merged), where nonzero. The others (``rows_read``, ``edges_kept``,
    ``products``) are sizes: a clean source has them too and is not worth a warning."""
    return {key: n for key, n in cleaning.items() if key.endswith(CLEANING_CHANGE_SUFFIXES) and n}
