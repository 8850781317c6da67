"""label_delay: fit the conversion-delay model and give every impression its training target.

The delay models (the full one, and its no-engagement and no-features
ablations) are fitted on the train split only — matured and immature impressions
alike, the censored likelihood needs both — then applied to every split, so the
train stage can learn from the freshest days and later stages can correct recent
labels without reading the ground truth. Per weighting method
(``constants.WEIGHTING_METHODS``) a ``target_<method>`` column (the label the loss
trains toward) and a ``weight_<method>`` column; ``train.weighting`` picks one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import EngineConfig, LabelDelayConfig, load_section
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain import delay
from nextbuy.mlops import io, schemas

FLIP_PLOT = "flip_by_engagement.csv"


def _fit_rows(signals: pd.DataFrame, rows: np.ndarray, cfg: LabelDelayConfig) -> pd.DataFrame:
    """The train split's signals (``rows``: its fit sample), refused when there is nothing
    to fit a delay model on."""
    fit = signals[rows]
    problem = delay.fit_problem(fit, cfg.wait_days)
    if problem is not None:
        raise io.DataError(paths.IMPRESSIONS, *problem)
    return fit


def check_ipw(train_positives: int, clipped_positives: int, cfg: LabelDelayConfig) -> None:
    """``importance_ipw`` is refused when every training conversion's weight is clipped."""
    problem = delay.ipw_problem(train_positives, clipped_positives, cfg.max_weight)
    if problem is not None:
        raise io.DataError(paths.IMPRESSIONS, problem, "converted_at")


def weigh(
    impressions: pd.DataFrame,
    snapshot: pd.Timestamp,
    cfg: LabelDelayConfig,
    products: pd.DataFrame | None = None,
    edges: pd.DataFrame | None = None,
    horizon_days: float | None = None,
) -> tuple[pd.DataFrame, dict[str, delay.DelayModel]]:
    """Pure core: fit the delay models on train (at most ``cfg.fit_sample_rows`` of its rows,
    ``delay.fit_sample``); every split's rows with their flip probability and each
    method's target and weight. Without ``products``/``edges`` the models see engagement
    only (then ``importance`` and ``importance_no_features`` agree). ``horizon_days``: the
    attribution window of the labels (ingest's meta), past which no conversion is seen."""
    signals = delay.impression_signals(impressions, snapshot, products, edges)
    train = (impressions["split"] == "train").to_numpy()
    rate = delay.sample_rate(int(train.sum()), cfg.fit_sample_rows)
    sample = delay.fit_sample(impressions["impression_id"].to_numpy(), train, rate, cfg.seed)
    models = delay.fit_models(
        _fit_rows(signals, sample, cfg), signals.columns, cfg.delay_family, horizon_days
    )
    weighted = delay.weighted_rows(impressions, signals, models, cfg.wait_days, cfg.max_weight)
    w = weighted["weight_importance_ipw"].to_numpy()
    positive = train & (weighted["label"].to_numpy() == 1)
    check_ipw(int(positive.sum()), int((w[positive] >= cfg.max_weight).sum()), cfg)
    if cfg.normalise_weights:  # mean 1 over the training rows, the rows the loss sees
        weighted["weight_importance_ipw"] = delay.normalised_ipw(w, float(w[train].mean()))
    return weighted, models


def weight_profile(weighted: pd.DataFrame, n_bins: int = 20) -> pd.DataFrame:
    """Observed vs delay-corrected positivity, and the mean plain importance weight
    (``importance_ipw``), by days since shown (a DVC plot)."""
    edges = np.unique(np.quantile(weighted["elapsed_days"], np.linspace(0, 1, n_bins + 1)))
    bins = pd.cut(weighted["elapsed_days"], edges, include_lowest=True)
    expected = delay.expected_eventual_label(weighted["label"].to_numpy(), weighted["p_flip"].to_numpy())
    table = (
        weighted.assign(expected=expected)
        .groupby(bins, observed=True)
        .agg(
            elapsed_days=("elapsed_days", "mean"),
            observed_positivity=("label", "mean"),
            corrected_positivity=("expected", "mean"),
            mean_ipw_weight=("weight_importance_ipw", "mean"),
            count=("label", "size"),
        )
    )
    return table.reset_index(drop=True)


def _weight_summary(w: np.ndarray) -> dict:
    ess = delay.effective_sample_size(w)
    q = np.quantile(w, [0.01, 0.5, 0.99]) if len(w) else np.zeros(3)
    return {
        "ess": ess,
        "ess_share": ess / max(len(w), 1),
        "mean": float(w.mean()) if len(w) else 0.0,
        "p01": float(q[0]),
        "median": float(q[1]),
        "p99": float(q[2]),
        "max": float(w.max()) if len(w) else 0.0,
        "share_zero": float((w == 0).mean()) if len(w) else 0.0,
    }


def _weighted_rate(rows: pd.DataFrame, method: str) -> float | None:
    weight = rows[f"weight_{method}"].to_numpy()
    return float(np.average(rows[f"target_{method}"], weights=weight)) if weight.sum() > 0 else None


def summarise(weighted: pd.DataFrame, models: dict[str, delay.DelayModel], cfg: LabelDelayConfig) -> dict:
    train = weighted[weighted["split"] == "train"]
    expected = delay.expected_eventual_label(weighted["label"].to_numpy(), weighted["p_flip"].to_numpy())
    recent = (weighted["elapsed_days"] < 7).to_numpy()
    model = models["importance"]
    return {
        "delay_family": model.family,
        "signals": list(model.columns),
        "observed_positivity": float(weighted["label"].mean()),
        "corrected_positivity": float(expected.mean()),
        "last_7_days": {
            "observed_positivity": float(weighted["label"].to_numpy()[recent].mean())
            if recent.any()
            else None,
            "corrected_positivity": float(expected[recent].mean()) if recent.any() else None,
        },
        "train": {
            "impressions": len(train),
            "observed_positivity": float(train["label"].mean()),
            # What each method's loss sees as the positive rate: sum(w target) / sum(w).
            "weighted_positivity": {m: _weighted_rate(train, m) for m in WEIGHTING_METHODS},
            "share_clipped_ipw": float((train["weight_importance_ipw"] >= cfg.max_weight).mean())
            if not cfg.normalise_weights
            else None,
        },
        "weights": {m: _weight_summary(train[f"weight_{m}"].to_numpy()) for m in WEIGHTING_METHODS},
    }


def engagement_summary(signals_frame: pd.DataFrame, model: delay.DelayModel) -> dict:
    """Mean fitted P(convert) and median delay (days from the last engagement, the delay model's
    clock) per engagement level (what the rows hold)."""
    level = delay.engagement_level(signals_frame)
    p, median = model.p_convert(signals_frame), model.median_delay(signals_frame)
    return {
        name: {
            "p_convert": float(p[level == name].mean()),
            "median_delay_days": float(np.median(median[level == name])),
        }
        for name in delay.ENGAGEMENT_LEVELS
        if (level == name).any()
    }


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section(LabelDelayConfig, params_file)
    engine = load_section(EngineConfig, params_file)
    plots = paths.plots_dir("label_delay")
    if engine.kind == "spark":  # the same files, computed on Spark (nextbuy.engines)
        # pyspark: only when engine.kind is spark
        from nextbuy.engines.spark import label_delay as spark_label_delay

        model, metrics, profile, flips = spark_label_delay.run(cfg, engine.spark)
        io.write_json(model, paths.DELAY_MODEL)
        io.write_csv(profile, plots / "positivity_by_elapsed.csv")
        io.write_csv(flips, plots / FLIP_PLOT)
        io.write_json(metrics, paths.metrics_file("label_delay"))
        return metrics
    impressions = io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    meta = io.read_json(paths.INGEST_META)
    snapshot = pd.Timestamp(meta["snapshot"])
    weighted, models = weigh(impressions, snapshot, cfg, products, edges, meta.get("attribution_days"))
    signals = delay.impression_signals(impressions, snapshot, products, edges)
    io.write_table(weighted, paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    io.write_json(models["importance"].to_dict(), paths.DELAY_MODEL)
    io.write_csv(weight_profile(weighted), plots / "positivity_by_elapsed.csv")
    io.write_csv(delay.flip_table(signals, weighted["p_flip"].to_numpy()), plots / FLIP_PLOT)
    metrics = summarise(weighted, models, cfg)
    metrics["by_engagement"] = engagement_summary(signals, models["importance"])
    io.write_json(metrics, paths.metrics_file("label_delay"))
    return metrics
