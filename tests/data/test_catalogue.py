"""A catalogue gives products beyond the graph: an edge list over it keeps its edges on the
catalogue's products (renumbered in key order), takes categories and prices from it, and
refuses an edge-list product the catalogue does not list."""

from __future__ import annotations

import pandas as pd
import pytest

from nextbuy.data.sources import graph_with_catalogue, read_catalogue, read_edge_list
from nextbuy.mlops.io import DataError


def test_an_edge_list_over_a_catalogue_keeps_its_edges_on_the_catalogues_products(tmp_path):
    (tmp_path / "edges.csv").write_text("src,dst\nb,d\nd,b\nb,a\n")
    pd.DataFrame(
        {"product": ["a", "b", "c", "d"], "category": [3, 3, 1, 2], "price": [1.0, 2.0, 3.0, 4.0]}
    ).to_csv(tmp_path / "catalogue.csv", index=False)
    graph = read_edge_list(tmp_path / "edges.csv")
    assert graph.products["product_key"].tolist() == ["a", "b", "d"]
    full = graph_with_catalogue(graph, str(tmp_path / "edges.csv"), str(tmp_path / "catalogue.csv"))
    assert full.products["product_key"].tolist() == ["a", "b", "c", "d"]  # c: no edge, a product all the same
    assert full.products["category"].tolist() == [3, 3, 1, 2]
    key = full.products.set_index("product_id")["product_key"]
    pairs = set(zip(key[full.edges["src"]], key[full.edges["dst"]], strict=True))
    assert pairs == {("b", "d"), ("d", "b"), ("b", "a")}
    assert full.cleaning["products"] == 4


def test_an_edge_list_product_missing_from_the_catalogue_is_refused(tmp_path):
    (tmp_path / "edges.csv").write_text("src,dst\nb,d\nd,x\n")
    pd.DataFrame({"product": ["b", "d"]}).to_csv(tmp_path / "catalogue.csv", index=False)
    graph = read_edge_list(tmp_path / "edges.csv")
    with pytest.raises(DataError) as info:
        graph_with_catalogue(graph, str(tmp_path / "edges.csv"), str(tmp_path / "catalogue.csv"))
    assert info.value.column == "product"
    assert "edges.csv" in info.value.message
    assert "x" in info.value.message


@pytest.mark.parametrize(
    ("rows", "column", "words"),
    [
        ({"product": ["a", "a"], "price": [1.0, 2.0]}, "product", ("duplicate",)),
        ({"product": ["a", "b"], "price": [1.0, -2.0]}, "price", ("positive",)),
        ({"product": ["a", "b"], "category": [1, -4]}, "category", ("negative",)),
        ({"product": ["a", "b"], "launched_at": ["2026-01-01", "someday"]}, "launched_at", ("unparseable",)),
    ],
)
def test_bad_catalogue_rows_are_refused_naming_the_column(tmp_path, rows, column, words):
    pd.DataFrame(rows).to_csv(tmp_path / "catalogue.csv", index=False)
    with pytest.raises(DataError) as info:
        read_catalogue(tmp_path / "catalogue.csv", {})
    assert info.value.column == column
    for word in words:
        assert word in info.value.message
