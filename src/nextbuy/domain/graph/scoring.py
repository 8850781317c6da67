"""Pair scoring from exported embedding moments: numpy only, no torch.

Serving, calibration and evaluation import this without paying torch's import
time; the moments come from ``blade.export_moments``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_PAIR_CHUNK = 4096  # rows per numpy chunk in pair scoring: keeps temporaries in cache


def _pairs(
    moments: Mapping[str, np.ndarray], src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.int64).reshape(-1)
    dst = np.asarray(dst, dtype=np.int64).reshape(-1)
    if src.shape != dst.shape:
        raise ValueError("src and dst must have the same length")
    n = moments["s_members"].shape[1] if "s_members" in moments else moments["s_mean"].shape[0]
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise ValueError(f"node ids must lie in [0, {n})")
    return src, dst


def pair_logit_moments(
    moments: Mapping[str, np.ndarray], src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the conversion logit for pairs ``src -> dst`` (numpy only).

    With independent, diagonal source/target moments:
    ``mean = sum_i w_i s̄_i t̄_i + b`` and
    ``var  = sum_i w_i² (s̄_i² σ²t_i + t̄_i² σ²s_i + σ²s_i σ²t_i)``.
    Member-form moments (``s_members``, ``t_members`` [K, n, d], ``b_members`` [K]: an ensemble
    whose embedding spaces are not aligned, as the research benchmarks' deep ensemble writes them)
    give the mean and the unbiased variance of the K members' logits instead.
    Returns float32 arrays [m]; processed in cache-sized chunks.
    """
    src, dst = _pairs(moments, src, dst)
    if "s_members" in moments:
        return _member_logit_moments(moments, src, dst)
    sm, sv, tm, tv = (moments[k] for k in ("s_mean", "s_var", "t_mean", "t_var"))
    w = np.asarray(moments["head_w"], dtype=np.float32).reshape(-1)
    w2 = w * w
    b = np.float32(np.asarray(moments["head_b"]).reshape(-1)[0])
    m = src.size
    mean = np.empty(m, dtype=np.float32)
    var = np.empty(m, dtype=np.float32)
    for a in range(0, m, _PAIR_CHUNK):
        u, v = src[a : a + _PAIR_CHUNK], dst[a : a + _PAIR_CHUNK]
        # np.take is ~2x faster than fancy indexing for row gathers (same result).
        s_mu, s_var = np.take(sm, u, axis=0), np.take(sv, u, axis=0)
        t_mu, t_var = np.take(tm, v, axis=0), np.take(tv, v, axis=0)
        mean[a : a + u.size] = (s_mu * t_mu) @ w + b
        # s̄² σ²t + σ²s (t̄² + σ²t)  ==  s̄² σ²t + t̄² σ²s + σ²s σ²t
        np.multiply(s_mu, s_mu, out=s_mu)
        np.multiply(s_mu, t_var, out=s_mu)
        np.multiply(t_mu, t_mu, out=t_mu)
        np.add(t_mu, t_var, out=t_mu)
        np.multiply(t_mu, s_var, out=t_mu)
        np.add(s_mu, t_mu, out=s_mu)
        var[a : a + u.size] = s_mu @ w2
    np.maximum(var, 0.0, out=var)
    return mean, var


def all_targets_logit_moments(
    moments: Mapping[str, np.ndarray], src: np.ndarray, n_targets: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pair_logit_moments` of each source in ``src`` against the first ``n_targets``
    products, as matrix products: mean and variance [len(src), n_targets] (float32)."""
    w = np.asarray(moments["head_w"], dtype=np.float32).reshape(-1)
    w2 = w * w
    s_mu, s_var = moments["s_mean"][src], moments["s_var"][src]
    t_mu, t_var = moments["t_mean"][:n_targets], moments["t_var"][:n_targets]
    mean = (s_mu * w) @ t_mu.T + np.float32(np.asarray(moments["head_b"]).reshape(-1)[0])
    # var = sum_i w_i^2 (s̄_i^2 σ²t_i + σ²s_i (t̄_i^2 + σ²t_i)), as pair_logit_moments.
    var = (s_mu * s_mu * w2) @ t_var.T + (s_var * w2) @ (t_mu * t_mu + t_var).T
    return mean, np.maximum(var, 0.0)


def _member_logit_moments(
    moments: Mapping[str, np.ndarray], src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s, t = moments["s_members"], moments["t_members"]
    b = np.asarray(moments["b_members"], dtype=np.float32).reshape(-1, 1)
    mean = np.empty(src.size, dtype=np.float32)
    var = np.empty(src.size, dtype=np.float32)
    for a in range(0, src.size, _PAIR_CHUNK):
        u, v = src[a : a + _PAIR_CHUNK], dst[a : a + _PAIR_CHUNK]
        logits = np.einsum("kmd,kmd->km", np.take(s, u, axis=1), np.take(t, v, axis=1)) + b  # [K, m]
        mean[a : a + u.size] = logits.mean(axis=0)
        var[a : a + u.size] = logits.var(axis=0, ddof=1)
    return mean, var


def score_and_uncertainty(
    moments: Mapping[str, np.ndarray], src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Conversion score ``sigmoid(mean / sqrt(1 + pi var / 8))`` (probit approximation of
    ``E[sigmoid(logit)]``) in the open interval (0, 1), and uncertainty ``sqrt(var)`` >= 0.
    Both float64 [m]."""
    mean, var = pair_logit_moments(moments, src, dst)
    var = var.astype(np.float64)
    z = mean.astype(np.float64) / np.sqrt(1.0 + np.pi * var / 8.0)
    score = 0.5 * (1.0 + np.tanh(0.5 * z))
    eps = 1e-12
    np.clip(score, eps, 1.0 - eps, out=score)
    return score, np.sqrt(var)


def serving_score(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score ``sigmoid(mean / sqrt(1 + π var / 8))`` and uncertainty ``sqrt(var)`` (float32)."""
    var = np.maximum(var, 0.0)
    z = mean / np.sqrt(1.0 + np.float32(np.pi / 8.0) * var)
    return 0.5 * (1.0 + np.tanh(0.5 * z)), np.sqrt(var)


def link_scores(moments: Mapping[str, np.ndarray], src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``s̄_u . t̄_v`` for link-prediction evaluation, float32 [m]."""
    src, dst = _pairs(moments, src, dst)
    sm, tm = moments["s_mean"], moments["t_mean"]
    out = np.empty(src.size, dtype=np.float32)
    for a in range(0, src.size, _PAIR_CHUNK):
        u, v = src[a : a + _PAIR_CHUNK], dst[a : a + _PAIR_CHUNK]
        out[a : a + u.size] = np.einsum("ij,ij->i", np.take(sm, u, axis=0), np.take(tm, v, axis=0))
    return out
