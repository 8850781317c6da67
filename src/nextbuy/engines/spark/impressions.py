"""ingest's labelled impressions kept on Spark from the labels to the written table (``engine.kind:
spark``, raw logs read on Spark): the session split of each row (``nextbuy.domain.split``, the
pandas engine's own function on each batch), the sort by (shown_at, impression_id), the checks of
``finalise`` and the figures of the metrics and of ingest's meta (rows per split, conversions per
split, the span of the rows a model learns from) are Spark jobs; the sorted rows are written once
as parquet parts, which the stage streams, row group by row group, into the one parquet file of
``paths.IMPRESSIONS`` (``table.merge_parts``). The stage's process holds one row group at
a time, never the table.

A check that fails (a product id outside the products table, an event before its impression, a
click after the conversion) leaves the words to the pandas engine: the rows are read into the
stage's process (:meth:`SparkImpressions.to_pandas`) and ``finalise`` refuses them naming the
first offending rows, as on the pandas engine."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nextbuy.config import SplitConfig
from nextbuy.domain import events
from nextbuy.domain import split as session_split
from nextbuy.engines.spark import table
from nextbuy.mlops import schemas

SPLIT_SCHEMA = ", ".join([f"{c} long" for c in events.LOG_COLUMNS] + ["split string"])
# one row of the written table: its columns, dtypes and parquet schema
EXAMPLE = pd.DataFrame(
    {
        **{c: np.zeros(1, np.int64) for c in ("impression_id", "source_id", "shown_id")},
        **{c: np.zeros(1, "datetime64[ns]") for c in table.TIME_COLUMNS},
        "split": np.array(["train"], dtype=object),
    }
)[list(schemas.IMPRESSIONS.columns)]


@dataclass
class SparkImpressions:
    """The split, sorted impressions as parquet parts in ``folder`` (removed by :meth:`release`),
    with the figures the stage needs of them."""

    folder: Path
    files: list[Path]
    rows: int
    sizes: dict[str, int]  # rows per split present
    converted: dict[str, int]  # rows with a conversion per split present
    learned_span: tuple[int | None, int | None]  # first and last shown_at (ns) of the non-test rows
    refused: bool  # a check of ``finalise`` fails on some row
    batch_rows: int  # rows the stage's process reads of the parts at a time
    columns: list[str] = field(default_factory=lambda: list(schemas.IMPRESSIONS.columns))

    def release(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def batches(self) -> Iterator[pd.DataFrame]:
        """The rows, in order, ``batch_rows`` at a time, times as times."""
        for file in self.files:
            for batch in pq.ParquetFile(file).iter_batches(self.batch_rows):
                yield table.as_pandas(batch.to_pandas())

    def to_pandas(self) -> pd.DataFrame:
        """Every row in this process (a refusal's words only)."""
        parts = list(self.batches())
        frame = pd.concat(parts, ignore_index=True) if parts else EXAMPLE.iloc[:0]
        return frame[self.columns].astype(EXAMPLE.dtypes.to_dict())

    def write(self, path: str | Path) -> int:
        """The one parquet file at ``path`` (atomic), checked by ``schemas.IMPRESSIONS``."""
        return table.merge_parts(
            self.files, Path(path), schemas.IMPRESSIONS, EXAMPLE, batch_rows=self.batch_rows
        )


def with_split(labelled: Any, products: pd.DataFrame, split: SplitConfig) -> Any:
    """``labelled`` (the Spark ``events.LABEL_SCHEMA``) with each row's session split, by
    ``session_split.assign_split`` of its source product's key and its day."""
    keys = table.shared(labelled.sparkSession, products.set_index("product_id")["product_key"])

    def split_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            key = keys().reindex(batch["source_id"].to_numpy()).to_numpy()
            shown = batch["shown_at"].to_numpy(np.int64).view("datetime64[ns]")
            which = session_split.assign_split(key, shown, split.test_share, split.calib_share, split.seed)
            yield batch.assign(split=which)

    return labelled.select(*events.LOG_COLUMNS).mapInPandas(split_batches, SPLIT_SCHEMA)


def problems(products: pd.DataFrame) -> Any:
    """A Spark column: 1 where ``finalise`` refuses the row (unknown product, an event before
    the impression, a click or cart after the conversion), else 0."""
    from pyspark.sql import functions as F

    n = len(products)
    has = {c: F.col(c) != table.NAT for c in table.TIME_COLUMNS}
    if np.array_equal(products["product_id"].to_numpy(), np.arange(n)):
        unknown = ~F.col("source_id").between(0, n - 1) | ~F.col("shown_id").between(0, n - 1)
    else:  # ids not 0..n-1: the pandas check decides
        unknown = F.lit(True)
    early = [has[c] & (F.col(c) < F.col("shown_at")) for c in ("clicked_at", "carted_at", "converted_at")]
    late = [
        has[c] & has["converted_at"] & (F.col(c) > F.col("converted_at")) for c in ("clicked_at", "carted_at")
    ]
    bad = unknown
    for cond in (*early, *late):
        bad = bad | cond
    return F.when(bad, 1).otherwise(0)


def finish(
    labelled: Any, products: pd.DataFrame, split: SplitConfig, near: Path, batch_rows: int
) -> SparkImpressions:
    """The labelled impressions split, sorted by (shown_at, impression_id) and written once as
    parquet parts in a folder beside ``near``; their figures from one aggregate of the parts
    (``batch_rows``: rows the stage's process later reads of the parts at a time)."""
    from pyspark.sql import functions as F

    folder = table.scratch(near, ".spark-impressions.")  # outlives this call: released later
    try:
        rows = with_split(labelled, products, split).orderBy("shown_at", "impression_id")
        rows.write.mode("overwrite").parquet(str(folder / "rows"))
        files = sorted((folder / "rows").glob("part-*.parquet"))
        written = labelled.sparkSession.read.parquet(str(folder / "rows"))
        learning = F.col("split") != "test"
        none = F.lit(table.NAT)
        figures = (
            written.groupBy("split")
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.when(F.col("converted_at") != table.NAT, 1).otherwise(0)).alias("converted"),
                F.coalesce(F.min(F.when(learning, F.col("shown_at"))), none).alias("first"),
                F.coalesce(F.max(F.when(learning, F.col("shown_at"))), none).alias("last"),
                F.sum(problems(products)).alias("refused"),
            )
            .toPandas()
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    figures = figures.sort_values("split", ignore_index=True)
    first = figures["first"][figures["first"] != table.NAT]
    last = figures["last"][figures["last"] != table.NAT]
    return SparkImpressions(
        folder,
        files,
        int(figures["rows"].sum()),
        {str(s): int(n) for s, n in zip(figures["split"], figures["rows"], strict=True)},
        {str(s): int(n) for s, n in zip(figures["split"], figures["converted"], strict=True)},
        (int(first.min()) if len(first) else None, int(last.max()) if len(last) else None),
        bool(figures["refused"].sum() > 0),
        batch_rows,
    )
