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
from nextbuy.config import LabelDelayConfig, load_section
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain import delay
from nextbuy.mlops import io, schemas

FLIP_PLOT = "flip_by_engagement.csv"


def _fit_rows(signals: pd.DataFrame, train: np.ndarray, cfg: LabelDelayConfig) -> pd.DataFrame:
    """The train split's signals, refused when there is nothing to fit a delay model on."""
    rows = signals[train]
    if not len(rows):
        raise io.DataError(
            paths.IMPRESSIONS, "the train split is empty: nothing to fit the delay model on", "split"
        )
    if not rows["label"].any():
        raise io.DataError(
            paths.IMPRESSIONS,
            f"none of the {len(rows)} training impressions has a conversion: no delay can be fitted",
            "converted_at",
        )
    matured_conversions = rows["label"].astype(bool) & (rows["elapsed_days"] >= cfg.wait_days)
    if (
        rows["label"].any()
        and not matured_conversions.any()
        and (rows["elapsed_days"] >= cfg.wait_days).any()
    ):
        raise io.DataError(
            paths.IMPRESSIONS,
            f"every training conversion comes from an impression younger than {cfg.wait_days:g} days "
            "(label_delay.wait_days): no matured conversion to fit the delay on",
            "converted_at",
        )
    if not (rows["elapsed_days"] >= cfg.wait_days).any():
        raise io.DataError(
            paths.IMPRESSIONS,
            f"no training impression is {cfg.wait_days:g} days old (label_delay.wait_days): nothing has "
            f"matured; the oldest is {rows['elapsed_days'].max():.2f} days old",
            "shown_at",
        )
    return rows


def _ipw_weights(
    signals: pd.DataFrame, model: delay.DelayModel, train: np.ndarray, cfg: LabelDelayConfig
) -> np.ndarray:
    """``importance_ipw``: the plain P/Q weights, clipped (and normalised over the train rows)."""
    w = delay.importance_weights(model, signals, max_weight=cfg.max_weight)
    positive = signals["label"].to_numpy() == 1
    if positive[train].any() and (w[train & positive] >= cfg.max_weight).all():
        raise io.DataError(
            paths.IMPRESSIONS,
            f"every training conversion's importance weight is clipped at label_delay.max_weight "
            f"{cfg.max_weight:g}: conversions are all too recent for the delay model to correct",
            "converted_at",
        )
    if cfg.normalise_weights:  # mean 1 over the training rows, the rows the loss sees
        w = w / max(w[train].mean(), 1e-12)
    return w


def _training_columns(
    signals: pd.DataFrame,
    models: dict[str, delay.DelayModel],
    p_flip: dict[str, np.ndarray],
    train: np.ndarray,
    cfg: LabelDelayConfig,
) -> dict[str, np.ndarray]:
    """``target_<method>`` and ``weight_<method>`` for every weighting method."""
    label = signals["label"].to_numpy(np.float64)
    ones = np.ones(len(signals))
    matured = (signals["elapsed_days"].to_numpy() >= cfg.wait_days).astype(np.float64)
    targets = {"naive": (label, ones), "wait": (label, matured)}
    # Rao-Blackwellised importance weights: each model's flip probability as positive mass
    targets |= {m: (delay.expected_eventual_label(label, p_flip[m]), ones) for m in models}
    targets["importance_ipw"] = (label, _ipw_weights(signals, models["importance"], train, cfg))
    columns = {}
    for method in WEIGHTING_METHODS:
        target, weight = targets[method]
        columns[f"target_{method}"], columns[f"weight_{method}"] = target, weight
    return columns


def weigh(
    impressions: pd.DataFrame,
    snapshot: pd.Timestamp,
    cfg: LabelDelayConfig,
    products: pd.DataFrame | None = None,
    edges: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, delay.DelayModel]]:
    """Pure core: fit the delay models on train; every split's rows with their flip
    probability and each method's target and weight. Without ``products``/``edges`` the models
    see engagement only (then ``importance`` and ``importance_no_features`` agree)."""
    signals = delay.impression_signals(impressions, snapshot, products, edges)
    train = (impressions["split"] == "train").to_numpy()
    fit_rows = _fit_rows(signals, train, cfg)
    models = {
        method: delay.fit_delay_model(
            fit_rows, delay.signal_columns(method, signals), family=cfg.delay_family
        )
        for method in delay.IMPORTANCE_SIGNALS
    }
    p_flip = {method: delay.flip_probability(model, signals) for method, model in models.items()}
    weighted = impressions[["impression_id", "source_id", "shown_id", "shown_at", "split"]].copy()
    weighted = weighted.assign(
        label=signals["label"],
        clicked=signals["clicked"],
        carted=signals["carted"],
        elapsed_days=signals["elapsed_days"],
        # The rest of the delay model's input, for the train stage's EM step.
        delay_days=signals["delay_days"],
        engaged_days=signals["engaged_days"],
        engagement_lag=signals["engagement_lag"],
        **{c: signals[c] for c in delay.FEATURES if c in signals},
        p_flip=p_flip["importance"],
        **_training_columns(signals, models, p_flip, train, cfg),
    )
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
    cfg = load_section("label_delay", params_file)
    impressions = io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    snapshot = pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"])
    weighted, models = weigh(impressions, snapshot, cfg, products, edges)
    signals = delay.impression_signals(impressions, snapshot, products, edges)
    io.write_table(weighted, paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    io.write_json(models["importance"].to_dict(), paths.DELAY_MODEL)
    plots = paths.plots_dir("label_delay")
    io.write_csv(weight_profile(weighted), plots / "positivity_by_elapsed.csv")
    io.write_csv(delay.flip_table(signals, weighted["p_flip"].to_numpy()), plots / FLIP_PLOT)
    metrics = summarise(weighted, models, cfg)
    metrics["by_engagement"] = engagement_summary(signals, models["importance"])
    io.write_json(metrics, paths.metrics_file("label_delay"))
    return metrics
