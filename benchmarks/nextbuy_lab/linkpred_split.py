"""Directed link prediction, scored the DirLinkBench way (He et al., ICML 2025).

* Hits@K (OGB "collab" style): share of positive test edges scoring strictly above
  the K-th highest score of ONE global pool of negative test edges (1.0 when the
  pool has fewer than K negatives, as in OGB).
* MRR: each positive ranked among all negatives, ties counted half:
  ``rank = 0.5 * (#neg >= pos + #neg > pos) + 1``; mean of ``1 / rank``.
* AUC and AP over positives and negatives together.
* Direction AUC: for positives ``u -> v`` whose reverse is not an edge, the share
  with ``score(u -> v) > score(v -> u)`` (ties half); a symmetric score gets 0.5.
* Low-degree Hits@K: Hits@K restricted to positives whose source has small
  out-degree in the observed graph (same global negative pool).

Edges are ``(m, 2)`` int64 arrays, source first.  Pure numpy/scipy (AUC/AP: sklearn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = [
    "LinkSplit",
    "as_edges",
    "auc_ap",
    "direction_auc",
    "edge_keys",
    "has_edge",
    "hits_at_k",
    "largest_wcc",
    "low_degree_mask",
    "make_split",
    "mrr",
    "reverse_free_mask",
]


def as_edges(edges) -> np.ndarray:
    """``edges`` as an ``(m, 2)`` int64 array (a ``(2, m)`` array with m != 2 is transposed)."""
    e = np.asarray(edges, dtype=np.int64)
    if e.size == 0:
        return e.reshape(0, 2)
    if e.ndim == 2 and e.shape[0] == 2 and e.shape[1] != 2:
        e = e.T
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges must be (m, 2) or (2, m), got shape {e.shape}")
    return np.ascontiguousarray(e)


# -- metrics ------------------------------------------------------------------


def hits_at_k(pos: np.ndarray, neg: np.ndarray, k: int) -> float:
    """Share of ``pos`` strictly above the k-th highest of ``neg`` (1.0 if ``len(neg) < k``)."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if len(pos) == 0:
        return float("nan")
    if len(neg) < k:
        return 1.0
    kth = np.partition(neg, len(neg) - k)[len(neg) - k]
    return float(np.mean(pos > kth))


def mrr(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mean reciprocal rank of each positive among all negatives, ties counted half."""
    pos, neg = np.asarray(pos, dtype=float), np.sort(np.asarray(neg, dtype=float))
    if len(pos) == 0:
        return float("nan")
    n = len(neg)
    ge = n - np.searchsorted(neg, pos, side="left")  # negatives >= pos
    gt = n - np.searchsorted(neg, pos, side="right")  # negatives > pos
    return float(np.mean(1.0 / (0.5 * (ge + gt) + 1.0)))


def auc_ap(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision over ``pos`` (label 1) and ``neg`` (label 0)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    s = np.r_[np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)]
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def direction_auc(forward, backward=None, edges=None) -> float:
    """Share of pairs with ``forward > backward``, ties half (NaN without pairs).

    Either two score arrays (``score(u->v)``, ``score(v->u)``), or a score function
    ``f(src, dst) -> scores`` and the ``(m, 2)`` edges to test.
    """
    if callable(forward):
        e = as_edges(edges)
        forward, backward = forward(e[:, 0], e[:, 1]), forward(e[:, 1], e[:, 0])
    f, b = np.asarray(forward, dtype=float), np.asarray(backward, dtype=float)
    if len(f) == 0:
        return float("nan")
    return float(np.mean((f > b) + 0.5 * (f == b)))


# -- graph helpers --------------------------------------------------------------


def edge_keys(edges: np.ndarray, n_nodes: int) -> np.ndarray:
    """Sorted unique ``u * n + v`` keys of ``edges`` (for fast membership tests)."""
    e = as_edges(edges)
    return np.unique(e[:, 0] * n_nodes + e[:, 1])


def has_edge(keys: np.ndarray, src: np.ndarray, dst: np.ndarray, n_nodes: int) -> np.ndarray:
    """Whether each ``src[i] -> dst[i]`` is among ``keys`` (from :func:`edge_keys`)."""
    q = np.asarray(src, dtype=np.int64) * n_nodes + np.asarray(dst, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(q.shape, dtype=bool)
    i = np.searchsorted(keys, q).clip(max=len(keys) - 1)
    return keys[i] == q


def reverse_free_mask(pos: np.ndarray, all_edges: np.ndarray, n_nodes: int) -> np.ndarray:
    """Positives ``u -> v`` whose reverse ``v -> u`` is not in ``all_edges`` (the full graph)."""
    p = as_edges(pos)
    return ~has_edge(edge_keys(all_edges, n_nodes), p[:, 1], p[:, 0], n_nodes)


def low_degree_mask(pos: np.ndarray, observed: np.ndarray, n_nodes: int, max_degree: int = 2) -> np.ndarray:
    """Positives whose source has out-degree <= ``max_degree`` in ``observed``."""
    out_degree = np.bincount(as_edges(observed)[:, 0], minlength=n_nodes)
    return out_degree[as_edges(pos)[:, 0]] <= max_degree


def largest_wcc(adj: sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """The largest weakly connected component of ``adj`` without self-loops, nodes kept in
    increasing original order; returns ``(sub_adjacency, original_ids)``."""
    a = sp.csr_matrix(adj)
    _, comp = connected_components(a, directed=True, connection="weak")
    keep = np.flatnonzero(comp == np.argmax(np.bincount(comp)))
    sub = a[keep][:, keep].tolil()
    sub.setdiag(0)
    sub = sub.tocsr()
    sub.eliminate_zeros()
    return sub, keep


# -- splits ---------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSplit:
    """A directed link-prediction split: the observed (message-passing) graph and labelled pairs."""

    n_nodes: int
    observed: np.ndarray  # (m, 2) training graph
    pos_train: np.ndarray
    pos_val: np.ndarray
    pos_test: np.ndarray
    neg_train: np.ndarray
    neg_val: np.ndarray
    neg_test: np.ndarray

    def __post_init__(self) -> None:
        for name in ("observed", "pos_train", "pos_val", "pos_test", "neg_train", "neg_val", "neg_test"):
            e = as_edges(getattr(self, name))
            if len(e) and (e.min() < 0 or e.max() >= self.n_nodes):
                raise ValueError(f"{name}: node ids must lie in [0, {self.n_nodes})")
            object.__setattr__(self, name, e)

    @property
    def all_positives(self) -> np.ndarray:
        """Observed + validation + test positives (the full graph for DirLinkBench splits)."""
        return np.unique(np.vstack([self.observed, self.pos_val, self.pos_test]), axis=0)


def random_non_edges(n_nodes: int, count: int, forbidden: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct random pairs ``u -> v``, ``u != v``, whose keys are not in ``forbidden``."""
    if count > n_nodes * (n_nodes - 1) - len(forbidden):
        raise ValueError("not enough non-edges for the requested negatives")
    chosen = np.zeros(0, dtype=np.int64)
    while len(chosen) < count:
        u = rng.integers(0, n_nodes, 2 * count + 16)
        v = rng.integers(0, n_nodes, 2 * count + 16)
        q = (u * n_nodes + v)[(u != v)]
        q = q[~np.isin(q, forbidden)]
        _, first = np.unique(q, return_index=True)
        fresh = q[np.sort(first)]
        chosen = np.r_[chosen, fresh[~np.isin(fresh, chosen)]]
    chosen = chosen[:count]
    return np.stack([chosen // n_nodes, chosen % n_nodes], axis=1)


def make_split(
    edges: np.ndarray, n_nodes: int, seed: int, fractions: tuple[float, float, float] = (0.80, 0.05, 0.15)
) -> LinkSplit:
    """A DirLinkBench-style random split of directed ``edges`` (self-loops and duplicates dropped).

    Edges are shuffled and cut into train/val/test by ``fractions``; the observed graph
    is the train part.  Each part gets as many negatives: distinct random directed
    non-edges of the full graph (no self-loops), disjoint across parts.  Unlike
    DirLinkBench, nodes are NOT kept connected in the observed graph: a node may
    lose all its observed edges (kept simple on purpose).
    """
    e = as_edges(edges)
    e = np.unique(e[e[:, 0] != e[:, 1]], axis=0)
    rng = np.random.default_rng(seed)
    e = e[rng.permutation(len(e))]
    f = np.asarray(fractions, dtype=float) / float(np.sum(fractions))
    n_train, n_val = round(f[0] * len(e)), round(f[1] * len(e))
    parts = np.split(e, [n_train, n_train + n_val])
    neg = random_non_edges(n_nodes, len(e), edge_keys(e, n_nodes), rng)
    negs = np.split(neg, [n_train, n_train + n_val])
    return LinkSplit(n_nodes, parts[0], parts[0], parts[1], parts[2], negs[0], negs[1], negs[2])
