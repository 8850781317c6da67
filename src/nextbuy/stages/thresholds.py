"""thresholds: one threshold per uncertainty bucket for the precision target,
fitted jointly on matured calibration pairs, beside the single-threshold baseline
(both over the same cut points; buckets below the support floor get the single one;
the per-bucket policy is served only where it beats the single one out of fold)."""

from __future__ import annotations

import logging

import pandas as pd

from nextbuy import paths
from nextbuy.config import ThresholdsConfig, load_section
from nextbuy.domain.decisions import (
    BucketFit,
    Thresholds,
    cross_fitted_bucket_thresholds,
    pr_curve_table,
    precision_recall,
)
from nextbuy.domain.evaluation import evaluation_labels, fit_rows
from nextbuy.mlops import io, schemas

log = logging.getLogger(__name__)


def fit_policies(scored: pd.DataFrame, n_buckets: int, cfg: ThresholdsConfig) -> BucketFit:
    """Pure core: per-bucket thresholds and the single threshold, with feasibility and support."""
    rows = scored[fit_rows(scored)]
    return cross_fitted_bucket_thresholds(
        rows["score"].to_numpy(),
        rows["bucket"].to_numpy(),
        rows["label"].to_numpy(),
        n_buckets,
        cfg,
    )


def fit(scored: pd.DataFrame, n_buckets: int, cfg: ThresholdsConfig) -> tuple[Thresholds, Thresholds]:
    """(per-bucket thresholds, single-threshold baseline as the same type)."""
    fitted = fit_policies(scored, n_buckets, cfg)
    return fitted.thresholds, fitted.baseline


def evaluate(scored: pd.DataFrame, per_bucket: Thresholds, baseline: Thresholds) -> dict:
    """Precision/recall of both policies: in-sample on matured calib rows, and on the test split
    against delay-corrected labels (its recent labels are still immature)."""
    calib = fit_rows(scored)
    test = (scored["split"] == "test").to_numpy()
    corrected = evaluation_labels(scored)
    out: dict = {}
    for name, policy in (("per_bucket", per_bucket), ("single", baseline)):
        decide = policy.decide(scored["score"].to_numpy(), scored["bucket"].to_numpy())
        out[name] = {
            "calib": precision_recall(decide[calib], scored["label"].to_numpy()[calib].astype(float)),
            "test_delay_corrected": precision_recall(decide[test], corrected[test]),
        }
    out["recall_gain_calib"] = out["per_bucket"]["calib"]["recall"] - out["single"]["calib"]["recall"]
    out["recall_gain_test"] = (
        out["per_bucket"]["test_delay_corrected"]["recall"] - out["single"]["test_delay_corrected"]["recall"]
    )
    return out


def metrics_of(scored: pd.DataFrame, fitted: BucketFit) -> dict:
    """The stage metrics: thresholds, feasibility, per-bucket support, and both policies' precision/recall."""
    per_bucket, baseline = fitted.thresholds, fitted.baseline
    metrics = {
        "target_precision": per_bucket.target_precision,
        "feasible": fitted.feasible,  # the served (per-bucket) policy reaches the target on the fit rows
        "thresholds": per_bucket.to_dict()["thresholds"],
        "single_threshold": baseline.to_dict()["thresholds"][0],
        "support": fitted.support(),
        "cross_fit": fitted.cross_fit.to_dict() if fitted.cross_fit is not None else None,
        **evaluate(scored, per_bucket, baseline),
    }
    metrics["per_bucket"]["feasible"] = fitted.feasible
    metrics["single"]["feasible"] = fitted.single.feasible
    return metrics


def _warn_if_infeasible(metrics: dict) -> None:
    for name in ("per_bucket", "single"):
        if not metrics[name]["feasible"]:
            log.warning(
                "thresholds: no %s policy reaches precision %.3f on the fit rows; using the most precise "
                "operating point instead (calib precision %.3f, recall %.3f)",
                name.replace("_", "-"),
                metrics["target_precision"],
                metrics[name]["calib"]["precision"],
                metrics[name]["calib"]["recall"],
            )


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section(ThresholdsConfig, params_file)
    scored = io.read_table(paths.SCORED, schemas.SCORED)
    n_buckets = len(io.read_json(paths.CALIBRATION_MODEL)["edges"]) + 1
    fitted = fit_policies(scored, n_buckets, cfg)
    metrics = metrics_of(scored, fitted)
    _warn_if_infeasible(metrics)
    io.write_json(
        {"per_bucket": fitted.thresholds.to_dict(), "single": fitted.baseline.to_dict()},
        paths.THRESHOLDS_MODEL,
    )
    rows = scored[fit_rows(scored)]
    io.write_csv(
        pr_curve_table(rows["score"].to_numpy(), rows["label"].to_numpy()),
        paths.plots_dir("thresholds") / "pr_curve.csv",
    )
    io.write_json(metrics, paths.metrics_file("thresholds"))
    return metrics
