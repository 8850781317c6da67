"""monitor: score the new traffic with the champion; per window and uncertainty
bucket compare predicted positivity with observed (matured) and delay-corrected
estimated positivity; write alerts; fill the Evidently on-call dashboard.

Only a champion of this store's catalogue watches its traffic (``nextbuy.domain.catalogue``:
the tag ``catalogue`` deploy records on every version vs the ingested products; products
added since the champion was trained are fine, it serves them as cold). One of
another catalogue (or one recording none) stops the stage with a DataError (exit 2) naming
the model, its version and both catalogues: a model of another catalogue scores ids that
mean other products, and every window would alert for nothing.

No champion released for ``deploy.model_name`` yet (the gate refused every candidate so far)
is a state of the store, not bad input: the stage succeeds, monitoring nothing. It writes every
output dvc.yaml declares, saying so: an empty windows table and plot file, no alerts, and
metrics (and alerts.json) with ``monitored: false`` and the ``reason``; nothing is scored and
nothing is published to Evidently.

Then, champion or not, the recent versions of this store's catalogue are re-scored on the
traffic whose labels have since matured and their model cards get dated rows
(``nextbuy.model_card``, on the engine of ``engine.kind``); metrics/monitor.json and
alerts.json list them under ``matured`` (alerts.json: those below the gate's floors)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy import model_card, paths
from nextbuy.config import DeployConfig, EngineConfig, MonitorConfig, load_section
from nextbuy.domain import catalogue, delay, positivity, traffic_rows
from nextbuy.domain.delay import PairContext
from nextbuy.domain.timeunits import DAY
from nextbuy.mlops import io, schemas

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nextbuy.model_card.maturity import Measurer
    from nextbuy.serving import ServingBundle

log = logging.getLogger(__name__)
# positivity.csv: the plot data of the windows table (dvc.yaml's top-level plots draw it)
PLOT_COLUMNS = ["window", "bucket", "predicted", "observed", "naive", "estimated"]


def score_rows(
    bundle: ServingBundle,
    impressions: pd.DataFrame,
    products: pd.DataFrame,
    edges: pd.DataFrame,
    delay_model: delay.DelayModel,
    now: pd.Timestamp,
    label: np.ndarray | None = None,
) -> pd.DataFrame:
    """What the champion says about each impression, and what is known of its outcome at ``now``
    (``traffic_rows.score_rows``, the pair features' context built over ``impressions``)."""
    exposure = delay.exposure_share(impressions, len(products), now)
    context = PairContext.build(products, edges, exposure)
    return traffic_rows.score_rows(bundle, impressions, products, context, delay_model, now, label)


def watch(rows: pd.DataFrame, start: pd.Timestamp, cfg: MonitorConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Pure core: the per-window, per-bucket table and its alerts."""
    rows = rows.assign(window=positivity.window_index(rows["shown_at"], start, cfg.window_days))
    return windows_table(positivity.bucket_positivity(rows, cfg), start, cfg)


def windows_table(
    table: pd.DataFrame, start: pd.Timestamp, cfg: MonitorConfig
) -> tuple[pd.DataFrame, list[dict]]:
    """The judged per-window, per-bucket table with each window's start, and its alerts."""
    table.insert(1, "window_start", start + table["window"].to_numpy() * cfg.window_days * DAY)
    return table, positivity.alerts(table, start, cfg.window_days)


def reference_rows(
    bundle: ServingBundle, products: pd.DataFrame, edges: pd.DataFrame, delay_model: delay.DelayModel
) -> pd.DataFrame:
    """The champion on the training-time holdout: the distribution drift is measured against."""
    weighted = io.read_table(paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    holdout = weighted[weighted["split"] != "train"]
    snapshot = pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"])
    as_log = holdout.assign(
        clicked_at=holdout["shown_at"].where(holdout["clicked"] == 1),
        carted_at=holdout["shown_at"].where(holdout["carted"] == 1),
        converted_at=holdout["shown_at"].where(holdout["label"] == 1),
    )
    return score_rows(
        bundle, as_log, products, edges, delay_model, snapshot, label=holdout["label"].to_numpy()
    )


def publish_dashboard(
    rows: pd.DataFrame, reference: pd.DataFrame, table: pd.DataFrame, cfg: MonitorConfig, run: str
) -> str:
    """One Evidently snapshot per window, published as one pipeline ``run`` (the champion that
    scored the traffic and the traffic's span). The dashboard shows that run only; re-publishing
    the same run replaces its snapshots."""
    from tqdm.auto import tqdm

    # Evidently: imported where the dashboard is written
    from nextbuy.mlops.dashboards.metrics import window_snapshot
    from nextbuy.mlops.dashboards.publish import publish

    columns = [
        "score",
        "uncertainty",
        "bucket",
        "prob_calibrated",
        "category",
        "log_price",
        "label_observed",
        "expected_label",
    ]
    snapshots = []
    for window_start, window_table in tqdm(table.groupby("window_start"), desc="evidently windows"):
        mask = (rows["shown_at"] >= window_start) & (rows["shown_at"] < window_start + cfg.window_days * DAY)
        tags = [f"window:{window_start:%Y-%m-%d}"] + (["alert"] if window_table["alert"].any() else [])
        snapshots.append(
            window_snapshot(
                rows.loc[mask, columns], reference[columns], window_table, window_start, tags, run=run
            )
        )
    log.info("Evidently: publishing run %r (%d windows)", run, len(snapshots))
    return publish(cfg.workspace, cfg.project, snapshots, cfg.dashboard)


def champion_of_this_store(client: MlflowClient, model_name: str, products: pd.DataFrame) -> str | None:
    """The released champion's version; None when none is released (nothing to monitor).
    A champion not trained on the catalogue of ``products`` (the ingested store's) is
    refused (DataError)."""
    # MLflow: imported where the stage talks to the registry
    from nextbuy.release import registry

    version = registry.released_version(client, model_name, registry.CHAMPION)
    if version is None:
        return None
    why = catalogue.mismatch(registry.catalogue_of(client, model_name, version), products)
    if why is not None:
        raise io.DataError(
            f"models:/{model_name}@{registry.CHAMPION}",
            f"{model_name} v{version} is not a model of this store ({paths.PRODUCTS}): {why}. "
            "Not monitoring this store's traffic with it. Release a model of this catalogue "
            "first, under a deploy.model_name of its own (each preset in presets/ has one)",
        )
    return version


def no_champion_reason(model_name: str) -> str:
    """Why nothing was monitored: no champion of ``model_name`` is released."""
    # MLflow: imported where the stage talks to the registry
    from nextbuy.release import registry

    return (
        f"no champion released for {model_name} (registry alias '{registry.CHAMPION}' unset): "
        f"nothing scored, no alerts. A candidate the release gate refused is not released: "
        f"{paths.metrics_file('deploy')} says why"
    )


def alerts_document(now: pd.Timestamp, fired: list[dict], reason: str | None = None) -> dict:
    """monitoring/alerts.json: the alerts; with ``reason``, a run that monitored nothing."""
    status = {"monitored": True} if reason is None else {"monitored": False, "reason": reason}
    return {"now": str(now), "alerts": fired, **status}


def write_outputs(table: pd.DataFrame | None, alerts: dict, metrics: dict) -> None:
    """Every output dvc.yaml declares for the stage. ``table`` None (nothing monitored): an
    empty windows table and a header-only plot file; an empty table otherwise is refused."""
    if table is None:
        io.write_empty_table(paths.MONITOR_WINDOWS, schemas.MONITOR_WINDOWS)
        table = io.empty_table(schemas.MONITOR_WINDOWS)
    else:
        io.write_table(table, paths.MONITOR_WINDOWS, schemas.MONITOR_WINDOWS)
    io.write_json(alerts, paths.MONITOR_ALERTS)
    io.write_csv(table[PLOT_COLUMNS], paths.plots_dir("monitor") / "positivity.csv")
    io.write_json(metrics, paths.metrics_file("monitor"))


def nothing_monitored(model_name: str, now: pd.Timestamp) -> dict:
    """No champion released: outputs and metrics that say nothing was monitored, and why."""
    reason = no_champion_reason(model_name)
    log.warning("monitor: nothing monitored: %s", reason)
    metrics = {
        "monitored": False,
        "reason": reason,
        "model_name": model_name,
        "champion_version": None,
        "windows": 0,
        "alerts": 0,
        "naive_alerts": 0,
        "alert_buckets": [],
        "first_alert": None,
        "evidently_project_id": None,
    }
    write_outputs(None, alerts_document(now, [], reason), metrics)
    return metrics


def scored_traffic(
    bundle: ServingBundle,
    cfg: MonitorConfig,
    span: tuple[pd.Timestamp, pd.Timestamp],
    products: pd.DataFrame,
    engine: EngineConfig,
) -> tuple:
    """The judged table, its alerts, the scored rows the dashboard shows and its reference, on
    ``engine`` (the Spark engine brings only the table and a sample of rows per window to
    this process: ``nextbuy.engines.spark.monitor``)."""
    start, now = span
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    delay_model = delay.DelayModel.from_dict(io.read_json(paths.DELAY_MODEL))
    if engine.kind == "spark":
        # pyspark: only when engine.kind is spark
        from nextbuy.engines.spark import monitor as spark_monitor

        sums, rows = spark_monitor.watch(engine.spark, bundle, (products, edges), delay_model, span, cfg)
        table, fired = windows_table(positivity.judged(sums, cfg), start, cfg)
        reference = spark_monitor.reference_sample(engine.spark, bundle, (products, edges), delay_model)
        return table, fired, rows, reference
    impressions = io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    rows = score_rows(bundle, impressions, products, edges, delay_model, now)
    table, fired = watch(rows, start, cfg)
    return table, fired, rows, reference_rows(bundle, products, edges, delay_model)


def watch_with_champion(
    model_name: str,
    version: str,
    cfg: MonitorConfig,
    meta: dict,
    products: pd.DataFrame,
    engine: EngineConfig,
) -> dict:
    """Score the traffic with champion ``version``, alert, publish the dashboard, write the outputs."""
    # Evidently: imported where the dashboard is written
    from nextbuy.mlops.dashboards.metrics import run_name

    # MLflow: imported where the stage talks to the registry
    from nextbuy.release import registry

    start, now = pd.Timestamp(meta["start"]), pd.Timestamp(meta["now"])
    bundle = registry.load_version(model_name, version)
    table, fired, rows, reference = scored_traffic(bundle, cfg, (start, now), products, engine)
    # The dashboard's run: the champion that scored this traffic, and the traffic's span.
    run = run_name(model_name, version, meta["start"], meta["now"])
    project_id = publish_dashboard(rows, reference, table, cfg, run)
    for a in fired:
        log.warning("ALERT %s: %s", a["window_start"], a["message"])
    metrics = monitored_metrics(model_name, version, table, fired, project_id)
    write_outputs(table, alerts_document(now, fired), metrics)
    return metrics


def monitored_metrics(
    model_name: str, version: str, table: pd.DataFrame, fired: list[dict], project_id: str
) -> dict:
    """metrics/monitor.json of a run that watched the traffic with champion ``version``."""
    return {
        "monitored": True,
        "model_name": model_name,
        "champion_version": version,
        "windows": int(table["window"].nunique()),
        "alerts": len(fired),
        "naive_alerts": int(table["naive_alert"].sum()),
        "alert_buckets": sorted({a["bucket"] for a in fired}),
        "first_alert": fired[0]["window_start"] if fired else None,
        "evidently_project_id": project_id,
    }


def add_matured(metrics: dict, matured: list[dict]) -> dict:
    """The model cards' matured metrics (``model_card.mature_recent``) added to
    metrics/monitor.json and alerts.json (``matured``: the versions below a floor)."""
    metrics = {
        **metrics,
        "matured": [{k: m[k] for k in ("version", "alias", "below_floor")} for m in matured],
    }
    alerts = {**io.read_json(paths.MONITOR_ALERTS), "matured": model_card.flags(matured)}
    io.write_json(alerts, paths.MONITOR_ALERTS)
    io.write_json(metrics, paths.metrics_file("monitor"))
    return metrics


def run(params_file: str = "params.yaml") -> dict:
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import tracking

    cfg = load_section(MonitorConfig, params_file)
    deploy_cfg = load_section(DeployConfig, params_file)
    model_name = deploy_cfg.model_name  # the model deploy registers
    meta = io.read_json(paths.TRAFFIC_META)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    tracking.configure()
    client = MlflowClient()
    engine = load_section(EngineConfig, params_file)
    champion = champion_of_this_store(client, model_name, products)
    if champion is None:
        metrics = nothing_monitored(model_name, pd.Timestamp(meta["now"]))
    else:
        metrics = watch_with_champion(model_name, champion, cfg, meta, products, engine)
    traffic = (paths.TRAFFIC_IMPRESSIONS, paths.TRAFFIC_META)
    matured = model_card.mature_recent(
        client, model_name, products, traffic, (cfg, deploy_cfg), maturity_engine(engine)
    )
    return add_matured(metrics, matured)


def maturity_engine(engine: EngineConfig) -> Callable[[Path], Measurer]:
    """The measurer ``model_card.mature_recent`` re-scores the recent versions with on ``engine``:
    this process, or Spark (``nextbuy.engines.spark.maturity``)."""
    from functools import partial

    if engine.kind == "spark":
        # pyspark: only when engine.kind is spark
        from nextbuy.engines.spark import maturity as spark_maturity

        return partial(spark_maturity.OnSpark, engine.spark)
    return model_card.InProcess
