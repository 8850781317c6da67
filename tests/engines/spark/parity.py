"""What "the same answers" means between the engines: every table the Spark engine writes equals
the pandas engine's, ids, counts, categories and times exactly and floats to ``RTOL`` (sums and
means are added in another order), metrics and alerts the same way."""

from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from nextbuy import paths
from nextbuy.config import with_changes
from nextbuy.engines.spark import logs as spark_logs

RTOL = 1e-9

# label_delay's files, compared between the engines
LABEL_DELAY_OUTPUTS = (
    paths.WEIGHTED_IMPRESSIONS,
    paths.DELAY_MODEL,
    paths.metrics_file("label_delay"),
    paths.plots_dir("label_delay") / "positivity_by_elapsed.csv",
    paths.plots_dir("label_delay") / "flip_by_engagement.csv",
)


def same_frames(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), rtol=RTOL, atol=1e-12)


def same_values(a, b, where: str = "") -> None:
    """Nested dicts/lists equal, floats to RTOL."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same_values(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_values(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, float | int), where
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b)), (
            where,
            a,
            b,
        )
    else:
        assert a == b, (where, a, b)


def ingested_store(root: Path, params: dict) -> dict:
    """A store in ``root`` (the cwd afterwards): ingested, with its traffic simulated."""
    from nextbuy.stages import ingest, traffic

    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    ingest.run()
    traffic.run()
    return params


def set_engine(params: dict, kind: str, spark_cfg) -> None:
    """params.yaml of the cwd with ``engine.kind`` and ``engine.spark`` (the test's session)."""
    params["engine"] = {"kind": kind, "spark": spark_cfg.model_dump()}
    Path("params.yaml").write_text(yaml.safe_dump(params))


def label_delay_on_both(params: dict, spark_cfg, keep: Path) -> None:
    """Run label_delay on pandas (its outputs copied under ``keep``), then on Spark, in the cwd."""
    from nextbuy.stages import label_delay

    set_engine(params, "pandas", spark_cfg)
    label_delay.run()
    for out in LABEL_DELAY_OUTPUTS:
        (keep / out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, keep / out)
    set_engine(params, "spark", spark_cfg)
    label_delay.run()


def assert_label_delay_same(keep: Path) -> None:
    import json

    same_frames(
        pd.read_parquet(keep / paths.WEIGHTED_IMPRESSIONS), pd.read_parquet(paths.WEIGHTED_IMPRESSIONS)
    )
    for csv in LABEL_DELAY_OUTPUTS[3:]:
        same_frames(pd.read_csv(keep / csv), pd.read_csv(csv))
    same_values(
        json.loads((keep / LABEL_DELAY_OUTPUTS[2]).read_text()),
        json.loads(Path(LABEL_DELAY_OUTPUTS[2]).read_text()),
    )
    same_values(
        json.loads((keep / paths.DELAY_MODEL).read_text()), json.loads(Path(paths.DELAY_MODEL).read_text())
    )


def engine(kind: str, base, spark_cfg):
    return with_changes(base, kind=kind, spark=spark_cfg.model_dump())


# ingest's and traffic's files, compared between the engines
INGEST_OUTPUTS = (paths.PRODUCTS, paths.EDGES, paths.IMPRESSIONS, paths.TRAFFIC_IMPRESSIONS)
INGEST_JSON = (
    paths.INGEST_META,
    paths.metrics_file("ingest"),
    paths.TRAFFIC_META,
    paths.metrics_file("traffic"),
)


def raw_logs(params: dict, days_after: float, form: str = "parquet") -> dict:
    """The simulated store of ``params`` written as raw logs under inputs/store (cwd), up to
    ``days_after`` past its snapshot; ``params`` with ``ingest.source: events`` reading them."""
    from nextbuy.config import IngestConfig
    from nextbuy.data.simulator import simulate_world
    from nextbuy.data.store_logs import simulated_logs, write_logs

    cfg = IngestConfig.model_validate(params["ingest"])
    snapshot = simulate_world(cfg.simulator, cfg.seed).snapshot
    logs = simulated_logs(cfg.simulator, cfg.seed, snapshot + pd.Timedelta(days=days_after))
    written = write_logs(logs, "inputs/store", form)
    params = copy.deepcopy(params)
    params["ingest"] |= {
        "source": "events",
        "snapshot": str(snapshot),
        "catalogue_path": written["catalogue"],
    }
    params["ingest"]["events"] |= {f"{n}_path": written[n] for n in ("orders", "impressions", "interactions")}
    return params


def ingest_on_both(params: dict, spark_cfg, keep: Path) -> None:
    """Run ingest and traffic on pandas (their outputs copied under ``keep``), then on Spark, in the cwd."""
    from nextbuy.stages import ingest, traffic

    for kind in ("pandas", "spark"):
        set_engine(params, kind, spark_cfg)
        ingest.run()
        traffic.run()
        if kind == "pandas":
            for out in INGEST_OUTPUTS + INGEST_JSON:
                (keep / out).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(out, keep / out)


def assert_ingest_same(keep: Path) -> None:
    """Every table and metric of ingest and traffic the same on both engines (floats exactly too:
    the graph's weights are counts)."""
    import json

    for table in INGEST_OUTPUTS:
        pd.testing.assert_frame_equal(pd.read_parquet(keep / table), pd.read_parquet(table), check_exact=True)
    for doc in INGEST_JSON:
        assert json.loads((keep / doc).read_text()) == json.loads(Path(doc).read_text()), doc


def awkward_edges(seed: int = 0, n: int = 1500) -> pd.DataFrame:
    """Edges over 150 products with duplicates, self-loops, times (one missing) and float weights."""
    rng = np.random.default_rng(seed)
    at = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s")
    frame = pd.DataFrame(
        {
            "src": rng.integers(0, 150, n),
            "dst": rng.integers(0, 150, n),
            "time": at.strftime("%Y-%m-%d %H:%M:%S"),
            "weight": rng.integers(1, 1000, n) / 7,
        }
    )
    frame.loc[4, "time"] = None
    return frame


def edge_list_ingest_on_both(params: dict, spark_cfg, keep: Path) -> None:
    """Run ingest on pandas (its outputs copied under ``keep``), then on Spark, in the cwd."""
    from nextbuy.stages import ingest

    for kind in ("pandas", "spark"):
        set_engine(params, kind, spark_cfg)
        ingest.run()
        if kind == "pandas":
            shutil.copytree("data/ingested", keep / "ingested")
            shutil.copy(paths.metrics_file("ingest"), keep / "ingest.json")


def assert_edge_list_ingest_same(keep: Path) -> None:
    """ingest's tables and metrics the same on both engines (an edge list without weights: counts)."""
    import json

    for table in (paths.PRODUCTS, paths.EDGES, paths.IMPRESSIONS):
        pd.testing.assert_frame_equal(
            pd.read_parquet(keep / "ingested" / table.name), pd.read_parquet(table), check_exact=True
        )
    assert json.loads((keep / "ingest.json").read_text()) == json.loads(
        paths.metrics_file("ingest").read_text()
    )


def record_spark_reads(monkeypatch) -> list[bool]:
    """From now on, each call of the raw-log reader on Spark (``spark_logs.read_on_spark``) appends
    whether it read the logs itself (True) or left them to the pandas reader (False)."""
    read, on_spark = spark_logs.read_on_spark, []

    def read_and_record(*args, **kwargs):
        logs = read(*args, **kwargs)
        on_spark.append(logs is not None)
        return logs

    monkeypatch.setattr(spark_logs, "read_on_spark", read_and_record)
    return on_spark
