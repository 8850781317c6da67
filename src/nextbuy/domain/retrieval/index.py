"""The retrieval index: the catalogue's target moments in a faiss index (flat, ivf or hnsw) with
what the exact re-rank needs of every product, and the approximate search over it
(see ``nextbuy.domain.retrieval``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nextbuy.config import RetrievalConfig

if TYPE_CHECKING:
    import faiss

IVF_TRAIN_PER_LIST = 64  # ivf: training points per inverted list (k-means on a sample)


@dataclass(frozen=True, eq=False)
class CandidateIndex:
    """The index over ``t̄_v ∘ w`` and what the re-rank needs of every product."""

    kind: str  # flat | ivf | hnsw
    index: Any  # faiss.Index: inner product (flat), or L2 after the reduction (ivf, hnsw)
    # [n, 3d] f_v = [t̄_v ∘ w | σ²t_v | t̄_v² + σ²t_v]: mean(u->v) = s̄_u · f_v[:d] + b and
    # var(u->v) = a_u · f_v[d:] (:func:`source_weights`).
    features: np.ndarray
    var_lo: np.ndarray  # [2d] elementwise min of f_v[d:] over the catalogue
    var_hi: np.ndarray  # [2d] elementwise max
    bias: float
    settings: RetrievalConfig

    @property
    def n_products(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1] // 3


def index_kind(settings: RetrievalConfig, n_products: int) -> str:
    if settings.kind != "auto":
        return settings.kind
    return "flat" if n_products <= settings.flat_max_products else "ivf"


def scans_unproven(settings: RetrievalConfig, kind: str) -> bool:
    """Whether sources whose list the re-rank cannot prove are completed by the exact scan."""
    return settings.completion == "scan" or (settings.completion == "auto" and kind == "flat")


def ivf_lists(settings: RetrievalConfig, n_products: int) -> int:
    return int(min(n_products, max(1, round(settings.ivf_lists_per_sqrt * math.sqrt(n_products)))))


def to_l2(vectors: np.ndarray) -> np.ndarray:
    """``[x, sqrt(M² - |x|²)]``: nearest in L2 to ``[q, 0]`` = largest inner product with q."""
    norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    extra = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0))
    return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]), dtype=np.float32)


def _faiss_index(vectors: np.ndarray, kind: str, settings: RetrievalConfig) -> faiss.Index:
    import faiss

    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return index
    vectors = to_l2(vectors)
    n, d = vectors.shape
    if kind == "ivf":
        nlist = ivf_lists(settings, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.min_points_per_centroid = 1  # a small catalogue: no warning, fewer points per list
        rng = np.random.default_rng(0)
        sample = rng.choice(n, min(n, IVF_TRAIN_PER_LIST * nlist), replace=False)
        index.train(vectors[np.sort(sample)])
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, settings.hnsw_m)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
    else:
        raise ValueError(f"unknown index kind {kind!r} (flat | ivf | hnsw)")
    index.add(vectors)
    return index


def build(
    t_mean: np.ndarray, t_var: np.ndarray, head_w: np.ndarray, head_b: np.ndarray, settings: RetrievalConfig
) -> CandidateIndex:
    """The index of the catalogue's target moments [n, d] (float32 throughout)."""
    w = np.asarray(head_w, dtype=np.float32).reshape(-1)
    t_mean = np.asarray(t_mean, dtype=np.float32)
    t_var = np.asarray(t_var, dtype=np.float32)
    kind = index_kind(settings, t_mean.shape[0])
    mean_part = np.ascontiguousarray(t_mean * w)
    index = _faiss_index(mean_part, kind, settings)
    features = np.ascontiguousarray(np.hstack([mean_part, t_var, t_mean * t_mean + t_var]), dtype=np.float32)
    var_part = features[:, t_mean.shape[1] :]
    bias = float(np.asarray(head_b).reshape(-1)[0])
    return CandidateIndex(kind, index, features, var_part.min(axis=0), var_part.max(axis=0), bias, settings)


def source_weights(s_mean: np.ndarray, s_var: np.ndarray, head_w: np.ndarray) -> np.ndarray:
    """a_u = [s̄_u² w² | σ²s_u w²] [m, 2d]: var(u->v) = a_u · f_v[d:] (CandidateIndex.features)."""
    w2 = np.asarray(head_w, dtype=np.float32).reshape(-1) ** 2
    return np.hstack([s_mean * s_mean * w2, s_var * w2]).astype(np.float32)


def search(ci: CandidateIndex, queries: np.ndarray, c: int) -> np.ndarray:
    """Ids [m, c] of the c products of highest mean logit per query (approximately for
    ivf/hnsw; -1 where the index found fewer)."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    params = None
    if ci.kind != "flat":
        q = np.hstack([q, np.zeros((q.shape[0], 1), dtype=np.float32)])
    if ci.kind == "ivf":
        # faiss's stubs omit the keyword constructors of its search parameters (and the HNSW class).
        params = faiss.SearchParametersIVF(nprobe=min(ci.settings.nprobe, ci.index.nlist))  # type: ignore[call-arg]
    elif ci.kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(ci.settings.ef_search, c))  # type: ignore[attr-defined]
    return ci.index.search(q, c, params=params)[1]
