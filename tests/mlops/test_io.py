"""Validated, atomic I/O: bad input names file, column and rows; failures leave old outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from nextbuy.mlops import io, schemas


def products(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": [f"p{i}" for i in range(n)],
            "category": np.zeros(n, dtype=np.int64),
            "price": np.ones(n),
        }
    )


def test_round_trip(tmp_path):
    path = tmp_path / "p.parquet"
    io.write_table(products(), path, schemas.PRODUCTS)
    pd.testing.assert_frame_equal(io.read_table(path, schemas.PRODUCTS), products())


@pytest.mark.parametrize(
    ("mutate", "column", "fragment"),
    [
        (lambda df: df.drop(columns=["price"]), "price", "missing column"),
        (lambda df: df.assign(product_id=df["product_id"].astype(float) + 0.5), "product_id", "wrong dtype"),
        (lambda df: df.assign(product_id=[0, 1, 1, 3]), "product_id", "duplicate"),
        (lambda df: df.assign(price=[1.0, -2.0, 1.0, 1.0]), "price", "failed check"),
    ],
)
def test_bad_table_names_file_column_rows(tmp_path, mutate, column, fragment):
    path = tmp_path / "products.parquet"
    mutate(products()).to_parquet(path)
    with pytest.raises(io.DataError) as err:
        io.read_table(path, schemas.PRODUCTS)
    assert err.value.column == column
    assert str(path) in err.value.message
    assert column in err.value.message
    assert fragment in err.value.message


def test_offending_rows_are_shown(tmp_path):
    path = tmp_path / "products.parquet"
    products().assign(price=[1.0, -2.0, 1.0, -7.0]).to_parquet(path)
    with pytest.raises(io.DataError) as err:
        io.read_table(path, schemas.PRODUCTS)
    assert list(err.value.rows["product_id"]) == [1, 3]
    assert "first offending rows" in err.value.message


def test_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(io.DataError, match="empty"):
        io.read_frame(empty)
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(io.DataError, match="unreadable"):
        io.read_frame(garbage)
    header_only = tmp_path / "h.csv"
    header_only.write_text("product_id,product_key,category,price\n")
    with pytest.raises(io.DataError, match="empty"):
        io.read_table(header_only, schemas.PRODUCTS)


def test_failed_write_leaves_previous_output(tmp_path):
    good, bad = tmp_path / "a.parquet", tmp_path / "b.parquet"
    io.write_tables([(products(), good, schemas.PRODUCTS), (products(), bad, schemas.PRODUCTS)])
    before = good.read_bytes()
    with pytest.raises(io.DataError):
        io.write_tables(
            [(products(6), good, schemas.PRODUCTS), (products().assign(price=-1.0), bad, schemas.PRODUCTS)]
        )
    assert good.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_event_order_and_foreign_keys():
    t = pd.Timestamp("2026-01-01")
    imp = pd.DataFrame(
        {
            "shown_at": [t, t],
            "clicked_at": [t, t - pd.Timedelta(hours=1)],
            "carted_at": [pd.NaT, pd.NaT],
            "converted_at": [pd.NaT, pd.NaT],
            "source_id": [0, 9],
            "shown_id": [1, 2],
        }
    )
    assert list(schemas.check_event_order(imp)) == ["clicked_at"]
    assert list(
        schemas.check_known_products(imp, ("source_id", "shown_id"), pd.Series([0, 1, 2]))["source_id"]
    ) == [1]

    # A conversion ends the funnel: a click or cart after it is refused (row 1 only).
    funnel = imp.assign(
        clicked_at=[t + pd.Timedelta(hours=1), t + pd.Timedelta(hours=3)],
        converted_at=[t + pd.Timedelta(hours=2), t + pd.Timedelta(hours=2)],
    )
    assert {k: list(v) for k, v in schemas.check_funnel_order(funnel).items()} == {"clicked_at": [1]}


def test_json_handles_numpy_and_nan(tmp_path):
    path = tmp_path / "m.json"
    io.write_json({"a": np.float32(1.5), "b": np.arange(2), "c": float("nan")}, path)
    assert io.read_json(path) == {"a": 1.5, "b": [0, 1], "c": None}


def test_sparse_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "features.npz"
    x = sp.random(5, 7, density=0.3, format="csr", dtype=np.float32, random_state=0)
    io.write_sparse(x, path)
    back = io.read_sparse(path, n_rows=5)
    assert back.format == "csr"
    assert back.shape == (5, 7)
    np.testing.assert_array_equal(back.toarray(), x.toarray())
    io.write_sparse(sp.csr_matrix((3, 0), dtype=np.float32), path)  # no columns is fine
    assert io.read_sparse(path, n_rows=3).shape == (3, 0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"

    with pytest.raises(io.DataError, match="expected 4") as err:
        io.read_sparse(path, n_rows=4)
    assert str(path) in err.value.message
    with pytest.raises(io.DataError, match="not found"):
        io.read_sparse(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK not really a zip")
    with pytest.raises(io.DataError, match="unreadable") as err:
        io.read_sparse(garbage)
    assert str(garbage) in err.value.message
    np.savez(garbage, a=np.arange(3))  # an npz, but not a sparse matrix
    with pytest.raises(io.DataError, match="unreadable"):
        io.read_sparse(garbage)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "file is empty"), (b'{"a": [1, 2', "unreadable JSON"), (b"\xff\xfe\x00\x01", "unreadable JSON")],
)
def test_bad_json_is_a_data_error(tmp_path, content, fragment):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(io.DataError, match=fragment) as err:
        io.read_json(path)
    assert err.value.path == str(path)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(io.DataError, match="unreadable file"):
        io.read_json(tmp_path / "folder.json")


def test_bad_npz_is_a_data_error(tmp_path):
    path = tmp_path / "x.npz"
    io.write_npz({"a": np.arange(3), "b": np.ones(2)}, path)
    assert set(io.read_npz(path, ("a", "b"))) == {"a", "b"}
    with pytest.raises(io.DataError, match="missing array") as err:
        io.read_npz(path, ("a", "c"))
    assert err.value.column == "c"
    path.write_bytes(path.read_bytes()[:-40])  # truncated: the zip directory is gone
    with pytest.raises(io.DataError, match="unreadable npz"):
        io.read_npz(path)
    path.write_bytes(b"")
    with pytest.raises(io.DataError, match="file is empty"):
        io.read_npz(path)
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(io.DataError, match="not an npz archive"):
        io.read_npz(path)


def test_empty_table_has_the_schema_columns_and_dtypes(tmp_path):
    path = tmp_path / "truth.parquet"
    io.write_empty_table(path, schemas.TRUTH_IMPRESSIONS)
    frame = pd.read_parquet(path)
    assert frame.empty
    assert list(frame.columns) == list(schemas.TRUTH_IMPRESSIONS.columns)
    assert frame.dtypes.astype(str).to_dict() == {
        "impression_id": "int64",
        "p_convert": "float64",
        "label_eventual": "int8",
        "delay_days": "float64",
    }
    with pytest.raises(io.DataError, match="is empty"):  # readers still refuse it, naming the file
        io.read_table(path, schemas.TRUTH_IMPRESSIONS)
    assert list(io.empty_table(schemas.IMPRESSIONS).dtypes.astype(str)) == [
        "int64",
        "int64",
        "int64",
        "datetime64[ns]",
        "datetime64[ns]",
        "datetime64[ns]",
        "datetime64[ns]",
        "object",
    ]
