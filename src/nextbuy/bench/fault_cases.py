"""The cases of ``nextbuy bench faults``: what a hostile or careless user does to the
pipeline, and what a good answer names.

Each bad-input case runs one stage the way ``dvc repro`` and Airflow run it, on a tiny
project whose every stage has run once. ``fragments`` are what the error must name (the
file, the column or params key, a value from the first offending rows); matching ignores
case and line wrapping. ``expect="warn"`` marks the cases the field's convention cleans and
counts (exit 0 with a warning naming the count) instead of refusing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.bench.serving_fixtures import invocations_body

INPUTS = Path("inputs")  # the cases' input files, inside the project copy
GRAPH = INPUTS / "edges.csv"  # a valid real graph: the tiny store's edges, by product key
LOG = INPUTS / "log.parquet"  # a valid real impressions log over it
SNAPSHOT = "2026-02-10"  # the tiny store's snapshot (presets/tiny.yaml: 40 days from 2026-01-01)


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # params | input | artifact
    stage: str  # the stage that must refuse
    fragments: tuple[str, ...]
    params: Callable[[dict], dict] | None = None  # the params.yaml the case runs with
    files: Callable[[Path], None] | None = None  # writes or damages files in the project
    expect: str = "refuse"  # refuse | warn
    rows: bool = False  # the message must show the first offending rows
    single: bool = False  # dvc repro --single-item --force (an upstream output was damaged)


@dataclass(frozen=True)
class Request:
    name: str
    body: bytes
    fragments: tuple[str, ...]
    content_type: str = "application/json"
    status: tuple[int, ...] = (400,)
    params: dict = field(default_factory=dict)


# ---- params -----------------------------------------------------------------------------


def setting(**changes: object) -> Callable[[dict], dict]:
    """params with dotted keys set (``train__epochs=0`` sets train.epochs)."""

    def apply(params: dict) -> dict:
        out = copy.deepcopy(params)
        for dotted, value in changes.items():
            *parents, leaf = dotted.split("__")
            node = out
            for key in parents:
                node = node[key]
            node[leaf] = value
        return out

    return apply


def dropping(section: str) -> Callable[[dict], dict]:
    def apply(params: dict) -> dict:
        return {k: v for k, v in copy.deepcopy(params).items() if k != section}

    return apply


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
    _p("zero traffic days", "traffic", ("days",), traffic__days=0),
    _p("unknown drift", "traffic", ("kind", "earthquake"), traffic__drift__kind="earthquake"),
    _p("tolerance list", "monitor", ("relative_tolerance",), monitor__relative_tolerance=[0.3, -1]),
    _p("zero window", "monitor", ("window_days",), monitor__window_days=0),
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


# ---- input files ------------------------------------------------------------------------


def _real(**changes: object) -> Callable[[dict], dict]:
    return setting(ingest__snapshot=SNAPSHOT, **changes)


def _graph_file(name: str, content: str | bytes) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        path = root / INPUTS / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return write


def _edge_case(
    name: str, file: str, content: str | bytes, fragments: tuple[str, ...], rows: bool = False
) -> Case:
    return Case(
        name,
        "input",
        "ingest",
        (file, *fragments),
        params=_real(ingest__source="edge_list", ingest__graph_path=str(INPUTS / file)),
        files=_graph_file(file, content),
        rows=rows,
    )


CYCLE = "".join(f"{i},{(i + 1) % 12}\n" for i in range(12))  # 12 products, 12 edges: big enough
EDGE_CASES = [
    _edge_case("text id among integers", "abc.csv", "src,dst\n" + CYCLE + "abc,3\n", ("'src'", "abc"), True),
    _edge_case("fraction id", "frac.csv", "src,dst\n" + CYCLE + "3,1.5\n", ("'dst'", "1.5"), True),
    _edge_case("negative id", "neg.csv", "src,dst\n" + CYCLE + "-5,3\n", ("'src'", "-5"), True),
    _edge_case("infinite id", "inf.csv", "src,dst\n" + CYCLE + "3,inf\n", ("'dst'", "inf"), True),
    _edge_case("missing id", "nan.csv", "src,dst\n" + CYCLE + ",3\n", ("'src'",), True),
    _edge_case("missing column", "nodst.csv", "src,target\n1,2\n", ("'dst'",)),
    _edge_case("bad time", "time.csv", "src,dst,time\n1,2,2026-01-01\n2,3,not a date\n", ("'time'",), True),
    _edge_case("negative weight", "weight.csv", "src,dst,weight\n1,2,1\n2,3,-4\n", ("'weight'",), True),
    _edge_case("header only", "header.csv", "src,dst\n", ("no rows",)),
    _edge_case("empty file", "empty.csv", "", ("empty",)),
    _edge_case("only self-loops", "loops.csv", "src,dst\n1,1\n2,2\n", ("no edges left",)),
    _edge_case("one edge", "one.csv", "src,dst\n1,2\n", ("too small to train on", "1 edge(s)")),
    _edge_case("binary garbage", "garbage.csv", bytes(range(256)) * 4, ()),
    _edge_case("npz that is not", "fake.npz", "src,dst\n1,2\n", ()),
]
# The npz reader is a different reader: point the source at it.
EDGE_CASES[-1] = Case(
    "npz that is not an archive",
    "input",
    "ingest",
    ("fake.npz",),
    params=_real(ingest__source="npz", ingest__graph_path=str(INPUTS / "fake.npz")),
    files=_graph_file("fake.npz", b"PK\x03\x04 not really a zip"),
)


def _log_file(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        change(pd.read_parquet(root / LOG)).to_parquet(root / INPUTS / name)

    return write


def _log_case(
    name: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    stage: str,
    fragments: tuple[str, ...],
    rows: bool = False,
    expect: str = "refuse",
) -> Case:
    file = name.replace(" ", "_") + ".parquet"
    where = (file,) if stage == "ingest" else ()
    return Case(
        name,
        "input",
        stage,
        (*where, *fragments),
        params=_real(
            ingest__source="edge_list",
            ingest__graph_path=str(GRAPH),
            ingest__impressions_path=str(INPUTS / file),
        ),
        files=_log_file(file, change),
        rows=rows,
        expect=expect,
    )


def _with(column: str, values: Callable[[pd.DataFrame], object]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(log: pd.DataFrame) -> pd.DataFrame:
        return log.assign(**{column: values(log)})

    return change


def _first_converted(log: pd.DataFrame) -> int:
    return int(np.flatnonzero(log["converted_at"].notna())[0])


def _click_after_conversion(log: pd.DataFrame) -> pd.DataFrame:
    log = log.copy()
    i = _first_converted(log)
    log.loc[i, "clicked_at"] = log.loc[i, "converted_at"] + pd.Timedelta(hours=5)
    return log


def _converted_before_shown(log: pd.DataFrame) -> pd.DataFrame:
    log = log.copy()
    i = _first_converted(log)
    log.loc[i, "converted_at"] = log.loc[i, "shown_at"] - pd.Timedelta(days=1)
    return log


def _unknown_product(log: pd.DataFrame) -> pd.DataFrame:
    log = log.copy()
    log["shown_id"] = log["shown_id"].astype(str)
    log.loc[3, "shown_id"] = "tablet-9000"
    return log


def _last_hour_conversions(log: pd.DataFrame) -> pd.DataFrame:
    """Every conversion in the hour before the snapshot (and its impression just before)."""
    log = log.copy()
    converted = log["converted_at"].notna()
    end = pd.Timestamp(SNAPSHOT)
    log.loc[converted, "shown_at"] = end - pd.Timedelta(minutes=55)
    log.loc[converted, "clicked_at"] = log.loc[converted, "clicked_at"].where(
        log.loc[converted, "clicked_at"].isna(), end - pd.Timedelta(minutes=50)
    )
    log.loc[converted, "carted_at"] = log.loc[converted, "carted_at"].where(
        log.loc[converted, "carted_at"].isna(), end - pd.Timedelta(minutes=45)
    )
    log.loc[converted, "converted_at"] = end - pd.Timedelta(minutes=30)
    return log


def _duplicates(log: pd.DataFrame) -> pd.DataFrame:
    without_ids = log.drop(columns="impression_id")
    return pd.concat([without_ids, without_ids.iloc[:7]], ignore_index=True)


LOG_CASES = [
    _log_case("click after conversion", _click_after_conversion, "ingest", ("'clicked_at'",), True),
    _log_case("conversion before shown", _converted_before_shown, "ingest", ("'converted_at'",), True),
    _log_case("unknown product", _unknown_product, "ingest", ("'shown_id'", "tablet-9000"), True),
    _log_case(
        "duplicate impression id",
        _with("impression_id", lambda log: np.where(np.arange(len(log)) == 5, 0, log["impression_id"])),
        "ingest",
        ("'impression_id'",),
        True,
    ),
    _log_case(
        "unparseable time",
        _with("shown_at", lambda log: log["shown_at"].astype(str).where(log.index != 2, "yesterday-ish")),
        "ingest",
        ("'shown_at'", "yesterday-ish"),
        True,
    ),
    _log_case(
        "log without converted_at",
        lambda log: log.drop(columns="converted_at"),
        "ingest",
        ("'converted_at'",),
    ),
    _log_case(
        "text impression id",
        _with("impression_id", lambda log: log["impression_id"].astype(str) + "x"),
        "ingest",
        ("'impression_id'",),
    ),
    _log_case(
        "boolean conversion times",
        _with("converted_at", lambda log: log["converted_at"].notna()),
        "ingest",
        ("'converted_at'",),
    ),
    _log_case(
        "zero conversions",
        _with("converted_at", lambda log: pd.Series(pd.NaT, index=log.index, dtype="datetime64[ns]")),
        "label_delay",
        ("impressions.parquet", "'converted_at'", "none of the"),
    ),
    _log_case(
        "all conversions in the last hour",
        _last_hour_conversions,
        "label_delay",
        ("impressions.parquet", "'converted_at'", "younger than"),
    ),
    _log_case(
        "exact duplicate rows",
        _duplicates,
        "ingest",
        ("dropped 7 exact duplicate row(s)",),
        expect="warn",
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
]

CASES: list[Case] = [*PARAMS_CASES, *EDGE_CASES, *LOG_CASES, *ARTIFACT_CASES]


# ---- malformed requests (bench faults' REST part) ----------------------------------------


PAIRS = ["source_id", "candidate_id"]


def _deep(depth: int) -> bytes:
    cell = b"[" * depth + b"1" + b"]" * depth
    return b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[' + cell + b", 2]]}}"


def requests(max_rows: int, max_top_k: int, max_bytes: int) -> list[Request]:
    """Malformed scoring requests and the words each refusal must contain."""
    top = ["source_id"]
    return [
        Request("wrong column name", invocations_body(["src", "candidate_id"], [[1, 2]]), ("source_id",)),
        Request("pairs without candidate", invocations_body(top, [[1]]), ("candidate_id",)),
        Request("text id", invocations_body(PAIRS, [["a", 2]]), ("source_id",)),
        Request("text candidate", invocations_body(PAIRS, [[1, "x"]]), ("candidate_id",)),
        Request("fraction id", invocations_body(PAIRS, [[1.5, 2]]), ("source_id", "integer")),
        Request("null id", invocations_body(PAIRS, [[1, None]]), ("candidate_id",)),
        Request("empty body", b"", ("json",)),
        Request("not JSON", b"{not json", ("json",)),
        Request("unknown format", b'{"rows": [[1, 2]]}', ("dataframe_split",)),
        Request("no rows", invocations_body(PAIRS, []), ("empty request",)),
        Request(
            "Infinity id",
            b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[Infinity, 2]]}}',
            ("source_id", "finite"),
        ),
        Request(
            "NaN id",
            b'{"dataframe_split": {"columns": ["source_id", "candidate_id"], "data": [[NaN, 2]]}}',
            ("source_id", "nan"),
        ),
        Request("boolean id", invocations_body(PAIRS, [[True, 2]]), ("source_id", "not booleans")),
        Request("beyond int64", invocations_body(PAIRS, [[10**23, 2]]), ("source_id", "int64")),
        Request("list in a cell", invocations_body(PAIRS, [[[1, [2]], 2]]), ("source_id",)),
        Request("nested 5000 deep", _deep(5000), ("nested too deeply",)),
        Request("nested 900 deep", _deep(900), ()),
        Request("extra column", invocations_body([*PAIRS, "note"], [[1, 2, "x"]]), ("note",)),
        Request("duplicate column", invocations_body(["source_id", "source_id"], [[1, 2]]), ("source_id",)),
        Request("top_k negative", invocations_body(top, [[1]], {"top_k": -1}), ("top_k must be at least 1",)),
        Request("top_k above cap", invocations_body(top, [[1]], {"top_k": 10**9}), (f"{max_top_k:,}",)),
        Request("top_k fraction", invocations_body(top, [[1]], {"top_k": 1.5}), ("top_k",)),
        Request("top_k text", invocations_body(top, [[1]], {"top_k": "5"}), ("top_k",)),
        Request("top_k with candidates", invocations_body(PAIRS, [[1, 2]], {"top_k": 5}), ("candidate_id",)),
        Request("too many rows", invocations_body(PAIRS, [[1, 2]] * (max_rows + 1)), (f"{max_rows}",)),
        Request(
            "body over the byte limit",
            invocations_body(PAIRS, [[10**12, 10**12]] * (max_bytes // 20)),
            (f"limit is {max_bytes} bytes",),
            status=(413,),
        ),
        Request("csv fraction", b"source_id,candidate_id\n1.5,2\n", ("fraction",), content_type="text/csv"),
        Request("csv missing column", b"source_id\n1\n", ("candidate_id",), content_type="text/csv"),
        Request(
            "csv extra column", b"source_id,candidate_id,note\n1,2,x\n", ("note",), content_type="text/csv"
        ),
    ]
