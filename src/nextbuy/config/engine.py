"""The params.yaml section ``engine``: which engine runs the data-heavy parts of the stages
(pandas in this process, or Apache Spark on a local or remote cluster)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nextbuy.config.base import Section


class SparkConfig(Section):
    # local[N] (N cores of this machine), spark://host:port (standalone), yarn, k8s://...,
    # or sc://host:port (Spark Connect)
    master: str = Field(min_length=1)
    # rows per Arrow batch handed to each pandas function on an executor (bounds its memory)
    batch_rows: int = Field(ge=1000)
    # monitor: scored rows per window drawn for the Evidently dashboard (and the reference)
    dashboard_rows: int = Field(ge=100)
    # spark.* settings passed to the session as they stand (memory, cores, shuffle partitions)
    conf: dict[str, str]


class EngineConfig(Section):
    kind: Literal["pandas", "spark"]
    spark: SparkConfig
