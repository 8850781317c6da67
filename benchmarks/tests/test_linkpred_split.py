"""DirLinkBench metrics on hand-made examples, splits and the largest weakly connected component."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from nextbuy_lab import linkpred_split as lp


def test_hits_counts_strictly_above_kth_negative() -> None:
    neg = np.array([0.9, 0.5, 0.1, 0.3])
    pos = np.array([0.95, 0.5, 0.6, 0.2])
    assert lp.hits_at_k(pos, neg, 1) == pytest.approx(0.25)  # only 0.95 > 0.9
    assert lp.hits_at_k(pos, neg, 2) == pytest.approx(0.5)  # 0.5 ties the 2nd negative: not a hit
    assert lp.hits_at_k(pos, neg, 4) == pytest.approx(1.0)  # 4th negative 0.1: all above
    assert lp.hits_at_k(pos, neg, 10) == 1.0  # pool smaller than K


def test_mrr_counts_ties_half() -> None:
    neg = np.array([0.9, 0.5, 0.1])
    # 0.95: rank 1; 0.5: one above, one tie -> rank 0.5*(2+1)+1 = 2.5; 0.0: rank 4
    assert lp.mrr(np.array([0.95, 0.5, 0.0]), neg) == pytest.approx((1 + 1 / 2.5 + 1 / 4) / 3)
    assert lp.mrr(np.array([1.0]), np.array([1.0])) == pytest.approx(1 / 1.5)


def test_auc_ap() -> None:
    auc, ap = lp.auc_ap(np.array([0.9, 0.8]), np.array([0.1, 0.85]))
    assert auc == pytest.approx(0.75)
    assert ap == pytest.approx((1 + 2 / 3) / 2)


def test_direction_auc_symmetric_score_is_half() -> None:
    emb = np.random.default_rng(0).normal(size=(10, 4))
    sym = lambda u, v: (emb[u] * emb[v]).sum(1)  # noqa: E731
    edges = np.array([[0, 1], [2, 3], [4, 5]])
    assert lp.direction_auc(sym, edges=edges) == 0.5
    assert lp.direction_auc(np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 2.0])) == pytest.approx(0.5)
    assert lp.direction_auc(np.array([1.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def test_masks() -> None:
    full = np.array([[0, 1], [1, 0], [1, 2], [3, 2]])
    assert lp.reverse_free_mask(np.array([[0, 1], [1, 2]]), full, 4).tolist() == [False, True]
    observed = np.array([[0, 1], [0, 2], [0, 3], [1, 2]])
    assert lp.low_degree_mask(np.array([[0, 3], [1, 3], [2, 0]]), observed, 4).tolist() == [False, True, True]


def test_make_split_sizes_and_negatives() -> None:
    rng = np.random.default_rng(1)
    edges = np.unique(rng.integers(0, 60, (400, 2)), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    split = lp.make_split(edges, 60, seed=3)
    m = len(edges)
    assert len(split.pos_train) + len(split.pos_val) + len(split.pos_test) == m
    assert abs(len(split.pos_test) - 0.15 * m) <= 1
    assert len(split.all_positives) == m
    keys = lp.edge_keys(edges, 60)
    for pos, neg in ((split.pos_train, split.neg_train), (split.pos_test, split.neg_test)):
        assert len(pos) == len(neg)
        assert not lp.has_edge(keys, neg[:, 0], neg[:, 1], 60).any()
        assert (neg[:, 0] != neg[:, 1]).all()
    all_neg = np.vstack([split.neg_train, split.neg_val, split.neg_test])
    assert len(np.unique(all_neg, axis=0)) == len(all_neg)
    again = lp.make_split(edges, 60, seed=3)
    assert np.array_equal(again.neg_test, split.neg_test)


def test_split_rejects_out_of_range_ids() -> None:
    e = np.array([[0, 1]])
    with pytest.raises(ValueError, match="node ids"):
        lp.LinkSplit(2, e, e, e, np.array([[0, 2]]), e, e, e)


def test_largest_wcc_keeps_order_and_drops_self_loops() -> None:
    # component {1, 3, 4} (largest, with a self-loop on 3) and {0, 2}
    rows, cols = [0, 1, 4, 3], [2, 3, 3, 3]
    adj = sp.csr_matrix((np.ones(4), (rows, cols)), shape=(5, 5))
    sub, keep = lp.largest_wcc(adj)
    assert keep.tolist() == [1, 3, 4]
    assert sub.nnz == 2
    assert sub[0, 1] == 1
    assert sub[2, 1] == 1


def test_as_edges_transposes_two_row_arrays() -> None:
    assert lp.as_edges(np.array([[0, 1, 2], [3, 4, 5]])).tolist() == [[0, 3], [1, 4], [2, 5]]
