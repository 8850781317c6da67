"""Node features for BLADE's input projection: what the model is allowed to see, and in what shape."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.domain.graph.features import row_normalised, store_features, to_torch

N_DENSE = 4  # z(log price), price unknown, z(log 1+out-degree), z(log 1+in-degree)


def test_row_normalised_rows_have_unit_l1_norm_and_keep_their_signs_and_proportions():
    x = sp.csr_matrix(np.array([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 2.0], [0.5, 0.0, 0.0]]))
    y = row_normalised(x)
    assert sp.isspmatrix_csr(y)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    dense = y.toarray()
    np.testing.assert_allclose(np.abs(dense).sum(axis=1), [1.0, 0.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(dense[0], [0.25, -0.75, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(dense[1], 0.0)  # zero rows stay zero (no NaN)
    np.testing.assert_allclose(dense[3], [1.0, 0.0, 0.0])
    # already normalised rows are a fixed point
    np.testing.assert_allclose(row_normalised(y).toarray(), dense, rtol=1e-6)


def test_to_torch_is_a_coalesced_float32_copy():
    x = sp.random(7, 5, density=0.4, format="csr", random_state=np.random.default_rng(0), dtype=np.float64)
    t = to_torch(x)
    assert t.layout == torch.sparse_coo
    assert t.is_coalesced()
    assert t.dtype == torch.float32
    assert tuple(t.shape) == (7, 5)
    np.testing.assert_allclose(t.to_dense().numpy(), x.toarray().astype(np.float32))
    empty = to_torch(sp.csr_matrix((3, 2)))
    assert tuple(empty.shape) == (3, 2)
    assert empty._nnz() == 0


def _store():
    category = np.array([0, 2, 2, -1, 1, 0])
    price = np.array([10.0, 20.0, np.nan, 5.0, 40.0, 10.0])
    src = np.array([0, 0, 0, 1, 4])
    dst = np.array([1, 2, 4, 2, 2])
    return category, price, src, dst


def test_store_features_columns():
    category, price, src, dst = _store()
    x = store_features(category, price, src, dst)
    assert sp.isspmatrix_csr(x)
    assert x.dtype == np.float32
    assert x.shape == (6, 3 + N_DENSE)
    dense = x.toarray()
    onehot, z_price, unknown, z_out, z_in = dense[:, :3], dense[:, 3], dense[:, 4], dense[:, 5], dense[:, 6]
    # one-hot categories; an unknown category (-1) has none
    np.testing.assert_array_equal(onehot, [[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 0]])
    # log price standardised over the known prices; an unknown price is 0 and flagged
    known = np.isfinite(price)
    np.testing.assert_array_equal(unknown, ~known)
    assert z_price[~known].tolist() == [0.0]
    assert z_price[known].mean() == pytest.approx(0.0, abs=1e-6)
    assert z_price[known].std() == pytest.approx(1.0, rel=1e-5)
    assert np.argsort(z_price[known]).tolist() == np.argsort(np.log(price[known])).tolist()
    assert z_price[0] == z_price[5]  # same price, same value
    # popularity: log(1 + degree) standardised, out-degree from src and in-degree from dst
    out_deg, in_deg = np.array([3, 1, 0, 0, 1, 0]), np.array([0, 1, 3, 0, 1, 0])
    for z, deg in ((z_out, out_deg), (z_in, in_deg)):
        expected = np.log1p(deg)
        np.testing.assert_allclose(z, (expected - expected.mean()) / expected.std(), rtol=1e-5, atol=1e-6)


def test_store_features_do_not_depend_on_the_currency_and_survive_degenerate_columns():
    category, price, src, dst = _store()
    x = store_features(category, price, src, dst).toarray()
    np.testing.assert_allclose(store_features(category, 100.0 * price, src, dst).toarray(), x, atol=1e-5)
    # no known price, one price for all, no edges: zeros, never NaN
    for p in (np.full(6, np.nan), np.full(6, 7.0)):
        y = store_features(category, p, src[:0], dst[:0]).toarray()
        assert np.isfinite(y).all()
        np.testing.assert_array_equal(y[:, 3], 0.0)
        np.testing.assert_array_equal(y[:, 5:], 0.0)
    assert (store_features(category, np.full(6, np.nan), src, dst).toarray()[:, 4] == 1.0).all()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(-1, 5), min_size=n, max_size=n),
            st.lists(st.one_of(st.none(), st.floats(0.01, 1e6)), min_size=n, max_size=n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60),
        )
    )
)
def test_store_features_are_finite_with_one_hot_categories(case):
    category, price, edges = case
    category = np.array(category, dtype=np.int64)
    price = np.array([np.nan if p is None else p for p in price], dtype=float)
    src = np.array([e[0] for e in edges], dtype=np.int64)
    dst = np.array([e[1] for e in edges], dtype=np.int64)
    x = store_features(category, price, src, dst)
    n_cat = int(category.max()) + 1 if category.max() >= 0 else 0
    assert x.shape == (category.size, n_cat + N_DENSE)
    dense = x.toarray()
    assert np.isfinite(dense).all()
    np.testing.assert_array_equal(dense[:, :n_cat].sum(axis=1), (category >= 0).astype(np.float32))
    known = category >= 0
    assert (dense[np.flatnonzero(known), category[known]] == 1.0).all()
    np.testing.assert_array_equal(dense[:, n_cat + 1], np.isnan(price).astype(np.float32))
