"""An edge list (``ingest.source: edge_list``, a .csv/.tsv/.txt file) read, checked, keyed and
cleaned on Spark: the same graph as ``nextbuy.data.sources.read_edge_list``, refusals included.

The file's lines are split over the executors as Spark splits a text file; each part is parsed
by pandas as the pandas engine parses the whole file (same separator, header, missing values),
its columns typed as pandas would type them over the whole file (a Spark pass finds whether
every value of a column is an integer, a number or neither), and checked by the pandas engine's
own checks (``edge_list.edge_rows``) with the whole list's id counts and first time. A refusal
names the file, the column, the number of offending rows over the whole list and its first
rows (row numbers of the file's edges, as with pandas). The ids then become product keys on
the executors, and Spark drops self-loops and sums duplicate edges.

On the driver: the distinct product keys (one string per product, sorted there as the pandas
engine sorts them: the products table ingest writes whole, far smaller than the list's rows)
and the cleaned edges (src, dst, weight, time: 32 bytes an edge after duplicates are merged;
the graph that ingest writes, and train, holds whole anyway). A parquet edge list is read by the
pandas engine's reader (a columnar file of the graph's columns, about as large as that graph)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.config import SparkConfig
from nextbuy.data.sources import edge_list, keys
from nextbuy.engines.spark import table
from nextbuy.engines.spark.session import session
from nextbuy.mlops import io

# One class both Java and Python regexes read alike: a line with none of these is blank (skipped).
FILLED = r"[^ \t\n\x0B\f\r]"
INTEGER = r"\s*[+-]?\d+\s*"
FACTS_SCHEMA = (
    "column string, rows long, given long, numbers long, integers long, first_row long, first string"
)
PROBLEM_SCHEMA = "step long, column string, reason string, rows long, first array<long>"
UNREADABLE = "\0unreadable"  # a fact that says a part did not parse
ROWS_SCHEMA = "src_key string, dst_key string, weight double, time long"


@dataclass(frozen=True)
class Layout:
    """How a text edge list is laid out: its columns, separator and the lines before its edges."""

    path: str
    columns: tuple[str, ...]
    sep: str
    skip: int  # comment and blank lines, and the header
    leading: tuple[str, ...]  # those lines


def layout(path: str | Path) -> Layout:
    """The file's layout, read from its opening lines as the pandas engine reads it; DataError
    for what the pandas engine refuses from them (no src/dst column, a headerless list of other
    than two columns, no edge at all)."""
    p = Path(path)
    io.check_file(p)
    comments, first = edge_list.text_layout(p)
    if not first.strip():  # nothing but comments: the pandas reader's own refusal
        edge_list.read_edge_table(p)
    if edge_list.has_header(first):
        try:
            sep = "\t" if p.suffix.lower() == ".tsv" else csv.Sniffer().sniff(first).delimiter
        except csv.Error as err:
            raise io.DataError(p, f"unreadable file (Error: {err})") from None
        columns = tuple(
            pd.read_csv(StringIO(first), sep=sep, header=None, dtype=str, engine="python").iloc[0]
        )
        keys._require_columns(path, pd.DataFrame(columns=list(columns)), ("src", "dst"))
    else:
        sep, columns = edge_list.HEADERLESS_SEP, ("src", "dst")
        width = pd.read_csv(StringIO(first), sep=sep, header=None, dtype=str, engine="python").shape[1]
        edge_list.check_headerless(p, width, first)
    skip = comments + edge_list.has_header(first)
    with open(p, encoding="utf-8-sig", errors="replace") as fh:
        leading = tuple(line for _, line in zip(range(skip), fh, strict=False))
    return Layout(str(path), columns, sep, skip, leading)


def parse(lay: Layout, lines: list[str], numbers: np.ndarray) -> pd.DataFrame:
    """Lines of the list (``numbers``: their lines in the file, from 0) parsed as the pandas
    engine parses the file, every value as text (missing: NaN); DataError (unreadable) naming
    the file's line where the pandas engine's parser stops."""
    text = "\n".join(lines)
    options: dict[str, Any] = {"sep": lay.sep, "header": None, "dtype": str}
    try:  # the C parser when it can
        frame = pd.read_csv(StringIO(text), engine="c" if len(lay.sep) == 1 else "python", **options)
    except Exception:  # noqa: BLE001 - any reader failure is an unreadable file
        frame = None
    if frame is None or frame.shape[1] > len(lay.columns):
        # the pandas engine's (python) parser says what is wrong, after a line as wide as the list
        sep = "\t" if len(lay.sep) > 1 else lay.sep
        try:
            pd.read_csv(StringIO(sep.join(lay.columns) + "\n" + text), engine="python", **options)
        except Exception as err:  # noqa: BLE001
            said = re.sub(r"line (\d+)", lambda m: f"line {numbers[int(m.group(1)) - 2] + 1}", str(err))
            raise io.DataError(lay.path, f"unreadable file ({type(err).__name__}: {said})") from None
        raise io.DataError(lay.path, f"unreadable file: a line has more than {len(lay.columns)} fields")
    return frame.reindex(columns=range(len(lay.columns))).set_axis(list(lay.columns), axis=1)


def typed(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Text columns as pandas types them over the whole file (``kinds``: int, float or text)."""
    out = frame.copy()
    for column, kind in kinds.items():
        if kind != "text":
            number = pd.to_numeric(frame[column].str.strip())
            out[column] = number.astype(np.int64 if kind == "int" else np.float64)
    return out


def read_edge_list(spark_cfg: SparkConfig, near: Path, path: str | Path) -> keys.GraphSource:
    """``read_edge_list`` on Spark (``near``: where the parts go, on storage the executors share)."""
    if Path(path).suffix.lower() not in edge_list.TEXT_SUFFIXES:
        return edge_list.read_edge_list(path)
    lay = layout(path)
    spark = session(spark_cfg)
    near = Path(near)
    with table.spilled(_numbered(spark, lay), near) as (_, rows):
        kinds, counted, lead, n_rows = _facts(rows, lay)
        if n_rows == 0:
            raise io.DataError(path, "file has no rows")
        _refuse(rows, lay, kinds, (counted, lead))
        checked = rows.mapInPandas(_edge_rows(lay, kinds, counted, lead), ROWS_SCHEMA)
        with table.spilled(checked, near) as (_, edges):
            return _graph(spark, spark_cfg, near, lay.path, edges, n_rows)


def _numbered(spark: Any, lay: Layout) -> Any:
    """The list's edges as text columns with their row number (0, 1, ... over the lines after
    the header, blank lines skipped, as pandas numbers them)."""
    from pyspark.sql import functions as F

    lines = spark.read.text(str(Path(lay.path).resolve())).withColumn("pid", F.spark_partition_id())
    counts = (
        lines.groupBy("pid")
        .agg(F.count("*").alias("lines"), F.sum(F.col("value").rlike(FILLED).cast("long")).alias("filled"))
        .toPandas()
    )
    parts = int(counts["pid"].max()) + 1 if len(counts) else 0
    n_lines, filled = np.zeros(parts, np.int64), np.zeros(parts, np.int64)
    n_lines[counts["pid"]], filled[counts["pid"]] = counts["lines"], counts["filled"]
    start = np.concatenate([[0], np.cumsum(n_lines)])
    for at, line in enumerate(lay.leading):  # the opening lines are not edges
        if re.search(FILLED, line):
            filled[np.searchsorted(start, at, side="right") - 1] -= 1
    before = np.concatenate([[0], np.cumsum(filled)])
    columns = list(lay.columns)

    def per_part(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        seen = taken = 0
        for batch in batches:
            pid = int(batch["pid"].iloc[0]) if len(batch) else 0
            line = start[pid] + seen + np.arange(len(batch))
            value = batch["value"].str.lstrip("\ufeff")
            edge = (line >= lay.skip) & value.str.contains(FILLED).to_numpy()
            seen += len(batch)
            if not edge.any():
                continue
            try:
                frame = parse(lay, value[edge].tolist(), line[edge])
            except io.DataError as err:  # told by _refuse_unreadable, with the line it starts at
                yield pd.DataFrame({"row": [-int(line[edge][0]) - 1], **{c: [err.message] for c in columns}})
                return
            frame.insert(0, "row", before[pid] + taken + np.arange(len(frame), dtype=np.int64))
            taken += len(frame)
            yield frame

    schema = "row long, " + ", ".join(f"`{c}` string" for c in columns)
    return lines.mapInPandas(per_part, schema)


def _facts(rows: Any, lay: Layout) -> tuple[dict[str, str], tuple[int, int], str | None, int]:
    """Over the whole list: each column's pandas type, the ids that are numbers (of all ids), the
    first time (the format pandas infers for date strings), and the rows."""

    def per_batch(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if len(batch) and batch["row"].iloc[0] < 0:  # a part that did not parse (``parse``)
                message = str(batch[lay.columns[0]].iloc[0])
                yield pd.DataFrame(
                    {"column": [UNREADABLE], "rows": [0], "given": [0], "numbers": [0]}
                    | {"integers": [0], "first_row": [-batch["row"].iloc[0]], "first": [message]}
                )
                continue
            for column in lay.columns:
                text = batch[column]
                given = text.notna()
                first = batch.loc[given, ["row", column]].head(1)
                yield pd.DataFrame(
                    {
                        "column": [column],
                        "rows": [len(batch)],
                        "given": [int(given.sum())],
                        "numbers": [int(pd.to_numeric(text.str.strip(), errors="coerce").notna().sum())],
                        "integers": [int(text.str.fullmatch(INTEGER, na=False).sum())],
                        "first_row": first["row"].tolist() or [-1],
                        "first": [str(first[column].iloc[0]).strip() if len(first) else None],
                    }
                )

    facts = rows.mapInPandas(per_batch, FACTS_SCHEMA).toPandas()
    unreadable = facts[facts["column"] == UNREADABLE].sort_values("first_row")
    if len(unreadable):
        raise io.DataError(lay.path, str(unreadable["first"].iloc[0]).split(": ", 1)[1])
    total = facts.groupby("column", sort=False)[["rows", "given", "numbers", "integers"]].sum()
    kinds = {
        c: "text"
        if total.at[c, "numbers"] < total.at[c, "given"]
        else "int"
        if total.at[c, "integers"] == total.at[c, "rows"]
        else "float"
        for c in lay.columns
    }
    n_rows = int(total.at[lay.columns[0], "rows"]) if len(total) else 0
    counted = (int(total.at["src", "numbers"] + total.at["dst", "numbers"]), 2 * n_rows) if n_rows else (0, 0)
    times = facts[(facts["column"] == "time") & (facts["first_row"] >= 0)].sort_values("first_row")
    lead = str(times["first"].iloc[0]) if len(times) and kinds.get("time") == "text" else None
    return kinds, counted, lead, n_rows


def _problem(err: io.DataError, step: int) -> pd.DataFrame:
    """A part's refusal as one row: its check, column, reason, rows and first rows."""
    prefix = err.path + (f", column '{err.column}'" if err.column else "") + ": "
    head = err.message.split("\n", 1)[0][len(prefix) :]
    counted = re.fullmatch(r"(\d+) row\(s\) (.*)", head) if err.rows is not None else None
    reason, n = (counted.group(2), int(counted.group(1))) if counted else (head, 0)
    first = [] if err.rows is None else sorted(int(r) for r in err.rows.index)[: io.MAX_ROWS_SHOWN]
    return pd.DataFrame(
        {"step": [step], "column": [err.column], "reason": [reason], "rows": [n], "first": [first]}
    )


def _refuse(rows: Any, lay: Layout, kinds: dict[str, str], whole: tuple[tuple[int, int], str | None]) -> None:
    """The pandas engine's refusal of the whole list, when a part of it fails a check: the first
    check any part fails, its first column, the rows over all parts and the first of them."""
    from pyspark.sql import functions as F

    counted, lead = whole

    def per_batch(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            passed: list[str] = []
            try:
                frame = batch.set_index("row").rename_axis(None)
                edge_list.edge_rows(lay.path, typed(frame, kinds), counted, lead, passed)
            except io.DataError as err:
                yield _problem(err, len(passed))

    problems = rows.mapInPandas(per_batch, PROBLEM_SCHEMA).toPandas()
    if problems.empty:
        return
    order = {c: i for i, c in enumerate(lay.columns)}
    problems["order"] = problems["column"].map(order).fillna(-1)
    problems = problems.sort_values(["step", "order"], kind="stable")
    top = problems.iloc[0]
    if top["rows"] == 0:  # a refusal without rows (a time column of the wrong type)
        raise io.DataError(lay.path, top["reason"], column=top["column"])
    same = problems[(problems["step"] == top["step"]) & (problems["column"] == top["column"])]
    first = sorted(int(r) for r in np.concatenate(same["first"].tolist()))[: io.MAX_ROWS_SHOWN]
    shown = rows.where(F.col("row").isin(first)).toPandas().sort_values("row")
    shown = typed(shown.set_index("row").rename_axis(None), kinds)
    raise io.DataError(lay.path, f"{int(same['rows'].sum())} row(s) {top['reason']}", top["column"], shown)


def _edge_rows(lay: Layout, kinds: dict[str, str], counted: tuple[int, int], lead: str | None) -> Any:
    """Per batch: each row's src and dst keys, weight and time (int64 ns; NaT: ``table.NAT``)."""

    def per_batch(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            frame = typed(batch.set_index("row").rename_axis(None), kinds)
            src, dst, weight, time = edge_list.edge_rows(lay.path, frame, counted, lead)
            yield pd.DataFrame(
                {
                    "src_key": src.to_numpy(str),
                    "dst_key": dst.to_numpy(str),
                    "weight": weight,
                    "time": time.to_numpy("datetime64[ns]").view(np.int64),
                }
            )

    return per_batch


def _graph(
    spark: Any, spark_cfg: SparkConfig, near: Path, path: str, rows: Any, n_rows: int
) -> keys.GraphSource:
    """Keys numbered in sorted order (on the driver), self-loops dropped and duplicate edges
    merged (weight summed, earliest time) in Spark."""
    from pyspark.sql import functions as F

    named = rows.select(F.col("src_key").alias("key")).union(rows.select(F.col("dst_key").alias("key")))
    order = keys._sorted_keys(table.collected(named.distinct(), near)["key"].to_numpy(str))
    ids = pd.DataFrame({"key": order, "id": np.arange(len(order), dtype=np.int64)})
    with table.staged(spark, {"ids": ids}, near, spark_cfg.batch_rows) as staged:
        id_of = staged["ids"]
        coded = rows.join(
            id_of.select(F.col("key").alias("src_key"), F.col("id").alias("src")), "src_key"
        ).join(id_of.select(F.col("key").alias("dst_key"), F.col("id").alias("dst")), "dst_key")
        loops = coded.where(F.col("src") == F.col("dst")).count()
        real = F.when(F.col("time") != table.NAT, F.col("time"))
        merged = (
            coded.where(F.col("src") != F.col("dst"))
            .groupBy("src", "dst")
            .agg(F.sum("weight").alias("weight"), F.min(real).alias("time"))
            .withColumn("time", F.coalesce(F.col("time"), F.lit(table.NAT)))
        )
        edges = table.collected(merged, near).sort_values(["src", "dst"], ignore_index=True)
    cleaning = keys.cleaning_counts(n_rows, int(loops), n_rows - int(loops), len(edges), path)
    out = pd.DataFrame(
        {
            "src": edges["src"].to_numpy(np.int64),
            "dst": edges["dst"].to_numpy(np.int64),
            "weight": edges["weight"].to_numpy(np.float64),
            "time": edges["time"].to_numpy(np.int64).view("datetime64[ns]"),
        }
    )
    return edge_list.key_graph(path, order, out, cleaning)
