"""Node feature matrices for BLADE's input projection (no labels, ever).

A store's products get one-hot categories, standardised log price (with a "price
unknown" flag) and log popularity (out- and in-degree in the graph the model may
see); a citation graph brings its own bag-of-words.  Rows are scaled to unit L1 norm
(PyG's ``NormalizeFeatures``) so that long and short rows weigh alike.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def row_normalised(features: sp.spmatrix, dtype: type = np.float32) -> sp.csr_matrix:
    """Rows scaled to unit L1 norm; zero rows stay zero (of an adjacency matrix: a mean over each
    row's neighbours)."""
    x = sp.csr_matrix(features, dtype=dtype)
    total = np.asarray(abs(x).sum(axis=1)).ravel()
    scale = np.where(total > 0, 1.0 / np.maximum(total, 1e-12), 0.0)
    return sp.csr_matrix(sp.diags(scale) @ x, dtype=dtype)


def to_torch(features: sp.spmatrix) -> Tensor:
    """A scipy sparse matrix as a coalesced torch sparse COO float32 tensor."""
    coo = sp.coo_matrix(features, dtype=np.float32)
    index = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    return torch.sparse_coo_tensor(
        index, torch.as_tensor(coo.data), coo.shape, check_invariants=True
    ).coalesce()


def _standardised(values: np.ndarray) -> np.ndarray:
    known = np.isfinite(values)
    if not known.any():
        return np.zeros_like(values)
    mu, sd = values[known].mean(), values[known].std()
    return np.where(known, (values - mu) / (sd if sd > 1e-9 else 1.0), 0.0)


def store_features(
    category: np.ndarray, price: np.ndarray, src: np.ndarray, dst: np.ndarray
) -> sp.csr_matrix:
    """``[one-hot category | z(log price) | price unknown | z(log 1+out-degree) | z(log 1+in-degree)]``.

    ``category`` -1 = unknown (no one-hot), ``price`` NaN = unknown; degrees count the edges
    ``src -> dst``.  Dense columns are standardised; the matrix is not row-normalised (signs matter).
    """
    category = np.asarray(category, dtype=np.int64)
    n = category.size
    n_cat = int(category.max()) + 1 if n and category.max() >= 0 else 0
    known = category >= 0
    onehot = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (np.nonzero(known)[0], category[known])),
        shape=(n, n_cat),
    )
    log_price = np.log(np.asarray(price, dtype=np.float64))
    out_deg = np.bincount(np.asarray(src, dtype=np.int64), minlength=n)
    in_deg = np.bincount(np.asarray(dst, dtype=np.int64), minlength=n)
    dense = np.column_stack(
        [
            _standardised(log_price),
            (~np.isfinite(log_price)).astype(float),
            _standardised(np.log1p(out_deg.astype(float))),
            _standardised(np.log1p(in_deg.astype(float))),
        ]
    ).astype(np.float32)
    return sp.hstack([onehot, sp.csr_matrix(dense)], format="csr", dtype=np.float32)
