"""BLADE's pair-structure head: the structure of a pair is what its definition says (checked
against dense matrix algebra), the stacked score ranks what the held-out edges teach it, and the
structure prior ranks edges it never saw above random pairs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy_lab.pair_structure import (
    FEATURE_COLUMNS,
    FEATURES,
    PairStructure,
    StackedLinkScore,
    StructurePrior,
    _row_dot,
    standardiser,
)


def _dense_features(edges: np.ndarray, n: int, x: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    a = np.zeros((n, n))
    a[edges[:, 0], edges[:, 1]] = 1.0
    u = ((a + a.T) > 0).astype(float)
    deg = u.sum(1)
    inv_log = np.where(deg > 1, 1 / np.log(np.maximum(deg, 2)), 0.0)
    inv = np.where(deg > 0, 1 / np.maximum(deg, 1), 0.0)
    p2 = a @ a
    tables = [(u * inv_log) @ u, (u * inv) @ u, u @ u, p2, p2 @ a, a @ a.T, a.T @ a, p2.T]
    cols = [np.log1p(t[src, dst]) for t in tables] + [a[dst, src]]
    cols += [
        np.log1p(d)
        for d in (a.sum(1)[src], a.sum(0)[dst], a.sum(0)[src], a.sum(1)[dst], u.sum(1)[src], u.sum(1)[dst])
    ]
    unit = _unit(x)
    smoothed, out_mean, in_mean = (_unit(_row_mean(m) @ unit) for m in (u + np.eye(n), a, a.T))
    cols += [(left[src] * right[dst]).sum(1) for left, right in
             ((unit, unit), (smoothed, smoothed), (out_mean, unit), (unit, in_mean))]  # fmt: skip
    return np.stack(cols, 1)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _row_mean(m: np.ndarray) -> np.ndarray:
    total = m.sum(1, keepdims=True)
    return np.divide(m, total, out=np.zeros_like(m), where=total > 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 25), density=st.floats(0.02, 0.4))
def test_structure_matches_its_definition_in_dense_algebra(seed, n, density):
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < density) & ~np.eye(n, dtype=bool)
    edges = np.argwhere(a)
    x = rng.random((n, 6)) * (rng.random((n, 6)) < 0.5)  # some all-zero rows
    structure = PairStructure.of(edges, n, sp.csr_matrix(x))
    src, dst = rng.integers(0, n, 30), rng.integers(0, n, 30)
    got = structure(src, dst)
    assert structure.names == FEATURES + FEATURE_COLUMNS
    assert got.shape == (30, len(structure.names))
    np.testing.assert_allclose(got, _dense_features(edges, n, x, src, dst), rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 30), f=st.integers(1, 40))
def test_sparse_row_products_equal_dense_ones_whichever_row_is_longer(seed, n, f):
    # rows from empty to full on both sides, stored unsorted and with duplicate entries, as a
    # matrix product or a hand-built CSR can leave them: each pair walks its shorter row
    rng = np.random.default_rng(seed)
    dense = [rng.random((n, f)) * (rng.random((n, f)) < rng.random((n, 1))) for _ in range(2)]
    left, right = (_shuffled_with_duplicates(x, rng) for x in dense)
    rows_l, rows_r = rng.integers(0, n, 50), rng.integers(0, n, 50)
    got = _row_dot(left, right, rows_l, rows_r)
    np.testing.assert_allclose(got, (dense[0][rows_l] * dense[1][rows_r]).sum(1), rtol=1e-12, atol=1e-12)


def _shuffled_with_duplicates(x: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """CSR of ``x`` with each row's entries in random order and some split into two halves."""
    rows, cols = np.nonzero(x)
    split = rng.random(len(rows)) < 0.3
    rows = np.r_[rows, rows[split]]
    cols = np.r_[cols, cols[split]]
    vals = np.r_[np.where(split, 0.5, 1.0) * x[np.nonzero(x)], 0.5 * x[np.nonzero(x)][split]]
    order = np.lexsort((rng.random(len(rows)), rows))
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=x.shape[0]))]
    return sp.csr_matrix((vals[order], cols[order], indptr), shape=x.shape)


def test_without_features_there_is_no_cosine_and_duplicate_edges_count_once():
    edges = np.array([[0, 1], [0, 1], [1, 2]])
    structure = PairStructure.of(edges, 3)
    assert structure.names == FEATURES
    row = dict(zip(structure.names, structure(np.array([0]), np.array([2]))[0], strict=True))
    assert row["paths_2"] == pytest.approx(np.log1p(1.0))  # 0 -> 1 -> 2, once
    assert row["reverse_edge"] == 0.0
    assert row["out_degree_u"] == pytest.approx(np.log1p(1.0))


def test_direction_shows_in_the_directed_columns_only():
    edges = np.array([[0, 1], [1, 2], [3, 2]])
    structure = PairStructure.of(edges, 4)
    forward, backward = structure(np.array([0, 2]), np.array([2, 0]))
    names = list(structure.names)
    for name in ("adamic_adar", "resource_allocation", "common_neighbours"):
        assert forward[names.index(name)] == backward[names.index(name)], name
    assert forward[names.index("paths_2")] > 0
    assert backward[names.index("paths_2")] == 0
    assert backward[names.index("reverse_paths_2")] > 0


def test_feature_cosines_say_whether_v_looks_like_what_u_points_to():
    # 0 -> 1, and 2 has 1's words: 2 looks like what 0 points to, 0 does not look like what 2 points to
    edges = np.array([[0, 1], [2, 3]])
    x = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]))
    structure = PairStructure.of(edges, 4, x)
    forward, backward = structure(np.array([0, 2]), np.array([2, 0]))
    names = list(structure.names)
    assert forward[names.index("out_mean_cosine")] == pytest.approx(1.0)
    assert backward[names.index("out_mean_cosine")] == 0.0
    assert forward[names.index("feature_cosine")] == backward[names.index("feature_cosine")] == 0.0
    assert forward[names.index("smoothed_cosine")] == backward[names.index("smoothed_cosine")] > 0


def test_stacked_score_learns_which_columns_separate_held_out_edges():
    rng = np.random.default_rng(0)
    positive = np.c_[rng.normal(1.0, 1, 400), rng.normal(2.0, 1, 400), rng.normal(0, 1, 400)]
    negative = np.c_[rng.normal(0.0, 1, 4000), rng.normal(0.0, 1, 4000), rng.normal(0, 1, 4000)]
    head = StackedLinkScore.fit(positive, negative)
    assert head.coef[1] > head.coef[0] > abs(head.coef[2])  # the stronger signal weighs more
    probe = np.array([[0.0, 3.0, 0.0], [0.0, -3.0, 0.0]])
    high, low = head(probe)
    assert high > low
    with pytest.raises(ValueError, match="held-out"):
        StackedLinkScore.fit(positive[:0], negative)


def test_standardiser_puts_negatives_at_zero_mean_unit_spread():
    negatives = np.array([1.0, 2.0, 3.0, 4.0])
    z = standardiser(negatives)
    assert z(negatives).mean() == pytest.approx(0.0)
    assert z(negatives).std() == pytest.approx(1.0)
    assert standardiser(np.ones(3))(np.array([1.0, 2.0])).tolist() == [0.0, 1.0]  # no spread: shift only


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(4, 25), density=st.floats(0.05, 0.4))
def test_projected_feature_views_keep_the_cosines_on_an_orthonormal_basis(seed, n, density):
    rng = np.random.default_rng(seed)
    edges = np.argwhere((rng.random((n, n)) < density) & ~np.eye(n, dtype=bool))
    x = rng.random((n, 6)) * (rng.random((n, 6)) < 0.5)
    exact = PairStructure.of(edges, n, sp.csr_matrix(x))
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # any rotation of the full feature space
    projected = exact.features.projected(basis.astype(np.float32))
    src, dst = rng.integers(0, n, 30), rng.integers(0, n, 30)
    np.testing.assert_allclose(projected.cosines(src, dst), exact.features.cosines(src, dst), atol=1e-5)


def _communities(rng: np.random.Generator, n: int = 160, k: int = 4) -> tuple[np.ndarray, sp.csr_matrix]:
    """Dense directed links inside each of ``k`` communities, with words that tell them apart."""
    group = np.arange(n) % k
    same = group[:, None] == group[None, :]
    edges = np.argwhere((rng.random((n, n)) < np.where(same, 0.3, 0.005)) & ~np.eye(n, dtype=bool))
    own_words = np.arange(10 * k) // 10 == group[:, None]
    words = rng.random((n, 10 * k)) < np.where(own_words, 0.3, 0.02)
    return edges, sp.csr_matrix(words.astype(float))


@pytest.mark.parametrize("with_features", [True, False])
def test_structure_prior_ranks_edges_it_never_saw_above_random_pairs(with_features):
    rng = np.random.default_rng(3)
    edges, words = _communities(rng)
    n = words.shape[0]
    unseen = rng.random(len(edges)) < 0.2
    prior = StructurePrior.fit(edges[~unseen], n, words if with_features else None, share=0.5, rank=8, seed=0)
    logit = prior.on(edges[~unseen])
    positive = logit(*edges[unseen].T)
    negative = logit(rng.integers(0, n, 2000), rng.integers(0, n, 2000))
    auc = (positive[:, None] > negative[None, :]).mean()
    assert auc > 0.8, auc


def test_structure_prior_reads_the_graph_it_is_given():
    rng = np.random.default_rng(4)
    edges, words = _communities(rng)
    prior = StructurePrior.fit(edges, words.shape[0], words, share=0.5, rank=8, seed=0)
    u, w = edges[0]
    v = next(
        int(b) for a, b in edges if a == w and not ((edges[:, 0] == u) & (edges[:, 1] == b)).any() and b != u
    )
    with_path = prior.on(edges)(np.array([u]), np.array([v]))  # u -> w -> v
    without = prior.on(edges[1:])(np.array([u]), np.array([v]))  # the edge u -> w gone
    assert with_path[0] > without[0]


def test_structure_prior_refuses_a_share_that_leaves_nothing_to_learn_from():
    edges = np.array([[0, 1], [1, 2], [2, 0]])
    for share in (0.0, 1.0):
        with pytest.raises(ValueError, match="share"):
            StructurePrior.fit(edges, 3, None, share=share, rank=4, seed=0)
    with pytest.raises(ValueError, match="rank"):
        StructurePrior.fit(edges, 3, None, share=0.5, rank=0, seed=0)
