"""What "the same answers" means between the engines: every table the Spark engine writes equals
the pandas engine's, ids, counts, categories and times exactly and floats to ``RTOL`` (sums and
means are added in another order), metrics and alerts the same way."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import yaml

from nextbuy import paths
from nextbuy.config import with_changes

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
