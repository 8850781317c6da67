"""monitor's re-scoring of the recent versions on Spark (``nextbuy.model_card``): each
version scores the traffic that has matured on the executors (its serving bundle shared once per
executor process), each row turned into the pandas engine's per-row counts
(``model_card.maturity_columns``); Spark sums them per distinct score, and the AUC is the
Mann-Whitney rank sum over those scores in ascending order: ranges of scores (Spark's range
partitions) summed in parallel with a running sum inside each, and only one row per range
brought to the driver (``evaluation.rank_sum_auc`` adds them up). Every row counts, no row is
collected: the same rows, conversions, AUC and recall as the pandas engine."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nextbuy.config import SparkConfig
from nextbuy.domain.evaluation import rank_sum_auc
from nextbuy.domain.timeunits import DAY
from nextbuy.engines.spark import table
from nextbuy.engines.spark.session import session
from nextbuy.model_card import Measured, maturity_columns


def rank_sums(distinct: Any, score: str, masses: Sequence[tuple[str, str]], blocks: int) -> pd.DataFrame:
    """Per range of ascending scores of ``distinct`` (one row per distinct ``score``), in order:
    for the i-th (positive, negative) mass columns of ``masses``, ``within{i}`` (the sum of
    positive mass x (negative mass at lower scores in the range + half at the same score)),
    ``pos{i}`` and ``neg{i}`` (their sums): what ``evaluation.rank_sum_auc`` adds up."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ranged = distinct.repartitionByRange(max(blocks, 1), score).withColumn("block", F.spark_partition_id())
    lower = Window.partitionBy("block").orderBy(score).rowsBetween(Window.unboundedPreceding, -1)
    sums = []
    for i, (pos, neg) in enumerate(masses):
        below = F.coalesce(F.sum(F.col(neg).cast("double")).over(lower), F.lit(0.0))
        ranged = ranged.withColumn(f"within{i}", F.col(pos) * (below + F.lit(0.5) * F.col(neg)))
        sums += [
            F.sum(f"within{i}").alias(f"within{i}"),
            F.sum(F.col(pos).cast("double")).alias(f"pos{i}"),
            F.sum(F.col(neg).cast("double")).alias(f"neg{i}"),
        ]
    per_block = ranged.groupBy("block").agg(*sums).toPandas()
    return per_block.sort_values("block").reset_index(drop=True)


def _blocks(spark: Any) -> int:
    return int(spark.conf.get("spark.sql.shuffle.partitions", "8"))


def weighted_auc(frame: Any, score: str, label: str, weight: str | None = None) -> float | None:
    """``evaluation.soft_auc(label, score, weight)`` of a Spark DataFrame's columns (``label`` in
    [0, 1]; no ``weight``: 1 per row): the rows summed per distinct score, then ranked."""
    from pyspark.sql import functions as F

    w = F.lit(1.0) if weight is None else F.col(weight).cast("double")
    y = F.col(label).cast("double")
    distinct = frame.groupBy(score).agg(F.sum(w * y).alias("pos"), F.sum(w * (1.0 - y)).alias("neg"))
    ranks = rank_sums(distinct, score, [("pos", "neg")], _blocks(frame.sparkSession))
    return rank_sum_auc(ranks["within0"], ranks["pos0"], ranks["neg0"])


class OnSpark:
    """``model_card.mature_recent``'s measurer on Spark: the traffic table read into Spark (its
    rows stay there), each version scored and measured by :meth:`measured`."""

    def __init__(self, spark_cfg: SparkConfig, impressions: str | Path):
        self.spark = session(spark_cfg)
        self.log = table.read(self.spark, impressions).select(
            "source_id", "shown_id", "shown_at", "converted_at"
        )

    def scored(self, bundle: Any, now: pd.Timestamp, days: list[int]) -> Any:
        """The rows matured for the shortest of ``days``, scored by ``bundle`` on the executors,
        as ``maturity_columns``."""
        from pyspark.sql import functions as F

        get = table.shared(self.spark, bundle)

        def columns(batch: pd.DataFrame) -> pd.DataFrame:
            predictions = get().score(batch["source_id"].to_numpy(), batch["shown_id"].to_numpy())
            return maturity_columns(batch, predictions, now, days)

        def batches(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in parts:
                yield columns(table.as_pandas(batch))

        counts = [f"{c}{i} long" for i in range(len(days)) for c in ("rows", "conversions", "hits")]
        schema = ", ".join(["score double", *counts])
        newest = pd.Timestamp(now).value - int(min(days) * DAY.value)
        matured = self.log.where(F.col("shown_at") <= F.lit(newest))
        return matured.mapInPandas(batches, schema)

    def measured(self, bundle: Any, now: pd.Timestamp, days: list[int]) -> list[Measured]:
        """The matured measures of ``bundle`` on the traffic (``model_card.InProcess``'s), summed
        by Spark."""
        from pyspark.sql import functions as F

        n = len(days)
        counts = [f"{c}{i}" for i in range(n) for c in ("rows", "conversions", "hits")]
        distinct = (
            self.scored(bundle, now, days)
            .withColumns({f"negatives{i}": F.col(f"rows{i}") - F.col(f"conversions{i}") for i in range(n)})
            .groupBy("score")
            .agg(*[F.sum(c).alias(c) for c in counts + [f"negatives{i}" for i in range(n)]])
            .persist()
        )
        try:
            totals = distinct.agg(*[F.sum(c).alias(c) for c in counts]).first()
            masses = [(f"conversions{i}", f"negatives{i}") for i in range(n)]
            ranks = rank_sums(distinct, "score", masses, _blocks(self.spark))
        finally:
            distinct.unpersist()
        out = []
        for i, m in enumerate(days):
            rows, conversions, hits = (int(totals[f"{c}{i}"] or 0) for c in ("rows", "conversions", "hits"))
            auc = rank_sum_auc(ranks[f"within{i}"], ranks[f"pos{i}"], ranks[f"neg{i}"])
            recall = hits / conversions if conversions else None
            out.append(Measured(int(m), rows, conversions, auc, recall))
        return out
