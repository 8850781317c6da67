"""Link-prediction loader: Cora-ML's largest weakly connected component and DirLinkBench split 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy.mlops.io import DataError
from nextbuy_lab.linkpred import DEFAULT_GRAPH
from nextbuy_lab.linkpred_data import check_split_matches, load_graph, load_split


@pytest.fixture
def split0(cora_npz: Path) -> Path:
    folder = cora_npz.parent / "split0"
    if not folder.exists():
        pytest.skip(f"{folder} not present")
    return folder


def test_cora_lwcc(cora_npz: Path) -> None:
    graph = load_graph(cora_npz)
    assert graph.n_nodes == 2810
    assert len(graph.edges) == 8229
    assert graph.features is not None
    assert graph.features.shape == (2810, 2879)
    assert np.all(np.diff(graph.original_ids) > 0)
    assert (graph.edges[:, 0] != graph.edges[:, 1]).all()


def test_cora_split0_matches_graph(cora_npz: Path, split0: Path) -> None:
    graph = load_graph(cora_npz)
    split = load_split(split0, graph.n_nodes)
    assert len(split.observed) == 6584
    assert len(split.pos_val) == 411
    assert len(split.pos_test) == 1234
    assert len(split.neg_test) == 1234
    assert check_split_matches(graph, split)


def test_split_with_too_few_nodes_is_refused(cora_npz: Path, split0: Path) -> None:
    with pytest.raises(DataError, match="node ids"):
        load_split(split0, 100)


def test_edge_list_keeps_largest_component(tmp_path: Path) -> None:
    path = tmp_path / "edges.csv"
    pd.DataFrame({"src": [10, 11, 12, 12, 20], "dst": [11, 12, 10, 12, 21]}).to_csv(path, index=False)
    graph = load_graph(path)
    assert graph.n_nodes == 3
    assert graph.features is None
    assert graph.edges.tolist() == [[0, 1], [1, 2], [2, 0]]


def test_negative_that_is_an_edge_is_refused(tmp_path: Path) -> None:
    e = np.array([[0, 1], [1, 2]])
    for name in ("observed_graph", "pos_train_edges", "pos_val_edges", "pos_test_edges"):
        np.save(tmp_path / f"{name}.npy", e.T if name == "observed_graph" else e)
    for name in ("neg_train_edges", "neg_val_edges"):
        np.save(tmp_path / f"{name}.npy", np.array([[2, 0], [0, 2]]))
    np.save(tmp_path / "neg_test_edges.npy", np.array([[2, 0], [0, 1]]))
    with pytest.raises(DataError, match="1 test negatives are edges"):
        load_split(tmp_path, 3)


def test_linkpred_reads_the_shared_cora_ml_by_default(cora_npz: Path) -> None:
    assert cora_npz.resolve() == DEFAULT_GRAPH
