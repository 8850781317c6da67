"""Serving needs no torch: per-node moments of one model's passes (:func:`export_moments`) or of
an ensemble's members (:func:`ensemble_moments`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from nextbuy.domain.graph.blade.model import BladeModel, embed
from nextbuy.domain.graph.blade.structures import PASS_ESTIMATORS, DirectedGraph


class _RunningMoments:
    """Per-node mean and unbiased variance of ``s`` and ``t`` over passes, by running sums (memory
    stays two passes however many there are)."""

    def __init__(self, n: int, dim: int) -> None:
        self.sums = [torch.zeros(n, dim, dtype=torch.float64) for _ in range(4)]  # s, s², t, t²
        self.count = 0

    def add(self, s: Tensor, t: Tensor) -> None:
        # One float64 temporary at a time: at 10^6 nodes each is 256 MB.
        for acc, square, value in ((self.sums[0], self.sums[1], s), (self.sums[2], self.sums[3], t)):
            value = value.double()
            acc += value
            square += value.square_()
        self.count += 1

    def mean(self, role: str) -> np.ndarray:
        """float32 [n, dim]."""
        return (self.sums[0 if role == "s" else 2] / self.count).float().numpy()

    def var(self, role: str) -> np.ndarray:
        """float32 [n, dim], unbiased."""
        total, square = self.sums[0:2] if role == "s" else self.sums[2:4]
        k = self.count
        out = total.square()  # the one float64 temporary
        return out.div_(-k).add_(square).div_(k - 1).clamp_min_(0.0).float().numpy()


@torch.no_grad()
def export_moments(
    model: BladeModel,
    graph: DirectedGraph,
    *,
    mc_samples: int,
    chunk: int,
    seed: int,
    estimator: str = "mc_dropout",
) -> dict[str, np.ndarray]:
    """Per-node deterministic ``s``/``t`` and their variance over ``mc_samples`` stochastic passes.

    Means come from one deterministic pass (full neighbourhoods, dropout off): rankings do not
    depend on sampling luck.  Variances are unbiased (ddof=1) over passes with dropout on:
    ``mc_dropout`` keeps full neighbourhoods (MC dropout over the model's own weights, Gal &
    Ghahramani 2016); ``sampler`` also draws fresh degree-adaptive neighbourhoods (the
    sampler's spread, an ablation: it mostly measures the sampling rule, not what the model
    does not know).  Nodes go ``chunk`` at a time, bounding memory.
    Returns float32 ``s_mean, s_var, t_mean, t_var`` [n, d], ``head_w`` [d], ``head_b`` [1].
    Deterministic for ``seed`` (the training seed: export draws from a stream offset from it).
    """
    if int(mc_samples) < 2:
        raise ValueError("mc_samples must be >= 2 (the variance needs two passes)")
    if estimator not in PASS_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {PASS_ESTIMATORS}")
    if int(chunk) < 1:
        raise ValueError("chunk must be >= 1")
    was_training = model.training
    model.eval()
    index = model.index(graph)
    s_mean, t_mean = embed(model, graph, chunk=chunk, index=index)
    generator = torch.Generator().manual_seed(int(seed) + 1_000_003)
    passes = _RunningMoments(graph.n_nodes, model.dim)
    for _ in range(int(mc_samples)):
        passes.add(*embed(model, graph, chunk=chunk, index=index, generator=generator, stochastic=True,
                          resample=estimator == "sampler"))  # fmt: skip
    model.train(was_training)
    moments = {"s_mean": s_mean.float().numpy(), "t_mean": t_mean.float().numpy()}
    moments |= {"s_var": passes.var("s"), "t_var": passes.var("t")}
    moments["head_w"] = model.head_w.detach().float().numpy().copy()
    moments["head_b"] = model.head_b.detach().float().numpy().reshape(1).copy()
    return moments


def _folded_embeddings(
    members: Iterable[BladeModel], graph: DirectedGraph, chunk: int
) -> Iterator[tuple[Tensor, Tensor, float]]:
    """Per member, one at a time: its deterministic ``s``, ``t * head_w`` (the head folded into the
    target role, ``(s*t).w = s.(t*w)``) and its bias. Not under no_grad as a whole: a generator of
    ``members`` trains each member while this asks for it."""
    for member in members:
        member.eval()
        with torch.no_grad():
            s, t = embed(member, graph, chunk=chunk)
            t.mul_(member.head_w.detach())
        yield s, t, float(member.head_b.detach())
        del member, s, t  # one member in memory at a time


def _check_members(biases: list[float]) -> None:
    if len(biases) < 2:
        raise ValueError("an ensemble needs >= 2 members (the variance needs two)")


def ensemble_moments(
    members: Iterable[BladeModel], graph: DirectedGraph, *, chunk: int
) -> dict[str, np.ndarray]:
    """Per-node mean and unbiased variance over ensemble ``members`` (deterministic passes each).
    ``members`` may be a generator: each member is dropped once embedded, bounding memory.

    Members' heads differ, so each member's head is folded into its target role
    (``(s*t).w = s.(t*w)``): the moments are of ``s`` and ``t*w``, ``head_w`` is all ones
    and ``head_b`` the members' mean bias. Averaging coordinates is meaningful because the
    members share their starting point (see ``train.ensemble_members``), so their embedding
    spaces stay aligned.
    """
    passes, biases = None, []
    for s, t, bias in _folded_embeddings(members, graph, chunk):
        if passes is None:
            passes = _RunningMoments(graph.n_nodes, s.shape[1])
        passes.add(s, t)
        biases.append(bias)
        del s, t
    _check_members(biases)
    moments = {r + "_" + k: getattr(passes, k)(r) for r in ("s", "t") for k in ("mean", "var")}
    moments["head_w"] = np.ones(moments["s_mean"].shape[1], dtype=np.float32)
    moments["head_b"] = np.array([float(np.mean(biases))], dtype=np.float32)
    return moments
