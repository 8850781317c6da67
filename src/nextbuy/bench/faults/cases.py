"""The cases of ``nextbuy bench faults``: what a hostile or careless user does to the
pipeline, and what a good answer names.

Each bad-input case runs one stage the way ``dvc repro`` and Airflow run it, on a tiny
project whose every stage has run once. ``fragments`` are what the error must name (the
file, the column or params key, a value from the first offending rows); matching ignores
case and line wrapping. ``expect="warn"`` marks the cases the field's convention cleans and
counts (exit 0 with a warning naming the count) instead of refusing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy import paths, yaml_io
from nextbuy.bench.faults.base import Case, dropping, setting
from nextbuy.bench.faults.events import EVENT_CASES, ORDERS_ONLY_CASES
from nextbuy.bench.faults.inputs import EDGE_CASES, LOG_CASES

__all__ = ["ARTIFACT_CASES", "CASES", "PARAMS_CASES"]


# ---- params -----------------------------------------------------------------------------


def _p(name: str, stage: str, fragments: tuple[str, ...], **changes: object) -> Case:
    return Case(name, "params", stage, fragments, params=setting(**changes))


PARAMS_CASES = [
    _p("snapshot not a date", "ingest", ("ingest", "snapshot", "not a date"), ingest__snapshot="not a date"),
    _p("negative catalogue", "ingest", ("n_products",), ingest__simulator__n_products=-5),
    _p("split shares over 1", "ingest", ("calib_share", "test_share"), ingest__split__test_share=0.9),
    _p("unknown source", "ingest", ("source", "csv"), ingest__source="csv"),
    _p("edge list without a path", "ingest", ("graph_path",), ingest__source="edge_list"),
    _p(
        "graph file missing",
        "ingest",
        ("no-such-graph.csv",),
        ingest__source="edge_list",
        ingest__graph_path="no-such-graph.csv",
    ),
    _p("zero max weight", "label_delay", ("max_weight",), label_delay__max_weight=0),
    _p("unknown delay family", "label_delay", ("delay_family", "gamma"), label_delay__delay_family="gamma"),
    _p("negative wait", "label_delay", ("wait_days",), label_delay__wait_days=-1),
    _p("tiny fit sample", "label_delay", ("fit_sample_rows",), label_delay__fit_sample_rows=5),
    _p("unknown engine", "label_delay", ("kind", "dask"), engine__kind="dask"),
    _p("empty spark master", "label_delay", ("master",), engine__spark__master=""),
    _p(
        "spark conf not text",
        "label_delay",
        ("conf", "spark.driver.memory"),
        engine__spark__conf={"spark.driver.memory": 2},
    ),
    _p("typo key", "train", ("epochz",), train__epochz=3),
    _p("zero epochs", "train", ("epochs",), train__epochs=0),
    _p("text learning rate", "train", ("lr", "fast"), train__lr="fast"),
    _p("unknown uncertainty", "train", ("uncertainty", "bayes"), train__uncertainty="bayes"),
    _p("zero embedding", "train", ("embedding_dim",), train__embedding_dim=0),
    _p("1000 buckets", "calibrate", ("n_buckets=1000", "min_bucket_size"), calibrate__n_buckets=1000),
    _p("zero buckets", "calibrate", ("n_buckets",), calibrate__n_buckets=0),
    _p("negative maturity", "calibrate", ("maturity_days",), calibrate__maturity_days=-3),
    _p("precision above 1", "thresholds", ("target_precision",), thresholds__target_precision=1.5),
    _p("negative tolerance", "deploy", ("tolerance",), deploy__tolerance=-1),
    _p("confidence above 1", "deploy", ("confidence",), deploy__confidence=1.5),
    _p("unknown metric", "deploy", ("compare_metrics", "foo"), deploy__compare_metrics=["foo"]),
    _p("negative card degree", "deploy", ("card_low_out_degree",), deploy__card_low_out_degree=-1),
    _p("zero traffic days", "traffic", ("days",), traffic__days=0),
    _p("unknown drift", "traffic", ("kind", "earthquake"), traffic__drift__kind="earthquake"),
    _p("tolerance list", "monitor", ("relative_tolerance",), monitor__relative_tolerance=[0.3, -1]),
    _p("zero window", "monitor", ("window_days",), monitor__window_days=0),
    _p("no card maturities", "monitor", ("matured_days",), monitor__matured_days=[]),
    _p("card maturity of 0 days", "monitor", ("matured_days",), monitor__matured_days=[0, 7]),
    Case("section missing", "params", "train", ("train",), params=dropping("train")),
    # YAML's types taken as written: no coercion of a boolean or a quoted number, no infinity.
    _p("boolean epochs", "train", ("epochs", "integer"), train__epochs=True),
    _p("quoted precision", "thresholds", ("target_precision", "0.3"), thresholds__target_precision="0.3"),
    _p("infinite learning rate", "train", ("lr", "finite"), train__lr=float("inf")),
    _p(
        "catalogue size as 1e6",
        "ingest",
        ("n_products", "1e6", "1000000"),
        ingest__simulator__n_products="1e6",
    ),
]


# ---- damaged upstream outputs -------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = (root / path).read_bytes()
        (root / path).write_bytes(data[: int(len(data) * keep)])

    return damage


def _write(path: Path, content: str | bytes) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / path).write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


def _nan_moments(root: Path) -> None:
    with np.load(root / paths.GNN_MOMENTS) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    first = next(k for k, v in arrays.items() if v.dtype.kind == "f" and v.ndim == 2)
    arrays[first][0, 0] = np.nan
    with (root / paths.GNN_MOMENTS).open("wb") as f:
        np.savez(f, **arrays)


def _delete(path: Path) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        import shutil

        target = root / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


def _drop_column(path: Path, column: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        pd.read_parquet(root / path).drop(columns=column).to_parquet(root / path)

    return damage


def _a(name: str, stage: str, damage: Callable[[Path], None], fragments: tuple[str, ...]) -> Case:
    return Case(name, "artifact", stage, fragments, files=damage, single=True)


CORRUPT_SNAPSHOT = "0badc0de-0000-4000-8000-000000000000.json"  # a name Evidently lists


def _corrupt_snapshot(root: Path) -> None:
    """A truncated snapshot in the Evidently workspace, as a process killed while writing one left it."""
    workspace = root / yaml_io.load((root / "params.yaml").read_text())["monitor"]["workspace"]
    folder = next(workspace.glob("*/snapshots"))
    data = next(folder.glob("*.json")).read_bytes()
    (folder / CORRUPT_SNAPSHOT).write_bytes(data[: len(data) // 2])


ARTIFACT_CASES = [
    _a("truncated products", "label_delay", _truncate(paths.PRODUCTS), ("products.parquet",)),
    _a(
        "impressions without split",
        "label_delay",
        _drop_column(paths.IMPRESSIONS, "split"),
        ("impressions.parquet", "'split'"),
    ),
    _a("weights file deleted", "train", _delete(paths.WEIGHTED_IMPRESSIONS), ("impressions.parquet",)),
    _a("delay model not JSON", "monitor", _write(paths.DELAY_MODEL, "{not json"), ("delay_model.json",)),
    _a("truncated moments", "calibrate", _truncate(paths.GNN_MOMENTS), ("moments.npz",)),
    _a("NaN moments (calibrate)", "calibrate", _nan_moments, ("moments.npz", "NaN")),
    Case(  # the drift drill reads the moments
        "NaN moments (traffic drill)",
        "artifact",
        "traffic",
        ("moments.npz", "NaN"),
        params=setting(traffic__drift__kind="bucket_shift"),
        files=_nan_moments,
        single=True,
    ),
    _a("scored rows garbage", "thresholds", _write(paths.SCORED, b"\x00" * 64), ("scored.parquet",)),
    _a("truncated moments (deploy)", "deploy", _truncate(paths.GNN_MOMENTS), ("moments.npz",)),
    _a("NaN moments (deploy)", "deploy", _nan_moments, ("moments.npz", "NaN")),
    _a(
        "calibration corrupt",
        "deploy",
        _write(paths.CALIBRATION_MODEL, '{"buckets": 3'),
        ("calibration.json",),
    ),
    _a("thresholds empty object", "deploy", _write(paths.THRESHOLDS_MODEL, "{}"), ("thresholds.json",)),
    _a("artifact store deleted", "deploy", _delete(Path("mlartifacts")), ("mlartifacts",)),
    _a("traffic garbage", "monitor", _write(paths.TRAFFIC_IMPRESSIONS, "nope"), ("impressions.parquet",)),
    _a("traffic meta missing", "monitor", _delete(paths.TRAFFIC_META), ("meta.json",)),
    Case(  # set aside with a warning naming it; this and later monitor runs succeed
        "truncated Evidently snapshot",
        "artifact",
        "monitor",
        (CORRUPT_SNAPSHOT, "set aside"),
        files=_corrupt_snapshot,
        expect="warn",
        single=True,
    ),
]

# ---- a stage run by hand (`nextbuy <stage>`): as careful as dvc repro and make run ----------


def _params_text(edit: Callable[[str], str]) -> Callable[[Path], None]:
    """params.yaml as text, edited (what a YAML dump cannot write: a key twice, a tab)."""

    def damage(root: Path) -> None:
        path = root / "params.yaml"
        path.write_text(edit(path.read_text()))

    return damage


def _key_twice(text: str) -> str:
    return text.replace("train:\n", "train:\n  epochs: 1\n  epochs: 2\n", 1)


def _tab_indent(text: str) -> str:
    return text.replace("train:\n  ", "train:\n\t", 1)


def _yaml_cases(by_hand: bool) -> list[Case]:
    how = " (by hand)" if by_hand else ""
    return [
        Case(
            f"a key twice in params.yaml{how}",
            "params",
            "train",
            ("params.yaml", "epochs"),
            files=_params_text(_key_twice),
            by_hand=by_hand,
        ),
        Case(
            f"params.yaml indented with a tab{how}",
            "params",
            "train",
            # the stage: params.yaml:LINE:COLUMN and what is there; DVC: "line L, column C"
            ("params.yaml:", "a tab") if by_hand else ("params.yaml", "line", "column"),
            files=_params_text(_tab_indent),
            by_hand=by_hand,
        ),
    ]


# The Spark engine where its master or its Java cannot be reached: one line naming the setting.
UNREACHABLE_MASTER = "spark://127.0.0.1:9"  # the discard port: nothing listens there
SPARK_CASES = [
    Case(
        f"unreachable Spark master{how}",
        "params",
        "label_delay",
        ("engine.spark.master", UNREACHABLE_MASTER, "local[2]"),
        params=setting(engine__kind="spark", engine__spark__master=UNREACHABLE_MASTER),
        by_hand=by_hand,
    )
    for how, by_hand in (("", False), (" (by hand)", True))
] + [
    Case(
        f"JAVA_HOME pointing nowhere{how}",
        "params",
        "label_delay",
        ("JAVA_HOME", "/nonexistent/jdk"),
        params=setting(engine__kind="spark", engine__spark__master="local[1]"),
        env={"JAVA_HOME": "/nonexistent/jdk"},
        by_hand=by_hand,
    )
    for how, by_hand in (("", False), (" (by hand)", True))
]

# Every params case again, run by hand: the stage command alone refuses as dvc repro does.
BY_HAND_CASES = [
    *[
        Case(f"{c.name} (by hand)", c.group, c.stage, c.fragments, params=c.params, by_hand=True)
        for c in PARAMS_CASES
    ],
    *_yaml_cases(by_hand=True),
]

CASES: list[Case] = [
    *PARAMS_CASES,
    *_yaml_cases(by_hand=False),
    *SPARK_CASES,
    *BY_HAND_CASES,
    *EDGE_CASES,
    *LOG_CASES,
    *EVENT_CASES,
    *ORDERS_ONLY_CASES,
    *ARTIFACT_CASES,
]
