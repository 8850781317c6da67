"""Real inputs: edge lists, PPNP npz graphs and impressions logs, cleaned where
the field expects it and refused with a precise DataError otherwise."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from nextbuy.data.simulator import Window, simulate_traffic, world_from_graph
from nextbuy.data.sources import read_edge_list, read_impressions_log, read_npz_graph
from nextbuy.mlops import io, schemas
from nextbuy.mlops.io import DataError
from tests.helpers import config

T0 = pd.Timestamp("2026-03-01 12:00")


def write_npz(path, adj: sp.csr_matrix, **extra) -> None:
    write_csr(path, adj.data, adj.indices, adj.indptr, adj.shape, **extra)


def write_csr(path, data, indices, indptr, shape, **extra) -> None:
    np.savez(
        path,
        **{
            "adj_matrix.data": np.asarray(data),
            "adj_matrix.indices": np.asarray(indices),
            "adj_matrix.indptr": np.asarray(indptr),
            "adj_matrix.shape": np.array(shape),
        },
        **extra,
    )


def assert_refused(read, path, column: str | None, *args) -> DataError:
    with pytest.raises(DataError) as info:
        read(path, *args)
    message = str(info.value)
    assert path.name in message
    if column:
        assert f"column '{column}'" in message, message
    return info.value


# --------------------------------------------------------------------------- edge list


def test_edge_list_is_cleaned_counted_and_logged(tmp_path, caplog):
    path = tmp_path / "graph.csv"
    path.write_text(
        "src,dst,time\n"
        "10,9,2026-01-05\n"
        "9,100,2026-01-02 08:30\n"
        "10,9,2026-01-03\n"  # duplicate of the first: merged, earliest time kept
        "10,9,2026-01-04\n"
        "7,7,2026-01-01\n"  # self-loop: dropped, but product 7 still exists
        "100,10,\n"
    )  # no time is allowed
    with caplog.at_level(logging.WARNING, logger="nextbuy.data.sources"):
        graph = read_edge_list(path)
    io.validate(graph.products, schemas.PRODUCTS, path)
    io.validate(graph.edges, schemas.EDGES, path)
    # Integer keys are numbered in numeric order, not string order.
    assert graph.products["product_key"].tolist() == ["7", "9", "10", "100"]
    assert graph.products["product_id"].tolist() == [0, 1, 2, 3]
    assert (graph.products["category"] == -1).all()
    assert graph.products["price"].isna().all()
    assert graph.cleaning == {
        "rows_read": 6,
        "self_loops_dropped": 1,
        "duplicate_edges_merged": 2,
        "edges_kept": 3,
        "products": 4,
    }
    edges = graph.edges.set_index(["src", "dst"])
    assert edges.loc[(2, 1), "weight"] == 3.0
    assert edges.loc[(2, 1), "time"] == pd.Timestamp("2026-01-03")
    assert edges.loc[(1, 3), "time"] == pd.Timestamp("2026-01-02 08:30")
    assert pd.isna(edges.loc[(3, 2), "time"])
    assert "self-loop" in caplog.text
    assert "duplicate" in caplog.text


def test_edge_list_with_string_ids_tsv(tmp_path):
    path = tmp_path / "graph.tsv"
    path.write_text("src\tdst\nphone\tcase\nphone\tcharger\ncase\tscreen-guard\n")
    graph = read_edge_list(path)
    assert graph.products["product_key"].tolist() == ["case", "charger", "phone", "screen-guard"]
    pairs = set(zip(graph.edges["src"], graph.edges["dst"], strict=False))
    assert pairs == {(2, 0), (2, 1), (0, 3)}  # direction kept: phone -> case, not case -> phone
    assert (graph.edges["weight"] == 1.0).all()
    assert graph.edges["time"].isna().all()


def test_edge_list_parquet_with_unix_seconds_and_weights(tmp_path):
    path = tmp_path / "graph.parquet"
    pd.DataFrame(
        {
            "src": [1, 2, 1],
            "dst": [2, 3, 2],
            "time": [1_767_225_600, 1_767_312_000, 1_767_139_200],
            "weight": [2.0, 1.0, 0.5],
        }
    ).to_parquet(path)
    graph = read_edge_list(path)
    edges = graph.edges.set_index(["src", "dst"])
    assert edges.loc[(0, 1), "weight"] == 2.5
    assert edges.loc[(0, 1), "time"] == pd.Timestamp("2025-12-31")
    assert graph.edges["time"].dtype == "datetime64[ns]"


@pytest.mark.parametrize(
    ("name", "content", "column"),
    [
        ("missing_dst.csv", "src,target\n1,2\n", "dst"),
        ("nan_id.csv", "src,dst\n1,2\n,3\n4,5\n", "src"),
        ("bad_time.csv", "src,dst,time\n1,2,2026-01-01\n2,3,not a date\n", "time"),
        ("bad_weight.csv", "src,dst,weight\n1,2,1\n2,3,-4\n", "weight"),
        ("header_only.csv", "src,dst\n", None),
        ("empty.csv", "", None),
        ("only_loops.csv", "src,dst\n1,1\n2,2\n", None),
    ],
)
def test_bad_edge_list_is_refused(tmp_path, name, content, column):
    path = tmp_path / name
    path.write_text(content)
    error = assert_refused(read_edge_list, path, column)
    if name == "nan_id.csv":
        assert error.rows is not None
        assert len(error.rows) == 1


@pytest.mark.parametrize(
    ("rows", "column", "shown"),
    [
        ("1,2\nabc,3\n3,4\n4,1\n", "src", "abc"),  # a text id among integers: a typo
        ("1,2\n2,3\n3,1.5\n4,1\n", "dst", "1.5"),  # a float id (pandas also wrote 1 as 1.0)
        ("1,2\n-5,3\n3,4\n4,1\n", "src", "-5"),  # a negative id
        ("1,2\n2,3\n3,inf\n4,1\n", "dst", "inf"),
    ],
)
def test_edge_list_ids_that_would_become_new_products_are_refused(tmp_path, rows, column, shown):
    path = tmp_path / "graph.csv"
    path.write_text("src,dst\n" + rows)
    error = assert_refused(read_edge_list, path, column)
    assert "not a non-negative integer" in str(error)
    assert "new product" in str(error)
    assert error.rows is not None
    assert len(error.rows) == 1
    assert shown in str(error.rows[column].iloc[0])


def test_text_keyed_edge_list_stays_valid_but_numbers_must_be_ids(tmp_path):
    # Mostly text: a text-keyed list, integers among its keys are fine and kept as written.
    path = tmp_path / "graph.csv"
    path.write_text("src,dst\nphone,case\nphone,42\ncase,0042\nabc,phone\n")
    graph = read_edge_list(path)
    assert set(graph.products["product_key"]) == {"phone", "case", "42", "0042", "abc"}
    # A number that is not a non-negative integer is no product key, even there.
    path.write_text("src,dst\nphone,case\nphone,-5\ncase,charger\n")
    error = assert_refused(read_edge_list, path, "dst")
    assert "-5" in str(error.rows)
    assert "not a non-negative integer" in str(error)
    path.write_text("src,dst\nphone,case\n  ,case\n")
    assert "empty id" in str(assert_refused(read_edge_list, path, "src"))


def test_integer_keyed_ids_take_one_written_form(tmp_path):
    # Ids stored as text: '007', '+7' and '7' are one product, as a CSV reader reads them.
    path = tmp_path / "graph.parquet"
    pd.DataFrame({"src": ["007", "8", "+7"], "dst": ["8", "9", "9"]}).to_parquet(path)
    graph = read_edge_list(path)
    assert graph.products["product_key"].tolist() == ["7", "8", "9"]
    assert set(zip(graph.edges["src"], graph.edges["dst"], strict=False)) == {(0, 1), (1, 2), (0, 2)}


def test_unreadable_edge_list_is_refused(tmp_path):
    path = tmp_path / "graph.parquet"
    path.write_bytes(b"this is not parquet at all")
    assert "unreadable" in str(assert_refused(read_edge_list, path, None))
    assert "not found" in str(assert_refused(read_edge_list, tmp_path / "missing.csv", None))


# --------------------------------------------------------------------------- npz


def test_npz_graph_with_names_loops_and_duplicates_never_reads_labels(tmp_path, caplog):
    # Raw CSR rows: 0 -> 1 stored twice, 2 -> 2 a self-loop, 3 -> 0 an explicit zero (no edge).
    path = tmp_path / "graph.npz"
    write_csr(
        path,
        data=[1, 1, 1, 1, 1, 1, 0],
        indices=[1, 1, 2, 2, 0, 3, 0],
        indptr=[0, 2, 3, 6, 7],
        shape=(4, 4),
        labels=np.array([3, 1, 0, 2]),
        node_names=np.array(["a\n", "b\n", "c\n", "d\n"]),
    )
    with caplog.at_level(logging.WARNING, logger="nextbuy.data.sources"):
        graph = read_npz_graph(path)
    assert graph.products["product_key"].tolist() == ["a", "b", "c", "d"]
    assert (graph.products["category"] == -1).all()  # class labels are never an input
    assert graph.cleaning["self_loops_dropped"] == 1
    assert graph.cleaning["duplicate_edges_merged"] == 1
    assert graph.cleaning["explicit_zeros_dropped"] == 1
    assert set(zip(graph.edges["src"], graph.edges["dst"], graph.edges["weight"], strict=False)) == {
        (0, 1, 2.0),
        (1, 2, 1.0),
        (2, 0, 1.0),
        (2, 3, 1.0),
    }
    assert "self-loop" in caplog.text
    assert "duplicate" in caplog.text


def test_npz_without_optional_arrays(tmp_path):
    path = tmp_path / "plain.npz"
    write_npz(path, sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)))
    graph = read_npz_graph(path)
    assert graph.products["product_key"].tolist() == ["0", "1", "2"]
    assert (graph.products["category"] == -1).all()
    assert len(graph.edges) == 2


def attr_arrays(features: sp.csr_matrix, **changes) -> dict[str, np.ndarray]:
    arrays = {
        "attr_matrix.data": features.data,
        "attr_matrix.indices": features.indices,
        "attr_matrix.indptr": features.indptr,
        "attr_matrix.shape": np.array(features.shape),
    }
    return {**arrays, **{f"attr_matrix.{k}": np.asarray(v) for k, v in changes.items()}}


def test_npz_attr_matrix_becomes_features_and_labels_are_never_loaded(tmp_path):
    adj = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32))
    words = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, 1]], dtype=np.float32))
    path = tmp_path / "graph.npz"
    # An object array cannot be loaded without allow_pickle: reading it would fail.
    labels = np.array([{"class": 1}, {"class": 0}, None], dtype=object)
    write_npz(path, adj, labels=labels, **attr_arrays(words))
    with pytest.raises(ValueError, match="allow_pickle"), np.load(path, allow_pickle=False) as data:
        data["labels"]
    graph = read_npz_graph(path)
    assert sp.issparse(graph.features)
    assert graph.features.format == "csr"
    assert graph.features.shape == (3, 4)
    assert graph.features.dtype == np.float32
    np.testing.assert_array_equal(graph.features.toarray(), words.toarray())
    assert (graph.products["category"] == -1).all()
    # no attr_matrix: no features; an edge list has none either
    write_npz(path, adj)
    assert read_npz_graph(path).features is None
    (tmp_path / "graph.csv").write_text("src,dst\n1,2\n")
    assert read_edge_list(tmp_path / "graph.csv").features is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"shape": [2, 4]}, "one row per node"),  # rows != nodes
        ({"indices": [0, 2, 9, 3]}, "out of range"),
        ({"data": [1.0, np.nan, 3.0, 1.0]}, "non-finite"),
        ({"indptr": [0, 2, 1, 4]}, "indptr"),
        ({"data": ["a", "b", "c", "d"]}, "not numeric"),
    ],
)
def test_malformed_attr_matrix_is_refused(tmp_path, changes, fragment):
    adj = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32))
    words = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, 1]], dtype=np.float32))
    path = tmp_path / "graph.npz"
    write_npz(path, adj, **attr_arrays(words, **changes))
    assert fragment in str(assert_refused(read_npz_graph, path, "attr_matrix"))


def test_incomplete_attr_matrix_is_refused(tmp_path):
    adj = sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=np.float32))
    arrays = attr_arrays(sp.csr_matrix(np.eye(2, dtype=np.float32)))
    del arrays["attr_matrix.indptr"]
    path = tmp_path / "graph.npz"
    write_npz(path, adj, **arrays)
    assert "attr_matrix.indptr" in str(assert_refused(read_npz_graph, path, "attr_matrix"))


def test_bad_npz_is_refused(tmp_path):
    good = sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=np.float32))

    path = tmp_path / "no_indptr.npz"
    np.savez(
        path,
        **{
            "adj_matrix.data": good.data,
            "adj_matrix.indices": good.indices,
            "adj_matrix.shape": np.array(good.shape),
        },
    )
    assert_refused(read_npz_graph, path, "adj_matrix.indptr")

    path = tmp_path / "out_of_range.npz"
    np.savez(
        path,
        **{
            "adj_matrix.data": good.data,
            "adj_matrix.indices": np.array([1, 5]),
            "adj_matrix.indptr": good.indptr,
            "adj_matrix.shape": np.array(good.shape),
        },
    )
    assert_refused(read_npz_graph, path, "adj_matrix")

    path = tmp_path / "short_labels.npz"  # labels are not read, so not judged either
    write_npz(path, good, labels=np.array([0, 1, 2]))
    assert (read_npz_graph(path).products["category"] == -1).all()

    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert "empty" in str(assert_refused(read_npz_graph, path, None))

    path = tmp_path / "garbage.npz"
    path.write_bytes(b"PK not really a zip")
    assert "unreadable" in str(assert_refused(read_npz_graph, path, None))


def test_cora_ml(cora_npz):
    graph = read_npz_graph(cora_npz)
    assert len(graph.products) == 2995
    # The file holds 8,416 directed edges, already without self-loops or duplicates.
    assert len(graph.edges) == 8416
    assert graph.cleaning["self_loops_dropped"] == 0
    assert graph.cleaning["duplicate_edges_merged"] == 0
    assert (graph.products["category"] == -1).all()  # its 7 class labels stay out
    assert graph.products["product_key"].iloc[0] == "129558"  # trailing newline stripped
    assert graph.features.shape == (2995, 2879)
    assert graph.features.nnz > 0
    # About 6% of citations are reciprocated: the graph is directed.
    n = len(graph.products)
    u, v = graph.edges["src"].to_numpy(), graph.edges["dst"].to_numpy()
    assert np.isin(v * n + u, u * n + v).mean() == pytest.approx(0.061, abs=0.005)

    cfg = config("ingest.simulator")
    world = world_from_graph(graph.products, graph.edges, cfg, seed=0)
    traffic = simulate_traffic(world, cfg, 0, 5000, Window(world.start, world.snapshot, world.snapshot))
    io.validate(traffic.impressions, schemas.IMPRESSIONS_LOG, "cora")
    io.validate(traffic.truth, schemas.TRUTH_IMPRESSIONS, "cora")
    assert 0.005 < traffic.truth["label_eventual"].mean() < 0.1
    tp = world.truth_products
    src, tgt = tp.filter(regex="^src_").to_numpy(), tp.filter(regex="^tgt_").to_numpy()
    forward = np.einsum("ij,ij->i", src[u], tgt[v]).mean()
    backward = np.einsum("ij,ij->i", src[v], tgt[u]).mean()
    assert forward > backward + 0.3  # citing and being cited are different roles


# --------------------------------------------------------------------------- impressions log


@pytest.fixture
def products() -> pd.DataFrame:
    keys = ["phone", "case", "charger", "42"]
    return pd.DataFrame(
        {
            "product_id": np.arange(4, dtype=np.int64),
            "product_key": pd.Series(keys, dtype=object),
            "category": np.full(4, -1, dtype=np.int64),
            "price": np.full(4, np.nan),
        }
    )


def log_frame(**changes) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "impression_id": [10, 11, 12],
            "source_id": ["phone", "phone", "42"],
            "shown_id": ["case", "charger", "phone"],
            "shown_at": [T0, T0 + pd.Timedelta(hours=1), T0 + pd.Timedelta(hours=2)],
            "clicked_at": [T0 + pd.Timedelta(minutes=1), pd.NaT, T0 + pd.Timedelta(hours=2, minutes=5)],
            "carted_at": [T0 + pd.Timedelta(minutes=9), pd.NaT, pd.NaT],
            "converted_at": [T0 + pd.Timedelta(days=2), pd.NaT, pd.NaT],
        }
    )
    return frame.assign(**changes)


def test_impressions_log_parquet_maps_keys_to_product_ids(tmp_path, products):
    path = tmp_path / "log.parquet"
    log_frame(extra=["x", "y", "z"]).to_parquet(path)
    log = read_impressions_log(path, products)
    assert list(log.columns) == list(schemas.IMPRESSIONS_LOG.columns)
    assert log["source_id"].tolist() == [0, 0, 3]
    assert log["shown_id"].tolist() == [1, 2, 0]
    assert log["impression_id"].tolist() == [10, 11, 12]
    assert log["converted_at"].iloc[0] == T0 + pd.Timedelta(days=2)


def test_impressions_log_csv_with_optional_columns_absent(tmp_path, products):
    path = tmp_path / "log.csv"
    path.write_text(
        "source_id,shown_id,shown_at,converted_at\n"
        "phone,case,2026-03-01T12:00:00Z,2026-03-02 08:00\n"
        "42,phone,1772366400,\n"
    )
    log = read_impressions_log(path, products)
    io.validate(log, schemas.IMPRESSIONS_LOG, path)
    assert log["impression_id"].tolist() == [0, 1]
    assert log["shown_id"].tolist() == [1, 0]  # the integer key 42 matches product_key "42"
    assert log["clicked_at"].isna().all()
    assert log["carted_at"].isna().all()
    assert log["shown_at"].iloc[1] == pd.Timestamp(1772366400, unit="s")
    assert all(
        log[c].dtype == "datetime64[ns]" for c in ("shown_at", "clicked_at", "carted_at", "converted_at")
    )


@pytest.mark.parametrize(
    ("case", "column"),
    [
        ("missing_column", "converted_at"),
        ("wrong_dtype", "impression_id"),
        ("unparseable_time", "shown_at"),
        ("nan_id", "source_id"),
        ("converted_before_shown", "converted_at"),
        ("clicked_before_shown", "clicked_at"),
        ("carted_before_shown", "carted_at"),
        ("unknown_product", "shown_id"),
        ("duplicate_impression_id", "impression_id"),
        ("boolean_time", "converted_at"),
    ],
)
def test_bad_impressions_log_is_refused(tmp_path, products, case, column):
    early = T0 - pd.Timedelta(days=1)
    frame = {
        "missing_column": lambda: log_frame().drop(columns="converted_at"),
        "wrong_dtype": lambda: log_frame(impression_id=["a", "b", "c"]),
        "unparseable_time": lambda: log_frame(shown_at=["2026-03-01", "yesterday-ish", "2026-03-02"]),
        "nan_id": lambda: log_frame(source_id=["phone", None, "42"]),
        "converted_before_shown": lambda: log_frame(converted_at=[pd.NaT, early, pd.NaT]),
        "clicked_before_shown": lambda: log_frame(clicked_at=[early, pd.NaT, pd.NaT]),
        "carted_before_shown": lambda: log_frame(carted_at=[pd.NaT, pd.NaT, early]),
        "unknown_product": lambda: log_frame(shown_id=["case", "tablet", "phone"]),
        "duplicate_impression_id": lambda: log_frame(impression_id=[10, 11, 10]),
        "boolean_time": lambda: log_frame(converted_at=[True, False, True]),
    }[case]()
    path = tmp_path / f"{case}.parquet"
    frame.to_parquet(path)
    error = assert_refused(read_impressions_log, path, column, products)
    if case in ("unknown_product", "converted_before_shown", "duplicate_impression_id"):
        assert error.rows is not None
        assert len(error.rows) >= 1
    if case == "unknown_product":
        assert "tablet" in str(error)


def test_exact_duplicate_impressions_are_dropped_counted_and_logged(tmp_path, products, caplog):
    path = tmp_path / "log.csv"
    path.write_text(
        "source_id,shown_id,shown_at,converted_at\n"
        "phone,case,2026-03-01 12:00:00,2026-03-02 08:00\n"
        "42,phone,2026-03-01 12:05:00,\n"
        "phone,case,2026-03-01 12:00:00,2026-03-02 08:00\n"  # row 0 logged twice
        "phone,case,2026-03-01 12:00:01,\n"  # same pair a second later: another impression
    )
    with caplog.at_level(logging.WARNING, logger="nextbuy.data.sources"):
        log = read_impressions_log(path, products)
    assert len(log) == 3
    assert log["converted_at"].notna().sum() == 1
    assert log["impression_id"].tolist() == [0, 1, 3]  # row numbers of the kept rows
    assert log.index.tolist() == [0, 1, 2]
    assert "dropped 1 exact duplicate row(s) of 4" in caplog.text
    assert "log.csv" in caplog.text

    # With impression ids: an exact copy is dropped too; a shared id with other content is refused.
    path = tmp_path / "log.parquet"
    frame = log_frame()
    pd.concat([frame, frame.iloc[[1]]], ignore_index=True).to_parquet(path)
    assert read_impressions_log(path, products)["impression_id"].tolist() == [10, 11, 12]
    changed = frame.iloc[[1]].assign(shown_id="case")
    pd.concat([frame, changed], ignore_index=True).to_parquet(path)
    assert "share an impression_id" in str(
        assert_refused(read_impressions_log, path, "impression_id", products)
    )


def test_empty_or_unreadable_impressions_log_is_refused(tmp_path, products):
    for name, content in (
        ("empty.csv", b""),
        ("header.csv", b"source_id,shown_id,shown_at,converted_at\n"),
        ("broken.parquet", b"PAR1 nope"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        assert_refused(read_impressions_log, path, None, products)


# --- files as users have them --------------------------------------------------------------


def test_a_snap_edge_list_reads_as_published(tmp_path):
    """SNAP's format: '#' comment lines, no header, two tab-separated columns."""
    path = tmp_path / "Amazon0302.txt"
    body = "".join(f"{i}\t{i + 1}\n" for i in range(11)) + "3\t0\n"
    path.write_text(
        "# Directed graph: Amazon0302.txt\n# Nodes: 12 Edges: 12\n# FromNodeId\tToNodeId\n" + body
    )
    graph = read_edge_list(path)
    assert len(graph.products) == 12
    assert len(graph.edges) == 12
    keys = graph.products.set_index("product_id")["product_key"]
    pairs = set(zip(keys[graph.edges["src"]].astype(int), keys[graph.edges["dst"]].astype(int), strict=True))
    assert (3, 0) in pairs
    assert (0, 1) in pairs


def test_a_headerless_file_with_a_third_column_asks_for_a_header(tmp_path):
    path = tmp_path / "weighted.txt"
    path.write_text("0 1 3\n1 2 4\n")
    error = assert_refused(read_edge_list, path, None)
    assert "add a header" in str(error)
    assert "'0 1 3'" in str(error)


def test_comment_lines_before_a_header_are_skipped(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("# exported 2026-11-27\nsrc,dst\n" + "".join(f"{i},{i + 1}\n" for i in range(10)))
    assert len(read_edge_list(path).edges) == 10


def test_a_csv_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_bytes(b"\xef\xbb\xbfsrc,dst\n" + b"".join(f"{i},{i + 1}\n".encode() for i in range(10)))
    assert len(read_edge_list(path).edges) == 10


def test_a_directory_or_a_looping_link_as_the_graph_says_what_it_is(tmp_path):
    assert "a directory, not a file" in str(assert_refused(read_edge_list, tmp_path, None))
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    assert "loops back on itself" in str(assert_refused(read_edge_list, loop, None))
    dangling = tmp_path / "gone.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    assert "nowhere.csv, which does not exist" in str(assert_refused(read_edge_list, dangling, None))


def test_negative_npz_weights_are_refused_naming_the_entries(tmp_path):
    adj = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, -2], [1, 0, 0]], dtype=np.float32))
    path = tmp_path / "graph.npz"
    write_npz(path, adj)
    error = assert_refused(read_npz_graph, path, "adj_matrix.data")
    assert "A[1, 2] = -2" in str(error)


def test_out_of_range_npz_indices_name_the_first_entries(tmp_path):
    path = tmp_path / "graph.npz"
    write_csr(path, [1.0, 1.0, 1.0], [1, 7, 0], [0, 1, 2, 3], (3, 3))
    error = assert_refused(read_npz_graph, path, "adj_matrix")
    assert "row 1 index 7" in str(error)
