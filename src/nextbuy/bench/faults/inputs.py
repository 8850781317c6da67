"""Bad input files of ``nextbuy bench faults``: a real graph (edge list) and a real impressions
log, each broken one way, run through ingest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.bench.faults.base import GRAPH, INPUTS, LOG, SNAPSHOT, Case, setting


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


def _npz_graph(name: str, data: list[float], indices: list[int]) -> Callable[[Path], None]:
    """A 3-node PPNP-style npz, one adjacency entry per row, with the given values and columns."""

    def write(root: Path) -> None:
        np.savez(
            root / INPUTS / name,
            **{  # type: ignore[arg-type]  # numpy's stubs type **arrays as savez's flags
                "adj_matrix.data": np.asarray(data, dtype=np.float64),
                "adj_matrix.indices": np.asarray(indices, dtype=np.int64),
                "adj_matrix.indptr": np.arange(len(data) + 1, dtype=np.int64),
                "adj_matrix.shape": np.array([len(data), len(data)]),
            },
        )

    return write


def _directory(name: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / INPUTS / name).mkdir(exist_ok=True)

    return make


def _outside(name: str) -> Callable[[Path], None]:
    """A valid edge list at the project's root, not under inputs/."""

    def write(root: Path) -> None:
        (root / name).write_text("src,dst\n" + CYCLE)

    return write


def _npz_case(name: str, file: str, files: Callable[[Path], None], fragments: tuple[str, ...]) -> Case:
    params = _real(ingest__source="npz", ingest__graph_path=str(INPUTS / file))
    return Case(name, "input", "ingest", (file, *fragments), params=params, files=files)


def _path_case(name: str, file: str, files: Callable[[Path], None], fragments: tuple[str, ...]) -> Case:
    params = _real(ingest__source="edge_list", ingest__graph_path=str(INPUTS / file))
    return Case(name, "input", "ingest", (file, *fragments), params=params, files=files)


# Files as users have them: what a reader cannot take is refused saying what the file is.
EDGE_CASES += [
    _edge_case("headerless with a third column", "weighted.txt", "0 1 3\n1 2 4\n", ("add a header",)),
    _path_case("graph path is a directory", "graphdir", _directory("graphdir"), ("a directory",)),
    _npz_case(
        "npz with a negative weight",
        "negative.npz",
        _npz_graph("negative.npz", [1.0, -2.0, 1.0], [1, 2, 0]),
        ("negative adjacency weights", "A[1, 2] = -2"),
    ),
    _npz_case(
        "npz index out of range",
        "range.npz",
        _npz_graph("range.npz", [1.0, 1.0, 1.0], [1, 7, 0]),
        ("out of range", "row 1 index 7"),
    ),
    Case(
        "graph outside inputs",
        "input",
        "ingest",
        ("ingest.graph_path", "outside inputs/"),
        params=_real(ingest__source="edge_list", ingest__graph_path="edges-elsewhere.csv"),
        files=_outside("edges-elsewhere.csv"),
    ),
]


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


def _one_in_2099(log: pd.DataFrame) -> pd.DataFrame:
    """One impression with a typo'd year: it would move a snapshot taken from the log's end."""
    out = log.copy()
    out.loc[out.index[0], "shown_at"] = pd.Timestamp("2099-01-01")
    out.loc[out.index[0], ["clicked_at", "carted_at", "converted_at"]] = pd.NaT  # nothing after it yet
    return out


def _one_in_1970(log: pd.DataFrame) -> pd.DataFrame:
    """One impression at the epoch (an empty field read as 0): decades before the rest."""
    out = log.copy()
    out.loc[out.index[0], "shown_at"] = pd.Timestamp("1970-01-01")
    out.loc[out.index[0], ["clicked_at", "carted_at", "converted_at"]] = pd.NaT
    return out


LOG_CASES = [
    _log_case("impression in 2099", _one_in_2099, "ingest", ("'shown_at'", "after now", "2099"), True),
    _log_case(
        "impression in 1970", _one_in_1970, "ingest", ("'shown_at'", "days from the rest", "1970"), True
    ),
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
