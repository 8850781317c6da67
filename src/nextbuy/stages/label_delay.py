"""label_delay: fit the conversion-delay model and weight every impression.

The delay model is fitted on the train split only (the censored likelihood
uses matured and immature examples alike), then applied to every split so
later stages can correct recent labels without reading the ground truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import LabelDelayConfig, load_section
from nextbuy.domain import delay
from nextbuy.mlops import io, schemas


def weigh(
    impressions: pd.DataFrame, snapshot: pd.Timestamp, cfg: LabelDelayConfig
) -> tuple[pd.DataFrame, delay.DelayModel]:
    """Pure core: fit the delay model on train, return weighted impressions of all splits."""
    obs = delay.observed_signals(impressions, snapshot)
    fit = (impressions["split"] == "train").to_numpy()
    model = delay.fit_delay_model(
        obs["elapsed_days"].to_numpy()[fit],
        obs["label"].to_numpy()[fit],
        obs["delay_days"].to_numpy()[fit],
        obs["clicked"].to_numpy()[fit],
        obs["carted"].to_numpy()[fit],
        family=cfg.delay_family,
    )
    args = (
        obs["elapsed_days"].to_numpy(),
        obs["label"].to_numpy(),
        obs["clicked"].to_numpy(),
        obs["carted"].to_numpy(),
    )
    weighted = impressions[["impression_id", "source_id", "shown_id", "shown_at", "split"]].copy()
    weighted = weighted.assign(
        label=obs["label"],
        clicked=obs["clicked"],
        carted=obs["carted"],
        elapsed_days=obs["elapsed_days"],
        p_flip=delay.flip_probability(model, *args),
        weight_iw=delay.importance_weights(model, *args, max_weight=cfg.max_weight),
        weight_naive=1.0,
    )
    return weighted, model


def weight_profile(weighted: pd.DataFrame, n_bins: int = 20) -> pd.DataFrame:
    """Observed vs delay-corrected positivity and mean weight by days since shown (a DVC plot)."""
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
            mean_weight=("weight_iw", "mean"),
            count=("label", "size"),
        )
    )
    return table.reset_index(drop=True)


def summarise(weighted: pd.DataFrame, model: delay.DelayModel, cfg: LabelDelayConfig) -> dict:
    expected = delay.expected_eventual_label(weighted["label"].to_numpy(), weighted["p_flip"].to_numpy())
    recent = (weighted["elapsed_days"] < 7).to_numpy()
    p_conv = model.p_convert(np.array([0, 1, 1]), np.array([0, 0, 1]))
    return {
        "delay_family": model.family,
        "p_convert": {"no_click": float(p_conv[0]), "clicked": float(p_conv[1]), "carted": float(p_conv[2])},
        "median_delay_days": {
            "not_carted": float(model.median_delay(np.array([0]))[0]),
            "carted": float(model.median_delay(np.array([1]))[0]),
        },
        "observed_positivity": float(weighted["label"].mean()),
        "corrected_positivity": float(expected.mean()),
        "last_7_days": {
            "observed_positivity": float(weighted["label"].to_numpy()[recent].mean())
            if recent.any()
            else None,
            "corrected_positivity": float(expected[recent].mean()) if recent.any() else None,
        },
        "weight_iw": {
            "mean": float(weighted["weight_iw"].mean()),
            "max": float(weighted["weight_iw"].max()),
            "share_clipped": float((weighted["weight_iw"] >= cfg.max_weight).mean()),
        },
    }


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section("label_delay", params_file)
    impressions = io.read_table(paths.IMPRESSIONS, schemas.IMPRESSIONS)
    snapshot = pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"])
    weighted, model = weigh(impressions, snapshot, cfg)
    io.write_table(weighted, paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    io.write_json(model.to_dict(), paths.DELAY_MODEL)
    io.write_csv(weight_profile(weighted), paths.plots_dir("label_delay") / "positivity_by_elapsed.csv")
    metrics = summarise(weighted, model, cfg)
    io.write_json(metrics, paths.metrics_file("label_delay"))
    return metrics
