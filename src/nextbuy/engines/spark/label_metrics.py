"""label_delay's metrics and plot tables from the weighted rows in Spark: the same numbers the
pandas engine's ``summarise``, ``weight_profile``, ``flip_table`` and ``engagement_summary``
give (sums and means to float rounding; quantiles exact: ``table.exact_quantiles``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import LabelDelayConfig
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain import delay
from nextbuy.engines.spark.table import exact_quantiles
from nextbuy.mlops import io


def _mean(value: Any) -> float | None:
    return None if value is None else float(value)


def ipw_scale(rows: Any, cfg: LabelDelayConfig) -> float:
    """What ``importance_ipw``'s weights are divided by: their mean over the train rows (1
    without normalising); refused when every training conversion's weight is clipped."""
    from pyspark.sql import functions as F

    train = rows.where(F.col("split") == "train")
    positive = F.col("label") == 1
    got = train.agg(
        F.sum(positive.cast("long")).alias("positives"),
        F.sum((positive & (F.col("weight_importance_ipw") >= cfg.max_weight)).cast("long")).alias("clipped"),
        F.avg("weight_importance_ipw").alias("mean"),
    ).first()
    problem = delay.ipw_problem(int(got["positives"] or 0), int(got["clipped"] or 0), cfg.max_weight)
    if problem is not None:
        raise io.DataError(paths.IMPRESSIONS, problem, "converted_at")
    return max(float(got["mean"]), 1e-12) if cfg.normalise_weights else 1.0


def _weight_summary(train: Any, column: str) -> dict:
    from pyspark.sql import functions as F

    w = F.col(column)
    got = train.agg(
        F.count(w).alias("n"),
        F.sum(w).alias("s"),
        F.sum(w * w).alias("s2"),
        F.max(w).alias("max"),
        F.avg((w == 0).cast("double")).alias("zero"),
    ).first()
    n = int(got["n"])
    s, s2 = float(got["s"] or 0.0), float(got["s2"] or 0.0)
    ess = s * s / s2 if s2 > 0 else 0.0
    q = exact_quantiles(train, column, [0.01, 0.5, 0.99]) if n else np.zeros(3)
    return {
        "ess": ess,
        "ess_share": ess / max(n, 1),
        "mean": s / n if n else 0.0,
        "p01": float(q[0]),
        "median": float(q[1]),
        "p99": float(q[2]),
        "max": float(got["max"]) if n else 0.0,
        "share_zero": float(got["zero"]) if n else 0.0,
    }


def summary(rows: Any, cfg: LabelDelayConfig, family: str, columns: tuple[str, ...]) -> dict:
    """label_delay's ``summarise`` (``rows``' ``weight_importance_ipw`` already rescaled)."""
    from pyspark.sql import functions as F

    train = rows.where(F.col("split") == "train")
    everything = rows.agg(F.avg("label").alias("observed"), F.avg("expected").alias("corrected")).first()
    recent = (
        rows.where(F.col("elapsed_days") < 7)
        .agg(F.avg("label").alias("observed"), F.avg("expected").alias("corrected"))
        .first()
    )
    sums = {
        f"{part}_{m}": F.sum(expr)
        for m in WEIGHTING_METHODS
        for part, expr in (("wt", F.col(f"weight_{m}") * F.col(f"target_{m}")), ("w", F.col(f"weight_{m}")))
    }
    got = train.agg(
        F.count("label").alias("n"),
        F.avg("label").alias("observed"),
        F.avg((F.col("weight_importance_ipw") >= cfg.max_weight).cast("double")).alias("clipped"),
        *[expr.alias(name) for name, expr in sums.items()],
    ).first()

    def rate(m: str) -> float | None:
        w = float(got[f"w_{m}"] or 0.0)
        return float(got[f"wt_{m}"]) / w if w > 0 else None

    return {
        "delay_family": family,
        "signals": list(columns),
        "observed_positivity": float(everything["observed"]),
        "corrected_positivity": float(everything["corrected"]),
        "last_7_days": {
            "observed_positivity": _mean(recent["observed"]),
            "corrected_positivity": _mean(recent["corrected"]),
        },
        "train": {
            "impressions": int(got["n"]),
            "observed_positivity": float(got["observed"]),
            "weighted_positivity": {m: rate(m) for m in WEIGHTING_METHODS},
            "share_clipped_ipw": float(got["clipped"]) if not cfg.normalise_weights else None,
        },
        "weights": {m: _weight_summary(train, f"weight_{m}") for m in WEIGHTING_METHODS},
    }


def weight_profile(rows: Any, n_bins: int = 20) -> pd.DataFrame:
    """label_delay's ``weight_profile``: quantile bins of elapsed days (right-closed, the first
    closed on both sides, as ``pd.cut(..., include_lowest=True)``)."""
    from pyspark.sql import functions as F

    edges = np.unique(exact_quantiles(rows, "elapsed_days", np.linspace(0, 1, n_bins + 1).tolist()))
    e = F.col("elapsed_days")
    bin_of = F.when(e <= float(edges[min(1, len(edges) - 1)]), F.lit(0))
    for i in range(1, len(edges) - 1):
        bin_of = bin_of.when(e <= float(edges[i + 1]), F.lit(i))
    table = (
        rows.where((e >= float(edges[0])) & (e <= float(edges[-1])))
        .withColumn("bin", bin_of)
        .groupBy("bin")
        .agg(
            F.avg("elapsed_days").alias("elapsed_days"),
            F.avg("label").alias("observed_positivity"),
            F.avg("expected").alias("corrected_positivity"),
            F.avg("weight_importance_ipw").alias("mean_ipw_weight"),
            F.count("label").alias("count"),
        )
        .toPandas()
    )
    return table.sort_values("bin").drop(columns="bin").reset_index(drop=True)


def flip_table(rows: Any) -> pd.DataFrame:
    """``delay.flip_table`` of the observed negatives (engagement x elapsed-days bin)."""
    from pyspark.sql import functions as F

    table = (
        rows.where(F.col("label") == 0)
        .groupBy("engagement", "elapsed_bin")
        .agg(
            F.avg("elapsed_days").alias("elapsed_days"),
            F.avg("p_flip").alias("estimated_flip"),
            F.count("p_flip").alias("count"),
        )
        .toPandas()
    )
    return table.sort_values(["engagement", "elapsed_days"]).reset_index(drop=True)


def engagement_summary(rows: Any) -> dict:
    """label_delay's ``engagement_summary``: mean P(convert), median delay per engagement level."""
    from pyspark.sql import functions as F

    means = (
        rows.groupBy("engagement").agg(F.avg("p_convert").alias("p")).toPandas().set_index("engagement")["p"]
    )
    return {
        name: {
            "p_convert": float(means[name]),
            "median_delay_days": float(
                exact_quantiles(rows.where(F.col("engagement") == name), "median_delay", [0.5])[0]
            ),
        }
        for name in delay.ENGAGEMENT_LEVELS
        if name in means.index
    }


def metrics(
    rows: Any, scale: float, models: dict[str, delay.DelayModel], cfg: LabelDelayConfig
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The metrics, the positivity-by-elapsed plot table and the flip table."""
    from pyspark.sql import functions as F

    scaled = rows.withColumn("weight_importance_ipw", F.col("weight_importance_ipw") / F.lit(scale))
    model = models["importance"]
    out = summary(scaled, cfg, model.family, model.columns)
    out["by_engagement"] = engagement_summary(scaled)
    return out, weight_profile(scaled), flip_table(scaled)
