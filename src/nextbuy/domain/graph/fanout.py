"""How many neighbours a node samples: BLADE's degree-adaptive budget (``FanoutRule``) from the
degree distribution's fitted power-law exponent (see ``nextbuy.domain.graph.sampler``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def power_law_exponent(degree: Tensor, degree_min: int = 1) -> float:
    """Maximum-likelihood exponent ``alpha`` of a discrete power law ``P(d) = d^-alpha / zeta(alpha,
    degree_min)`` fitted to the degrees ``>= degree_min`` (Clauset, Shalizi & Newman 2009, eq. 3.5,
    maximised numerically over ``alpha`` in [1.05, 6]).

    Returns 3.0 (a typical scale-free value) when fewer than two nodes qualify.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import zeta

    if degree_min < 1:
        raise ValueError("degree_min must be >= 1")
    d = torch.as_tensor(degree).to(torch.float64)
    d = d[d >= degree_min]
    if d.numel() < 2:
        return 3.0
    n, sum_log = d.numel(), float(torch.log(d).sum())
    fit = minimize_scalar(
        lambda a: n * math.log(zeta(a, degree_min)) + a * sum_log, bounds=(1.05, 6.0), method="bounded"
    )
    return float(fit.x)


@dataclass(frozen=True)
class FanoutRule:
    """How many neighbours a node samples in one direction, from its degree in that direction.

    ``power_law`` (BLADE's biased sampling): ``k(d) = min + (max - min) * (1 + d) ** -(alpha - 1)``,
    where ``alpha`` is the fitted power-law exponent of the degree distribution: ``(1 + d) **
    -(alpha - 1)`` is roughly the share of nodes at least that connected (a power law's tail),
    so the budget is largest for the many sparse nodes (whose own embeddings are weakest) and
    falls to ``min`` for the rare hubs, the faster the thinner the graph's tail.  Nodes whose
    degree is below their budget fill it with 2-hop neighbours (same direction).  ``fixed`` (the
    ablation): ``k = max`` for every node and no 2-hop fill, GraphSAGE's uniform sampling.
    """

    kind: str  # "power_law" | "fixed"
    fanout_min: int
    fanout_max: int
    exponent: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in ("power_law", "fixed"):
            raise ValueError(f"fanout rule must be 'power_law' or 'fixed', got {self.kind!r}")
        if not 1 <= self.fanout_min <= self.fanout_max:
            raise ValueError(f"need 1 <= fanout_min <= fanout_max, got {self.fanout_min}, {self.fanout_max}")
        if not self.exponent > 1.0:
            raise ValueError(f"the power-law exponent must be > 1, got {self.exponent}")

    @property
    def two_hop(self) -> bool:
        return self.kind == "power_law"

    def budget(self, degree: Tensor) -> Tensor:
        """Per-node budget, int64, non-increasing in degree, within ``[fanout_min, fanout_max]``."""
        d = torch.as_tensor(degree).to(torch.float64).clamp_min(0.0)
        if self.kind == "fixed":
            return torch.full(d.shape, self.fanout_max, dtype=torch.long)
        span = float(self.fanout_max - self.fanout_min)
        k = self.fanout_min + torch.floor(span * (1.0 + d) ** -(self.exponent - 1.0) + 0.5)
        return k.clamp(self.fanout_min, self.fanout_max).to(torch.long)
