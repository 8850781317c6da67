"""The threshold policies the threshold study races, fitted on one set of rows and judged on
another, and the aggregation of their per-seed rows: shared by the store study
(``nextbuy_lab.thresholds``) and the link-prediction one (``nextbuy_lab.thresholds_graph``)."""

from __future__ import annotations

import numpy as np

# ``unguarded``: the joint fit without its out-of-fold check (``bucket`` is what the stage serves)
POLICIES = ("single", "bucket", "mist", "unguarded")


def _t_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean ± t-based 95% half-width over the finite values; None (JSON null) with fewer than 2."""
    from scipy import stats

    values = values[np.isfinite(values)]
    if values.size < 2:
        return None, None
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return float(values.mean() - half), float(values.mean() + half)


def policy_decisions(fit: dict, n_buckets: int, test: dict, targets, thresholds_cfg) -> list[dict]:
    """Per target: the ``POLICIES`` fitted on the ``fit`` arrays (score, bucket,
    prob_calibrated, label) and their decisions on ``test`` (score, bucket, prob_calibrated);
    feasible when the joint fit and the single threshold both reach the target; ``kept`` when
    the out-of-fold check kept the per-bucket thresholds."""
    from nextbuy.config import with_changes
    from nextbuy.domain.decisions import cross_fitted_bucket_thresholds, fit_global_threshold

    support = thresholds_cfg.min_bucket_positives
    out = []
    for target in targets:
        joint = cross_fitted_bucket_thresholds(
            fit["score"], fit["bucket"], fit["label"], n_buckets,
            with_changes(thresholds_cfg, target_precision=target),
        )  # fmt: skip
        mist = fit_global_threshold(
            fit["prob_calibrated"], fit["label"], target, thresholds_cfg.n_candidates, support
        )
        check = joint.cross_fit  # None: no check ran, the joint fit is served as it is
        unguarded = joint.thresholds if check is None else check.per_bucket
        decisions = {
            "single": test["score"] >= joint.single.threshold,
            "bucket": joint.thresholds.decide(test["score"], test["bucket"]),
            "mist": test["prob_calibrated"] >= mist.threshold,
            "unguarded": unguarded.decide(test["score"], test["bucket"]),
        }
        out.append({"target": float(target), "feasible": bool(joint.feasible and joint.single.feasible),
                    "kept": check is None or check.kept_per_bucket, "decisions": decisions})  # fmt: skip
    return out


def aggregate(per_seed: list[dict[str, dict]], lifts, lift_key: str = "target_lift") -> dict:
    """Per estimator and target (``lifts``, named ``lift_key``): means over seeds, the precision
    CIs and the CI of the per-seed recall gain bucket/single − 1; the uncertainty coefficient
    over seeds; the first seed's uncertainty by history."""
    figures: dict = {"coefficient": {}, "by_history": {}}
    for name in per_seed[0]:
        rows = []
        for i, lift in enumerate(lifts):
            seeds = [run[name]["rows"][i] for run in per_seed]
            row = {lift_key: float(lift), "target": float(np.mean([r["target"] for r in seeds]))}
            row["feasible"] = all(r["feasible"] for r in seeds)
            for policy in POLICIES:
                for metric in ("recall", "precision"):
                    values = np.array([r[f"{policy}_{metric}"] for r in seeds])
                    row[f"{policy}_{metric}"] = float(values.mean())
                lo, hi = _t_interval(np.array([r[f"{policy}_precision"] for r in seeds]))
                row[f"{policy}_precision_ci"] = [lo, hi]
            # share of seeds whose out-of-fold check kept the per-bucket thresholds
            row["kept"] = float(np.mean([r["kept"] for r in seeds]))
            single = np.array([r["single_recall"] for r in seeds])
            for policy, prefix in (("bucket", "gain"), ("unguarded", "unguarded_gain")):
                other = np.array([r[f"{policy}_recall"] for r in seeds])
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain = np.where(single > 0, other / single - 1.0, np.nan)
                row[prefix] = float(np.nanmean(gain)) if np.isfinite(gain).any() else None
                row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = _t_interval(gain)
            rows.append(row)
        figures[name] = rows
        coefs = np.array([run[name]["coefficient"]["coef"] or np.nan for run in per_seed], dtype=float)
        lo, hi = _t_interval(coefs)
        mean = float(np.mean(coefs[np.isfinite(coefs)])) if np.isfinite(coefs).any() else None
        figures["coefficient"][name] = {"mean": mean, "ci95_over_seeds": [lo, hi]}
        figures["by_history"][name] = per_seed[0][name]["by_history"]
        if "error_rho" in per_seed[0][name]:
            rho = np.array([run[name]["error_rho"] for run in per_seed], dtype=float)
            figures.setdefault("error_rho", {})[name] = {
                "mean": float(np.nanmean(rho)),
                "ci95_over_seeds": list(_t_interval(rho)),
            }
    return figures
