"""Edge lists on Spark (local[2]): the graph read, checked and cleaned on Spark equals the pandas
engine's (products, ids, counts and times exactly; summed float weights to ``parity.RTOL``), and a
bad list is refused with the pandas engine's message, also when the list is split into many
parts; through the ingest stage, its outputs are the pandas engine's."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nextbuy.data.sources import read_edge_list
from nextbuy.engines.spark import edge_list as spark_edge_list
from nextbuy.engines.spark import session as spark_session
from nextbuy.mlops.io import DataError
from tests.conftest import ROOT, TINY_PARAMS
from tests.engines.spark import parity

REAL_GRAPH = ROOT.parent / "shared" / "data" / "cora_ml" / "split0" / "observed_graph.npy"


@contextlib.contextmanager
def small_parts(spark_cfg, bytes_per_part: int = 16384):
    """Spark splits a text file into parts of ``bytes_per_part`` (many parts for a small list).
    The session of ``spark_cfg``: another test of this process may have stopped or replaced it."""
    spark = spark_session.session(spark_cfg)
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(bytes_per_part))
    try:
        yield
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", before)


LISTS = {
    "integer keys, time and weight": lambda f: f.to_csv(index=False),
    "text keys": lambda f: (
        "src,dst\n" + "\n".join(f"sku-{a},SKU {b}" for a, b in zip(f.src, f.dst, strict=True))
    ),
    "SNAP text, comments and blank lines": lambda f: (
        "# directed\n#\n\n" + "\n".join(f"{a}\t{b}" for a, b in zip(f.src, f.dst, strict=True)) + "\n\n"
    ),
    "tab separated, zero-padded ids": lambda f: (
        "src\tdst\n" + "\n".join(f"{a:04d}\t{b}" for a, b in zip(f.src, f.dst, strict=True))
    ),
}


def both(path: Path, spark_cfg, near: Path):
    """The pandas engine's graph (or refusal) and the Spark engine's."""
    out = []
    for read in (read_edge_list, lambda p: spark_edge_list.read_edge_list(spark_cfg, near, p)):
        try:
            out.append(read(path))
        except DataError as err:
            out.append(err)
    return out


@pytest.mark.parametrize("layout", list(LISTS))
def test_an_edge_list_on_spark_is_the_pandas_engines_graph(local_spark, tmp_path, layout):
    path = tmp_path / ("graph.tsv" if "tab" in layout else "graph.csv")
    path.write_text(LISTS[layout](parity.awkward_edges()))
    with small_parts(local_spark):
        pandas, spark = both(path, local_spark, tmp_path / "near")
    pd.testing.assert_frame_equal(pandas.products, spark.products, check_exact=True)
    parity.same_frames(pandas.edges, spark.edges)
    pd.testing.assert_frame_equal(pandas.edges.drop(columns="weight"), spark.edges.drop(columns="weight"))
    assert pandas.cleaning == spark.cleaning
    assert pandas.cleaning["duplicate_edges_merged"] > 0
    assert not list((tmp_path / "near").iterdir())  # the parts are gone


def bad(frame: pd.DataFrame, column: str, value, every: int) -> pd.DataFrame:
    return frame.assign(**{column: frame[column].astype(object).where(frame.index % every != 3, value)})


REFUSALS = {
    "a text id in an integer-keyed list": lambda f: bad(f, "dst", "abc", 700).to_csv(index=False),
    "a negative weight": lambda f: bad(f, "weight", -1, 500).to_csv(index=False),
    "a missing id": lambda f: bad(f, "src", None, 900).to_csv(index=False),
    "an unparseable time": lambda f: bad(f, "time", "yesterday", 800).to_csv(index=False),
    "a line with a field too many": lambda f: one_wide_line(f.to_csv(index=False), 1400),
}


def one_wide_line(text: str, at: int) -> str:
    lines = text.splitlines()
    lines[at] += ",9"
    return "\n".join(lines)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_edge_list_on_spark_is_refused_as_the_pandas_engine_refuses_it(local_spark, tmp_path, case):
    path = tmp_path / "graph.csv"
    path.write_text(REFUSALS[case](parity.awkward_edges()))
    with small_parts(local_spark):
        pandas, spark = both(path, local_spark, tmp_path / "near")
    assert isinstance(pandas, DataError)
    assert isinstance(spark, DataError)
    assert str(spark) == str(pandas)


def test_ingest_of_an_edge_list_on_spark_writes_what_pandas_writes(local_spark, tmp_path, monkeypatch):
    (tmp_path / "store" / "inputs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "store")
    frame = parity.awkward_edges().drop(columns="weight")
    frame.assign(src="p" + frame["src"].astype(str)).to_csv("inputs/graph.csv", index=False)
    params = copy.deepcopy(TINY_PARAMS)
    params["ingest"] |= {"source": "edge_list", "graph_path": "inputs/graph.csv"}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    parity.edge_list_ingest_on_both(params, local_spark, tmp_path / "pandas")
    parity.assert_edge_list_ingest_same(tmp_path / "pandas")
    assert not [p for p in Path("data").iterdir() if p.name.startswith(".spark")]


@pytest.mark.skipif(not REAL_GRAPH.exists(), reason=f"no real edge list at {REAL_GRAPH}")
def test_a_real_citation_graph_as_an_edge_list_is_the_same_on_spark(local_spark, tmp_path):
    src, dst = np.load(REAL_GRAPH)
    path = tmp_path / "cora_ml.txt"
    path.write_text("".join(f"{a} {b}\n" for a, b in zip(src, dst, strict=True)))
    pandas, spark = both(path, local_spark, tmp_path / "near")
    pd.testing.assert_frame_equal(pandas.products, spark.products, check_exact=True)
    pd.testing.assert_frame_equal(pandas.edges, spark.edges, check_exact=True)
    assert pandas.cleaning == spark.cleaning
    assert spark.cleaning["edges_kept"] == len(src)
