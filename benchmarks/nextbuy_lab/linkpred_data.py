"""Graphs and fixed splits for the directed link-prediction benchmark.

:func:`load_graph` reads a PPNP-style ``.npz`` (CSR ``adj_matrix.*``, optional CSR
``attr_matrix.*`` bag-of-words features; class ``labels`` are never read) or a
directed edge list (.csv/.tsv/.parquet with src, dst), then keeps the largest
weakly connected component with nodes in increasing original order and no
self-loops (DirLinkBench's node indexing).  :func:`load_split` reads a
DirLinkBench split folder (``observed_graph.npy``, ``{pos,neg}_{train,val,test}_edges.npy``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from nextbuy.mlops.io import DataError
from nextbuy_lab.linkpred_split import LinkSplit, as_edges, edge_keys, has_edge, largest_wcc

SPLIT_PARTS = ("pos_train", "pos_val", "pos_test", "neg_train", "neg_val", "neg_test")


@dataclass(frozen=True, eq=False)
class LinkGraph:
    """A directed graph reduced to its largest weakly connected component."""

    n_nodes: int
    edges: np.ndarray  # (m, 2) int64, unique, no self-loops
    features: sp.csr_matrix | None  # (n, f) node features, None for a bare edge list
    original_ids: np.ndarray  # row of each node in the file (npz) or its product_id (edge list)


def _csr(arrays: np.lib.npyio.NpzFile, prefix: str, path: Path) -> sp.csr_matrix:
    try:
        parts = [np.asarray(arrays[f"{prefix}.{k}"]) for k in ("data", "indices", "indptr", "shape")]
        return sp.csr_matrix(tuple(parts[:3]), shape=tuple(int(x) for x in parts[3]))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(path, f"bad or missing {prefix}.* arrays ({err})", column=prefix) from None


def _read_npz(path: Path) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    with np.load(path, allow_pickle=False) as arrays:  # metadata object arrays are never touched
        adj = _csr(arrays, "adj_matrix", path)
        has_attr = "attr_matrix.data" in arrays.files
        features = _csr(arrays, "attr_matrix", path) if has_attr else None
    if adj.shape[0] != adj.shape[1]:
        raise DataError(path, f"adj_matrix must be square, got {adj.shape}", column="adj_matrix")
    if features is not None and features.shape[0] != adj.shape[0]:
        raise DataError(path, "attr_matrix must have one row per node", column="attr_matrix")
    return adj, features


def _read_edge_list(path: Path) -> sp.csr_matrix:
    from nextbuy.data.sources import read_edge_list

    source = read_edge_list(path)
    n = len(source.products)
    e = source.edges
    return sp.csr_matrix((np.ones(len(e)), (e["src"].to_numpy(), e["dst"].to_numpy())), shape=(n, n))


def load_graph(path: os.PathLike | str) -> LinkGraph:
    """The graph at ``path`` (``.npz`` or an edge list), reduced to its largest weakly connected component."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    adj, features = _read_npz(p) if p.suffix == ".npz" else (_read_edge_list(p), None)
    sub, keep = largest_wcc(adj)
    coo = sub.tocoo()
    edges = np.unique(np.stack([coo.row, coo.col], axis=1).astype(np.int64), axis=0)
    feats = None if features is None else sp.csr_matrix(features[keep], dtype=np.float32)
    return LinkGraph(len(keep), edges, feats, keep)


def _read_part(folder: Path, name: str) -> np.ndarray:
    file = folder / f"{name}.npy"
    if not file.exists():
        raise DataError(file, "file not found")
    try:
        return as_edges(np.load(file, allow_pickle=False))
    except ValueError as err:
        raise DataError(file, f"not an edge array ({err})") from None


def load_split(folder: os.PathLike | str, n_nodes: int) -> LinkSplit:
    """A DirLinkBench split folder, checked: node ids below ``n_nodes``, test negatives are non-edges."""
    d = Path(folder)
    parts = {name: _read_part(d, f"{name}_edges") for name in SPLIT_PARTS}
    observed = _read_part(d, "observed_graph")
    for name, e in [("observed_graph", observed), *parts.items()]:
        if len(e) and (e.min() < 0 or e.max() >= n_nodes):
            raise DataError(d / f"{name}.npy", f"node ids must lie in [0, {n_nodes}) (wrong graph?)")
    split = LinkSplit(n_nodes, observed, **parts)
    keys = edge_keys(split.all_positives, n_nodes)
    bad = has_edge(keys, split.neg_test[:, 0], split.neg_test[:, 1], n_nodes)
    if bad.any():
        raise DataError(d / "neg_test_edges.npy", f"{int(bad.sum())} test negatives are edges of the graph")
    return split


def check_split_matches(graph: LinkGraph, split: LinkSplit) -> bool:
    """Whether observed + val + test positives are exactly the graph's edges."""
    full = split.all_positives
    return len(full) == len(graph.edges) and bool(np.array_equal(full, graph.edges))
