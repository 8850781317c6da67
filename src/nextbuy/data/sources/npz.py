"""A PPNP-style ``.npz`` graph (e.g. Cora-ML): its adjacency and, when present, its attribute matrix."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.sources.keys import NPZ_ADJ_KEYS, NPZ_ATTR_KEYS, GraphSource, _clean_edges
from nextbuy.mlops import io, schemas
from nextbuy.mlops.io import DataError

log = logging.getLogger(__name__)


def read_npz_graph(path: os.PathLike | str) -> GraphSource:
    """A PPNP-style ``.npz`` (CSR ``adj_matrix.*``, optional ``node_names`` and ``attr_matrix.*``).

    Edge u->v for every nonzero A[u, v], weight A[u, v] (summed over duplicate entries;
    a negative weight is refused, naming the first entries); product_id = row index;
    product_key = node_names when present, else the row index; category unknown (-1); ``features`` = the CSR
    ``attr_matrix`` (e.g. bag-of-words) when present. The file's class
    ``labels`` are never read: they are what a benchmark on such a graph is
    about, never a model input.
    """
    arrays = io.read_npz(path, NPZ_ADJ_KEYS, ("node_names", *NPZ_ATTR_KEYS))
    shape, indptr, indices, values = _csr_arrays(path, arrays, "adj_matrix")
    n = shape[0] if len(shape) == 2 else -1
    problem = (
        "adj_matrix.shape must be square (n, n)"
        if len(shape) != 2 or shape[0] != shape[1] or n <= 0
        else _csr_problem("adj_matrix", shape, indptr, indices, values)
    )
    if problem:
        raise DataError(path, f"malformed adjacency: {problem}", column="adj_matrix")

    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    negative = np.flatnonzero(values < 0)
    if len(negative):  # a co-purchase count or link weight is never negative: a wrong sign, not |A|
        shown = ", ".join(f"A[{rows[i]}, {indices[i]}] = {values[i]:g}" for i in negative[:5])
        raise DataError(
            path,
            f"{len(negative)} negative adjacency weights (a weight counts co-purchases or links), "
            f"first: {shown}",
            column="adj_matrix.data",
        )
    nonzero = values != 0
    edges, cleaning = _clean_edges(
        rows[nonzero],
        indices[nonzero],
        values[nonzero],
        pd.Series(pd.NaT, index=np.arange(int(nonzero.sum())), dtype=schemas.TS),
        path,
    )
    cleaning["explicit_zeros_dropped"] = int((~nonzero).sum())

    category = np.full(n, -1, dtype=np.int64)  # unknown: class labels are not inputs
    keys = np.arange(n).astype(str)
    if "node_names" in arrays:
        names = np.asarray(arrays["node_names"])
        if names.shape != (n,):
            raise DataError(
                path, f"node_names must have {n} entries, got shape {names.shape}", column="node_names"
            )
        keys = np.char.strip(names.astype(str))  # PPNP names carry a trailing newline
    products = pd.DataFrame(
        {
            "product_id": np.arange(n, dtype=np.int64),
            "product_key": keys.astype(object),
            "category": category,
            "price": np.full(n, np.nan),
        }
    )
    cleaning["products"] = n
    return GraphSource(
        io.validate(products, schemas.PRODUCTS, path),
        io.validate(edges, schemas.EDGES, path),
        cleaning,
        _attributes(path, arrays, n),
    )


def _csr_arrays(
    path: os.PathLike | str, arrays: dict[str, np.ndarray], name: str
) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    """``name.{shape,indptr,indices,data}`` as numbers; DataError (column ``name``) when not."""
    try:
        shape = tuple(int(x) for x in np.asarray(arrays[f"{name}.shape"]).ravel())
        indptr = np.asarray(arrays[f"{name}.indptr"], dtype=np.int64)
        indices = np.asarray(arrays[f"{name}.indices"], dtype=np.int64)
        values = np.asarray(arrays[f"{name}.data"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(path, f"{name} arrays are not numeric ({err})", column=name) from None
    return shape, indptr, indices, values


def _csr_problem(
    name: str, shape: tuple[int, ...], indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> str | None:
    """What is wrong with a CSR matrix of a 2-d ``shape``, or None."""
    n_rows, n_cols = shape
    return (
        f"{name}.indptr must have n+1 non-decreasing entries ending at len(indices)"
        if len(indptr) != n_rows + 1
        or indptr[0] != 0
        or indptr[-1] != len(indices)
        or np.any(np.diff(indptr) < 0)
        else f"{name}.data and {name}.indices differ in length"
        if len(values) != len(indices)
        else _out_of_range(name, indptr, indices, n_cols)
        if len(indices) and (indices.min() < 0 or indices.max() >= n_cols)
        else f"{name}.data has non-finite values"
        if not np.isfinite(values).all()
        else None
    )


def _out_of_range(name: str, indptr: np.ndarray, indices: np.ndarray, n_cols: int) -> str:
    """The first CSR entries whose column index is outside 0..n_cols-1, as (row, index)."""
    bad = np.flatnonzero((indices < 0) | (indices >= n_cols))
    rows = np.searchsorted(indptr, bad, side="right") - 1
    shown = ", ".join(f"row {r} index {indices[i]}" for r, i in zip(rows[:5], bad[:5], strict=True))
    return f"{name}.indices out of range 0..{n_cols - 1} at {len(bad)} entries, first: {shown}"


def _attributes(path: os.PathLike | str, arrays: dict[str, np.ndarray], n: int) -> sp.csr_matrix | None:
    """The npz's node attributes (CSR ``attr_matrix.*``, e.g. bag-of-words) as features, one row
    per node; None when the file has none."""
    present = [k for k in NPZ_ATTR_KEYS if k in arrays]
    if not present:
        return None
    if len(present) < len(NPZ_ATTR_KEYS):
        missing = [k for k in NPZ_ATTR_KEYS if k not in arrays]
        raise DataError(
            path, f"attr_matrix incomplete: missing array(s) {', '.join(missing)}", column="attr_matrix"
        )
    shape, indptr, indices, values = _csr_arrays(path, arrays, "attr_matrix")
    problem = (
        f"attr_matrix.shape must be ({n}, n_attributes), one row per node"
        if len(shape) != 2 or shape[0] != n or shape[1] < 0
        else _csr_problem("attr_matrix", shape, indptr, indices, values)
    )
    if problem:
        raise DataError(path, f"malformed attributes: {problem}", column="attr_matrix")
    features = sp.csr_matrix((values.astype(np.float32), indices, indptr), shape=shape)
    features.sum_duplicates()
    return features
