"""BLADE trained on top of a fixed link prior: a logit per pair (e.g.
:class:`~nextbuy_lab.pair_structure.StructurePrior`), read from each epoch's message graph, is
added to the link score while training, so the embedding learns the residual and must be scored
with the prior (or stacked with the structure) to rank.

The product's training run carries no prior; this research variant subclasses
:class:`~nextbuy.domain.graph.blade.BladeTraining`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nextbuy.domain.graph import blade


class LinkPrior(Protocol):
    """A fixed logit per pair added to the link score while training (the embedding learns the rest)."""

    def on(self, edges: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``(src, dst) -> logits`` with the graph read from ``edges`` (m, 2), this epoch's message edges."""
        ...


class _PriorTraining(blade.BladeTraining):
    """The product's training run with the prior's logit added to every scored pair's link score."""

    def __init__(self, *args, link_prior: LinkPrior, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.link_prior = link_prior
        self.prior_logit: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # this epoch's
        self.pairs: tuple[Tensor, Tensor] | None = None  # the step's scored pairs

    def _supervision(self) -> tuple[blade.DirectedGraph, Tensor]:
        message, sup = super()._supervision()
        # read from this epoch's message graph, as test pairs read theirs
        self.prior_logit = self.link_prior.on(torch.stack([message.src, message.dst], 1).numpy())
        return message, sup

    def _link_pairs(self, edges: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pairs = super()._link_pairs(edges)
        self.pairs = pairs[0], pairs[1]
        return pairs

    def _link_loss(self, s: Tensor, t: Tensor, y: Tensor, w: Tensor, n_pos: float, losses) -> Tensor:
        """``sum(w * bce) / n_pos`` over the pairs, the link score plus the prior's logits."""
        u, v = self.pairs
        logit = self.model.link_score(s, t)
        logit = logit + torch.as_tensor(self.prior_logit(u.numpy(), v.numpy()), dtype=logit.dtype)
        bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
        loss = (w * bce).sum() / n_pos
        losses.link_sum += float(loss.detach())
        return loss


def prior_training(
    graph: blade.DirectedGraph, conv: blade.Conversions, *, link_prior: LinkPrior | None, **kwargs
) -> blade.BladeTraining:
    """A :class:`~nextbuy.domain.graph.blade.BladeTraining` (same arguments) whose link score
    is trained on top of ``link_prior`` (None: the plain run); the draws are the plain run's."""
    if link_prior is None:
        return blade.BladeTraining(graph, conv, **kwargs)
    return _PriorTraining(graph, conv, link_prior=link_prior, **kwargs)
