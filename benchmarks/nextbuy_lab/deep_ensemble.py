"""A classic deep ensemble (Lakshminarayanan et al. 2017) for the threshold study: members
trained from scratch, each on its own seed and bootstrap, and their moments kept per member.

Their embedding spaces are not aligned, so the serving bundle's per-node moments cannot hold
them: the study measures them, the product does not serve them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from nextbuy.allocator import release_freed_memory
from nextbuy.config import TrainConfig, with_changes
from nextbuy.domain.delay import DelayFamily
from nextbuy.domain.graph import blade
from nextbuy.domain.graph.blade.export import _check_members, _folded_embeddings
from nextbuy.stages import train


def independent_members(base, graph, weighted: pd.DataFrame, cfg: TrainConfig, architecture, *,
                        delay_family: str, progress: bool | str):  # fmt: skip
    """A classic deep ensemble (Lakshminarayanan et al. 2017) of ``cfg.ensemble_members`` models:
    the trained ``base``, then members trained from scratch as it was (``train.train_rounds``, EM
    rounds and early stopping included), each with its own seed (initialisation, early-stopping
    rows, negatives, samples, batch order) and a bootstrap of the training impressions. A
    generator, one member in memory at a time. Their embedding spaces are not aligned: use
    :func:`member_moments`, not per-node moments. Costs members - 1 full trainings."""
    yield base
    for k in range(1, cfg.ensemble_members):
        member_cfg = with_changes(cfg, seed=cfg.seed + 7919 * k)
        label = train.phase(progress, f"member {k + 1}/{cfg.ensemble_members}")
        member, _, _ = train.train_rounds(
            graph, weighted, member_cfg, architecture=architecture, delay_family=DelayFamily(delay_family),
            progress=label, bootstrap=True,
        )  # fmt: skip
        release_freed_memory()
        yield member
        del member


def member_moments(
    members: Iterable[blade.BladeModel], graph: blade.DirectedGraph, *, chunk: int
) -> dict[str, np.ndarray]:
    """Every member's deterministic embeddings, kept apart: ``s_members``, ``t_members`` [K, n, d]
    (each member's head folded into its target role, ``(s*t).w = s.(t*w)``) and ``b_members`` [K].

    For members trained from independent initialisations (a classic deep ensemble): their
    embedding spaces are not aligned, so per-node moments (``blade.ensemble_moments``) would mix
    unrelated coordinates. :func:`~nextbuy.domain.graph.scoring.pair_logit_moments` takes the
    mean and variance of the members' logits per pair instead. ``members`` may be a generator.
    """
    s_all, t_all, biases = [], [], []
    for s, t, bias in _folded_embeddings(members, graph, chunk):
        s_all.append(s.float().numpy())
        t_all.append(t.float().numpy())
        biases.append(bias)
    _check_members(biases)
    return {
        "s_members": np.stack(s_all),
        "t_members": np.stack(t_all),
        "b_members": np.asarray(biases, dtype=np.float32),
    }
