"""thresholds: one threshold per uncertainty bucket for the precision target,
fitted jointly on matured calibration pairs, beside the single-threshold baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import ThresholdsConfig, load_section
from nextbuy.domain.decisions import (
    Thresholds,
    fit_bucket_thresholds,
    fit_global_threshold,
    pr_curve_table,
    precision_recall,
)
from nextbuy.domain.evaluation import evaluation_labels, fit_rows
from nextbuy.mlops import io, schemas


def fit(scored: pd.DataFrame, n_buckets: int, cfg: ThresholdsConfig) -> tuple[Thresholds, Thresholds]:
    """Pure core: (per-bucket thresholds, single-threshold baseline as the same type)."""
    rows = scored[fit_rows(scored)]
    score, bucket, label = rows["score"].to_numpy(), rows["bucket"].to_numpy(), rows["label"].to_numpy()
    per_bucket = fit_bucket_thresholds(
        score, bucket, label, n_buckets, cfg.target_precision, cfg.n_candidates
    )
    single = fit_global_threshold(score, label, cfg.target_precision, cfg.n_candidates)
    baseline = Thresholds(thresholds=np.full(n_buckets, single), target_precision=cfg.target_precision)
    return per_bucket, baseline


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


def run(params_file: str = "params.yaml") -> dict:
    cfg = load_section("thresholds", params_file)
    scored = io.read_table(paths.SCORED, schemas.SCORED)
    n_buckets = len(io.read_json(paths.CALIBRATION_MODEL)["edges"]) + 1
    per_bucket, baseline = fit(scored, n_buckets, cfg)
    metrics = {
        "target_precision": cfg.target_precision,
        "thresholds": per_bucket.to_dict()["thresholds"],
        "single_threshold": baseline.to_dict()["thresholds"][0],
        **evaluate(scored, per_bucket, baseline),
    }
    io.write_json({"per_bucket": per_bucket.to_dict(), "single": baseline.to_dict()}, paths.THRESHOLDS_MODEL)
    rows = scored[fit_rows(scored)]
    io.write_csv(
        pr_curve_table(rows["score"].to_numpy(), rows["label"].to_numpy()),
        paths.plots_dir("thresholds") / "pr_curve.csv",
    )
    io.write_json(metrics, paths.metrics_file("thresholds"))
    return metrics
