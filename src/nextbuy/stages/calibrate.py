"""calibrate: score and uncertainty for every holdout pair; per-uncertainty-bucket
isotonic calibration fitted on calibration-split pairs whose labels have matured.

The metrics also show what the uncertainty measures: its effect on conversion at equal
score (``uncertainty_at_equal_score``), calibration error per bucket, and how it grows
where the co-purchase graph holds little history (``uncertainty_by_history``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import CalibrateConfig, ServedRankingConfig, load_section
from nextbuy.domain import served_ranking
from nextbuy.domain.evaluation import evaluation_labels, fit_rows, soft_auc, soft_log_loss
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.uncertainty import (
    BucketCalibration,
    assign_buckets,
    expected_calibration_error,
    fit_bucket_calibration,
    positivity_by_score_band,
    reliability_table,
    uncertainty_by_history,
    uncertainty_coefficient,
)
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


def score_holdout(
    weighted: pd.DataFrame, moments: Mapping[str, np.ndarray], cfg: CalibrateConfig
) -> tuple[pd.DataFrame, BucketCalibration]:
    """Pure core: scored calib+test rows and the calibration fitted on matured calib rows
    (against their delay-corrected labels).

    DataError when the matured calib rows are too few for one bucket, or for
    ``n_buckets`` buckets of ``min_bucket_size`` rows each (buckets are quantiles of their
    uncertainty, so about ``rows / n_buckets`` each): a bucket below ``min_bucket_size``
    falls back to the global map, and ``n_buckets: 1000`` would otherwise pass silently
    with no bucket calibrated on its own."""

    rows = holdout_rows(weighted)
    score, uncertainty = score_and_uncertainty(
        moments, rows["source_id"].to_numpy(), rows["shown_id"].to_numpy()
    )
    return calibrate_holdout(rows, score, uncertainty, cfg)


def holdout_rows(weighted: pd.DataFrame) -> pd.DataFrame:
    """The calib and test split's rows, in the order :func:`calibrate_holdout` expects."""
    return weighted[weighted["split"].isin(["calib", "test"])].reset_index(drop=True)


def calibrate_holdout(
    rows: pd.DataFrame, score: np.ndarray, uncertainty: np.ndarray, cfg: CalibrateConfig
) -> tuple[pd.DataFrame, BucketCalibration]:
    """:func:`score_holdout` for scores and uncertainties already computed on ``rows``
    (:func:`holdout_rows`); a benchmark's reference uncertainty goes through the same fit."""
    matured = (rows["elapsed_days"] >= cfg.maturity_days).to_numpy()
    fit_mask = matured & (rows["split"] == "calib").to_numpy()
    if fit_mask.sum() < cfg.min_bucket_size or len(np.unique(rows["label"].to_numpy()[fit_mask])) < 2:
        raise io.DataError(
            paths.WEIGHTED_IMPRESSIONS,
            f"only {int(fit_mask.sum())} matured calibration rows with both labels "
            f"(need >= {cfg.min_bucket_size}); "
            "lower calibrate.maturity_days or raise ingest.split.calib_share",
            column="elapsed_days",
        )
    # Buckets are quantiles of the fit rows' uncertainty: too many leave every bucket below
    # min_bucket_size, and each silently falls back to the global map.
    n_fit, per_bucket = int(fit_mask.sum()), int(fit_mask.sum()) // cfg.n_buckets
    if per_bucket < cfg.min_bucket_size:
        raise io.DataError(
            paths.WEIGHTED_IMPRESSIONS,
            f"calibrate.n_buckets={cfg.n_buckets} leaves about {per_bucket} of the {n_fit} matured "
            f"calibration rows per bucket, fewer than calibrate.min_bucket_size={cfg.min_bucket_size} "
            f"(every such bucket falls back to the global map); set calibrate.n_buckets <= "
            f"{n_fit // cfg.min_bucket_size} or give calibration more matured rows",
            column="split",
        )
    # Delay-corrected labels: with delays of days to weeks even a "matured" row may still
    # convert, and observed labels would calibrate every score too low.
    calibration = fit_bucket_calibration(
        score[fit_mask],
        uncertainty[fit_mask],
        evaluation_labels(rows)[fit_mask],
        cfg.n_buckets,
        cfg.min_bucket_size,
    )
    scored = rows[["impression_id", "source_id", "shown_id", "split", "label", "p_flip"]].assign(
        matured=matured,
        score=score.astype(float),
        uncertainty=uncertainty.astype(float),
        bucket=assign_buckets(uncertainty, calibration.edges).astype(np.int64),
        prob_calibrated=np.clip(calibration.predict(score, uncertainty), 0.0, 1.0).astype(float),
    )
    return scored, calibration


def judged_purchases(
    next_purchases: pd.DataFrame, weighted: pd.DataFrame, cfg: ServedRankingConfig
) -> tuple[pd.DataFrame, str]:
    """The held-out purchases (source_id, next_id) the served ranking is judged on, at most
    ``max_rows`` drawn with ``seed``, and what they are: the calibration split's next
    purchases from the orders (ingest's), or, where ingest read no orders, its exposures
    the customer bought (which lean towards what the logging policy showed)."""
    if len(next_purchases):
        bought, judged_on = next_purchases, "next purchases of the calibration split's sessions"
    else:
        bought = weighted[(weighted["split"] == "calib") & (weighted["label"] == 1)]
        bought = bought.rename(columns={"shown_id": "next_id"})
        judged_on = "bought exposures of the calibration split (no order lines ingested)"
    bought = bought[bought["source_id"] != bought["next_id"]]
    if len(bought) > cfg.max_rows:
        bought = bought.sample(cfg.max_rows, random_state=cfg.seed)
    return bought[["source_id", "next_id"]].reset_index(drop=True), judged_on


def choose_ranking(
    next_purchases: pd.DataFrame,
    weighted: pd.DataFrame,
    moments: Mapping[str, np.ndarray],
    calibration: BucketCalibration,
    edges: pd.DataFrame,
    cfg: ServedRankingConfig,
) -> tuple[served_ranking.RankingChoice, served_ranking.CountTables]:
    """Pure core: the served top-K order, chosen on held-out purchases
    (:func:`judged_purchases`), and the count tables a count ranking is served from."""
    n = moments["t_mean"].shape[0]
    tables = served_ranking.CountTables.from_edges(
        edges["src"].to_numpy(), edges["dst"].to_numpy(), edges["weight"].to_numpy(), n
    )
    bought, judged_on = judged_purchases(next_purchases, weighted, cfg)
    settings = served_ranking.ChoiceSettings(
        cfg.k, cfg.confidence, tuple(cfg.priors), cfg.cross_fit_folds, cfg.seed
    )
    choice = served_ranking.choose_served(
        bought["source_id"].to_numpy(),
        bought["next_id"].to_numpy(),
        moments,
        calibration,
        tables,
        settings,
        judged_on,
    )
    return choice, tables.with_prior(choice.prior)


def _quality(prob: np.ndarray, score: np.ndarray, label: np.ndarray) -> dict:
    return {
        "rows": len(label),
        "positivity": float(label.mean()),
        "auc": soft_auc(label, score),  # the gate's AUC: the same rows give the same figure
        "log_loss": soft_log_loss(prob, label),
        "ece_raw": expected_calibration_error(score, label),
        "ece_calibrated": expected_calibration_error(prob, label),
    }


def positivity_vs_uncertainty(scored: pd.DataFrame, label: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Observed conversion rate and mean prediction by uncertainty decile (DVC plot)."""
    bins = pd.qcut(scored["uncertainty"], n_bins, labels=False, duplicates="drop")
    return (
        scored.assign(label=label, bin=bins)
        .groupby("bin")
        .agg(
            uncertainty=("uncertainty", "mean"),
            positivity=("label", "mean"),
            mean_score=("score", "mean"),
            mean_calibrated=("prob_calibrated", "mean"),
            count=("label", "size"),
        )
        .reset_index(drop=True)
    )


def ece_by_bucket(scored: pd.DataFrame, label: np.ndarray, n_buckets: int) -> dict:
    """Raw and calibrated calibration error of each uncertainty bucket (None when empty)."""
    bucket = scored["bucket"].to_numpy()
    out = {}
    for b in range(n_buckets):
        m = bucket == b
        ece = {
            column: expected_calibration_error(scored[column].to_numpy()[m], label[m]) if m.any() else None
            for column in ("score", "prob_calibrated")
        }
        out[str(b)] = {
            "rows": int(m.sum()),
            "ece_raw": ece["score"],
            "ece_calibrated": ece["prob_calibrated"],
        }
    return out


def _coefficient(scored: pd.DataFrame, label: np.ndarray, rows: np.ndarray) -> dict:
    return uncertainty_coefficient(
        scored["score"].to_numpy()[rows], scored["uncertainty"].to_numpy()[rows], label[rows]
    )


def history_of_shown(
    scored: pd.DataFrame, weighted: pd.DataFrame, edges: pd.DataFrame, snapshot: pd.Timestamp
) -> dict:
    """Mean holdout uncertainty by the shown product's in-degree and age (first seen in the
    graph or the impressions log), from the pipeline's own data."""
    return uncertainty_by_history(
        scored["shown_id"].to_numpy(), scored["uncertainty"].to_numpy(), edges, weighted, snapshot
    )


def summarise(scored: pd.DataFrame, calibration: BucketCalibration) -> dict:
    fit = fit_rows(scored)
    test = scored["split"] == "test"
    corrected = evaluation_labels(scored)
    per_bucket = (
        scored.assign(corrected=corrected)[fit]
        .groupby("bucket")
        .agg(rows=("label", "size"), positivity=("corrected", "mean"), mean_score=("score", "mean"))
    )
    return {
        "n_buckets": len(calibration.edges) + 1,
        "uncertainty_edges": [float(e) for e in calibration.edges],
        "calib_matured": _quality(  # against the labels calibration was fitted on
            scored.loc[fit, "prob_calibrated"].to_numpy(),
            scored.loc[fit, "score"].to_numpy(),
            corrected[fit],
        ),
        "test_delay_corrected": _quality(
            scored.loc[test, "prob_calibrated"].to_numpy(),
            scored.loc[test, "score"].to_numpy(),
            corrected[test.to_numpy()],
        ),
        "calib_buckets": {str(b): {k: float(v) for k, v in row.items()} for b, row in per_bucket.iterrows()},
        # Test split, delay-corrected labels: does each bucket's own map fix its calibration?
        "ece_by_bucket": ece_by_bucket(scored[test], corrected[test.to_numpy()], calibration.n_buckets),
        # Log-odds change per standard deviation of uncertainty at equal score (< 0: the
        # uncertain convert less than their score says), on fresh and on matured rows.
        "uncertainty_at_equal_score": {
            "test": _coefficient(scored, corrected, test.to_numpy()),
            "calib": _coefficient(scored, corrected, fit),
        },
    }


def reliability_out_of_sample(scored: pd.DataFrame) -> pd.DataFrame:
    """Reliability-diagram rows per bucket on the test split (delay-corrected labels): rows
    the isotonic maps never saw, so a miscalibrated bucket shows off the diagonal. (On the
    fit rows an isotonic map is the diagonal by construction.)"""
    test = (scored["split"] == "test").to_numpy()
    return reliability_table(
        scored["prob_calibrated"].to_numpy()[test],
        evaluation_labels(scored)[test],
        bucket=scored["bucket"].to_numpy()[test],
    )


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section(CalibrateConfig, params_file)
    weighted = io.read_table(paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    moments = schemas.read_moments(paths.GNN_MOMENTS)
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    snapshot = pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"])
    scored, calibration = score_holdout(weighted, moments, cfg)
    io.write_table(scored, paths.SCORED, schemas.SCORED)
    io.write_json(calibration.to_dict(), paths.CALIBRATION_MODEL)
    plots = paths.plots_dir("calibrate")
    io.write_csv(reliability_out_of_sample(scored), plots / "reliability.csv")
    io.write_csv(
        positivity_vs_uncertainty(scored, evaluation_labels(scored)), plots / "positivity_vs_uncertainty.csv"
    )
    io.write_csv(
        positivity_by_score_band(
            scored["score"].to_numpy(), scored["uncertainty"].to_numpy(), evaluation_labels(scored)
        ),
        plots / "positivity_by_score_band.csv",
    )
    metrics = summarise(scored, calibration)
    metrics["uncertainty_by_history"] = history_of_shown(scored, weighted, edges, snapshot)
    next_purchases = io.read_table(paths.NEXT_PURCHASES, schemas.NEXT_PURCHASES, may_be_empty=True)
    choice, tables = choose_ranking(next_purchases, weighted, moments, calibration, edges, cfg.served_ranking)
    io.write_npz(tables.to_arrays(), paths.COUNT_TABLES)
    io.write_json(choice.to_dict(), paths.SERVED_RANKING)
    if choice.served != "model":
        log.warning("calibrate: the served top-K is ranked by %s: %s", choice.served, choice.reason)
    metrics["served_ranking"] = choice.to_dict()
    io.write_json(metrics, paths.metrics_file("calibrate"))
    return metrics
