"""BLADE's types: the model's shape (:class:`Architecture`), its training schedule, the conversion
examples it learns from, the directed graph it reads and the neighbourhood index built over it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from nextbuy.domain.graph.fanout import FanoutRule, power_law_exponent
from nextbuy.domain.graph.sampler import (
    CSR,
    Block,
    group_members,
    sample_blocks,
)

if TYPE_CHECKING:
    from nextbuy.config import TrainConfig


@dataclass(frozen=True)
class Architecture:
    """A model's shape and neighbourhood sampling: fixed for its lifetime, so training and export agree."""

    embedding_dim: int  # d: size of each of s_v and t_v
    n_layers: int  # message-passing layers (2 reaches co-citation and 2-hop paths; 0: no GNN)
    fanout_rule: str  # "power_law" (BLADE) | "fixed" (ablation)
    fanout_min: int  # budget of the highest-degree nodes
    fanout_max: int  # budget of the lowest-degree nodes (the fixed rule's budget for all)
    dropout: float  # feature and hidden dropout; with sampling, drives the MC spread at export
    cold_start_fallback: bool  # nodes without neighbours in a direction sample same-group products
    # A learned id embedding per node on top of the feature projection. Off: features and
    # neighbourhoods only. Ids help where nodes have history the features miss (Cora-ML: +2.2
    # validation Hits@20) and cost where most nodes have little history and the features carry
    # the signal (the store's co-purchase graph: -4 to -5).
    id_embeddings: bool

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Architecture:
        """The train section's model shape (its bounds are the config's, checked once there)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class TrainingSchedule:
    """How :func:`train_blade` fits a model."""

    epochs: int  # most epochs (early stopping may end sooner)
    batch_size: int  # conversion examples (and supervision edges) per step
    lr: float  # Adam learning rate
    weight_decay: float  # weight decay of the projection and layers
    id_weight_decay: float  # weight decay of the per-node id embeddings
    link_loss_weight: float  # total loss = conversion + link_loss_weight * link
    n_negatives: int  # random destinations per supervised edge
    reverse_penalty: float  # weight of "the reversed edge is a negative" in the link loss
    supervision_share: float  # share of edges scored (and kept out of message passing) each epoch
    eval_every: int  # epochs between validation checks
    patience: int  # checks without improvement before stopping
    seed: int
    # Linear learning-rate warm-up over the first optimiser steps (0: none). Adam's first full-batch
    # steps can spike the loss and stall a run for hundreds of epochs.
    warmup_steps: int
    # Sample one hop per step and read neighbours' deeper states from a per-epoch history
    # (BladeModel.encode_with_history): linear epochs on large catalogues.
    neighbour_history: bool
    export_chunk: int  # nodes per chunk when every node's states are computed (memory bound)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> TrainingSchedule:
        """The train section's schedule (its bounds are the config's, checked once there)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Conversions:
    """Weighted conversion examples: pairs ``src -> dst``, label in [0, 1], weight >= 0 (any
    array-likes, stored as 1-d tensors)."""

    src: Tensor
    dst: Tensor
    label: Tensor
    weight: Tensor

    def __post_init__(self) -> None:
        for name, dtype in (("src", torch.long), ("dst", torch.long), ("label", torch.float32),
                            ("weight", torch.float32)):  # fmt: skip
            object.__setattr__(self, name, torch.as_tensor(getattr(self, name)).to(dtype).reshape(-1))
        n = len(self)
        if not (self.dst.numel() == self.label.numel() == self.weight.numel() == n):
            raise ValueError("conversion arrays must all have the same length")
        if not bool(torch.isfinite(self.weight).all()) or bool((self.weight < 0).any()):
            raise ValueError("conversion weights must be finite and >= 0")
        if bool(((self.label < 0) | (self.label > 1)).any()):
            raise ValueError("conversion labels must lie in [0, 1]")

    @classmethod
    def none(cls) -> Conversions:
        """No examples: a run that learns from the link loss alone."""
        empty = torch.zeros(0)
        return cls(empty, empty, empty, empty)

    def check_nodes(self, n_nodes: int) -> None:
        """Refuse pairs outside a graph of ``n_nodes`` nodes."""
        if len(self) and (
            min(int(self.src.min()), int(self.dst.min())) < 0
            or max(int(self.src.max()), int(self.dst.max())) >= n_nodes
        ):
            raise ValueError(f"conversion pairs must lie in [0, {n_nodes})")

    def __len__(self) -> int:
        return self.src.numel()

    def base_rate(self) -> float | None:
        """Weighted share of positives, kept off 0 and 1; None without any weight."""
        if not len(self) or float(self.weight.sum()) <= 0:
            return None
        rate = float((self.weight * self.label).sum() / self.weight.sum())
        return min(max(rate, 1e-4), 1 - 1e-4)


@dataclass(frozen=True)
class FeatureRows:
    """A sparse feature matrix row by row (CSR arrays): row ``i`` is ``col/value[rowptr[i]:rowptr[i+1]]``."""

    rowptr: Tensor
    col: Tensor
    value: Tensor

    @classmethod
    def of(cls, coalesced: Tensor) -> FeatureRows:
        row, col = coalesced.indices()  # coalesced: sorted by row, then column
        rowptr = torch.zeros(coalesced.shape[0] + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(row, minlength=coalesced.shape[0]), 0, out=rowptr[1:])
        return cls(rowptr, col.contiguous(), coalesced.values().contiguous())


@dataclass(frozen=True)
class DirectedGraph:
    """What the model sees: a directed graph with node features and no labels."""

    n_nodes: int
    src: Tensor  # int64 [m] directed edges src -> dst
    dst: Tensor  # int64 [m]
    features: Tensor | None  # float32 [n, f], dense or sparse; None: id embeddings only
    group: Tensor | None = None  # int64 [n], -1 = none: cold-start fallback groups (e.g. category)
    feature_rows: FeatureRows | None = field(default=None, init=False, repr=False)  # from features

    def __post_init__(self) -> None:
        n = int(self.n_nodes)
        for name in ("src", "dst"):
            object.__setattr__(self, name, torch.as_tensor(getattr(self, name)).to(torch.long).reshape(-1))
        if self.src.numel() != self.dst.numel():
            raise ValueError("src and dst must have the same length")
        if self.src.numel() and (
            min(int(self.src.min()), int(self.dst.min())) < 0
            or max(int(self.src.max()), int(self.dst.max())) >= n
        ):
            raise ValueError(f"edge endpoints must lie in [0, {n})")
        if self.features is not None:
            x = self.features if isinstance(self.features, Tensor) else torch.as_tensor(self.features)
            if x.dim() != 2 or x.shape[0] != n:
                raise ValueError(f"features must be [{n}, f], got {tuple(x.shape)}")
            x = (x if x.is_sparse else x.to_sparse()).coalesce().to(torch.float32)
            object.__setattr__(self, "features", x)
            object.__setattr__(self, "feature_rows", FeatureRows.of(x))
        if self.group is not None:
            g = torch.as_tensor(self.group).to(torch.long).reshape(-1)
            if g.numel() != n:
                raise ValueError("group must have one entry per node")
            object.__setattr__(self, "group", g)

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    @property
    def n_features(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def message_edges(self, mask: Tensor) -> DirectedGraph:
        """The same nodes with only the edges where ``mask`` is False, for a :class:`GraphIndex`
        (features left out: an index never reads them, and re-indexing them every epoch costs)."""
        keep = ~mask
        return DirectedGraph(self.n_nodes, self.src[keep], self.dst[keep], None, self.group)


@dataclass(frozen=True)
class GraphIndex:
    """Adjacency in both directions with its sampling rules, built once per message graph."""

    out_csr: CSR  # u -> its out-neighbours
    in_csr: CSR  # v -> its in-neighbours
    rules: tuple[FanoutRule, FanoutRule]  # out, in (exponents fitted per direction)
    fallbacks: tuple[tuple[Tensor, CSR] | None, tuple[Tensor, CSR] | None]

    @classmethod
    def build(cls, graph: DirectedGraph, architecture: Architecture) -> GraphIndex:
        out_csr = CSR.from_edges(graph.src, graph.dst, graph.n_nodes)
        in_csr = CSR.from_edges(graph.dst, graph.src, graph.n_nodes)
        a = architecture
        out_rule, in_rule = (
            FanoutRule(a.fanout_rule, a.fanout_min, a.fanout_max, power_law_exponent(csr.degree()))
            for csr in (out_csr, in_csr)
        )
        fallbacks: tuple = (None, None)
        group = graph.group
        if a.cold_start_fallback and group is not None and group.numel() and int(group.max()) >= 0:
            n_groups = int(group.max()) + 1
            fallbacks = tuple(
                (group, group_members(group, csr.degree() > 0, n_groups)) for csr in (out_csr, in_csr)
            )
        return cls(out_csr, in_csr, (out_rule, in_rule), fallbacks)

    def blocks(
        self, seeds: Tensor, n_layers: int, sampled: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, list[Block]]:
        return sample_blocks(self.out_csr, self.in_csr, seeds, n_layers, self.rules if sampled else None,
                             generator, fallbacks=self.fallbacks)  # fmt: skip


# torch flags every CSR tensor as beta; _mean's product (covered by the graph tests) is the one used.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)

PASS_ESTIMATORS = ("mc_dropout", "sampler")  # uncertainty from stochastic passes of one model
