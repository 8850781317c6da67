"""monitor: score the new traffic with the champion; per window and uncertainty
bucket compare predicted positivity with observed (matured) and delay-corrected
estimated positivity; write alerts; fill the Evidently on-call dashboard.

Only a champion of this store's catalogue watches its traffic (``nextbuy.domain.catalogue``:
the tag ``catalogue`` deploy records on every version vs the ingested products). No
champion, or one of another catalogue (or one recording none), stops the stage with a
DataError (exit 2) naming the model, its version and both catalogues: a model of another
catalogue scores ids that mean other products, and every window would alert for nothing."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import MonitorConfig, load_section
from nextbuy.domain import catalogue, delay, positivity
from nextbuy.domain.timeunits import DAY
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


def score_rows(
    bundle,
    impressions: pd.DataFrame,
    products: pd.DataFrame,
    edges: pd.DataFrame,
    delay_model: delay.DelayModel,
    now: pd.Timestamp,
    label: np.ndarray | None = None,
) -> pd.DataFrame:
    """What the champion says about each impression, and what is known of its outcome at ``now``."""
    scored = bundle.score(impressions["source_id"].to_numpy(), impressions["shown_id"].to_numpy())
    features = products.set_index("product_id").reindex(impressions["shown_id"].to_numpy())
    signals = delay.impression_signals(impressions, now, products, edges)
    if label is not None:
        signals["label"] = np.asarray(label, dtype=np.int8)
    elapsed, observed = signals["elapsed_days"].to_numpy(), signals["label"].to_numpy()
    p_flip = delay.flip_probability(delay_model, signals)
    return pd.DataFrame(
        {
            "shown_at": impressions["shown_at"].to_numpy(),
            "score": scored["score"].to_numpy(),
            "uncertainty": scored["uncertainty"].to_numpy(),
            "bucket": scored["bucket"].to_numpy(),
            "prob_calibrated": scored["prob_calibrated"].to_numpy(),
            "category": features["category"].fillna(-1).to_numpy(dtype=np.int64),
            "log_price": np.log(features["price"].to_numpy(dtype=float)),
            "label_observed": observed.astype(np.int64),
            "elapsed_days": elapsed,
            "expected_label": delay.expected_eventual_label(observed, p_flip),
        }
    )


def watch(rows: pd.DataFrame, start: pd.Timestamp, cfg: MonitorConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Pure core: the per-window, per-bucket table and its alerts."""
    rows = rows.assign(window=positivity.window_index(rows["shown_at"], start, cfg.window_days))
    table = positivity.bucket_positivity(rows, cfg)
    table.insert(1, "window_start", start + table["window"].to_numpy() * cfg.window_days * DAY)
    return table, positivity.alerts(table, start, cfg.window_days)


def reference_rows(bundle, products: pd.DataFrame, edges: pd.DataFrame, delay_model) -> pd.DataFrame:
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


def champion_of_this_store(client, model_name: str, products: pd.DataFrame) -> str:
    """The released champion's version, refused (DataError) unless it was trained on the
    catalogue of ``products`` (the ingested store's)."""
    from nextbuy.mlops import registry

    where = f"models:/{model_name}@{registry.CHAMPION}"
    version = registry.released_version(client, model_name, registry.CHAMPION)
    if version is None:
        raise io.DataError(
            where,
            f"no champion to monitor; run deploy first (a candidate the gate refused is not "
            f"released: {paths.metrics_file('deploy')} says why)",
        )
    store = catalogue.identity(products)
    why = catalogue.mismatch(registry.catalogue_of(client, model_name, version), store)
    if why is not None:
        raise io.DataError(
            where,
            f"{model_name} v{version} is not a model of this store ({paths.PRODUCTS}): {why}. "
            "Not monitoring this store's traffic with it. Release a model of this catalogue "
            "first, under a deploy.model_name of its own (each preset in presets/ has one)",
        )
    return version


def run(params_file: str = "params.yaml") -> dict:
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import registry, tracking
    from nextbuy.mlops.dashboards.metrics import run_name

    cfg = load_section("monitor", params_file)
    model_name = load_section("deploy", params_file).model_name  # the model deploy registers
    impressions = io.read_table(paths.TRAFFIC_IMPRESSIONS, schemas.IMPRESSIONS_LOG)
    meta = io.read_json(paths.TRAFFIC_META)
    start, now = pd.Timestamp(meta["start"]), pd.Timestamp(meta["now"])
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    delay_model = delay.DelayModel.from_dict(io.read_json(paths.DELAY_MODEL))
    tracking.configure()
    champion = champion_of_this_store(MlflowClient(), model_name, products)
    bundle = registry.load_version(model_name, champion)
    rows = score_rows(bundle, impressions, products, edges, delay_model, now)
    table, fired = watch(rows, start, cfg)
    # The dashboard's run: the champion that scored this traffic, and the traffic's span.
    run = run_name(model_name, champion, meta["start"], meta["now"])
    project_id = publish_dashboard(
        rows, reference_rows(bundle, products, edges, delay_model), table, cfg, run
    )
    io.write_table(table, paths.MONITOR_WINDOWS, schemas.MONITOR_WINDOWS)
    io.write_json({"now": str(now), "alerts": fired}, paths.MONITOR_ALERTS)
    io.write_csv(
        table[["window", "bucket", "predicted", "observed", "naive", "estimated"]],
        paths.plots_dir("monitor") / "positivity.csv",
    )
    for a in fired:
        log.warning("ALERT %s: %s", a["window_start"], a["message"])
    metrics = {
        "windows": int(table["window"].nunique()),
        "alerts": len(fired),
        "naive_alerts": int(table["naive_alert"].sum()),
        "alert_buckets": sorted({a["bucket"] for a in fired}),
        "first_alert": fired[0]["window_start"] if fired else None,
        "evidently_project_id": project_id,
    }
    io.write_json(metrics, paths.metrics_file("monitor"))
    return metrics
