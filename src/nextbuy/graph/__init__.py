"""Directed product graph: degree-adaptive sampling (sampler) and the dual-embedding GNN (blade)."""

from nextbuy.graph.blade import (
    BladeModel,
    DirectedGraph,
    GraphIndex,
    export_moments,
    link_scores,
    pair_logit_moments,
    score_and_uncertainty,
    train_blade,
)
from nextbuy.graph.sampler import CSR, adaptive_fanout, group_members, sample_neighbourhood

__all__ = [
    "CSR",
    "adaptive_fanout",
    "group_members",
    "sample_neighbourhood",
    "DirectedGraph",
    "GraphIndex",
    "BladeModel",
    "train_blade",
    "export_moments",
    "pair_logit_moments",
    "score_and_uncertainty",
    "link_scores",
]
