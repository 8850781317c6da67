"""BLADE: a directed dual-embedding GNN with degree-adaptive neighbourhood sampling.

Every node ``v`` has a *source* vector ``s_v`` (what it leads to) and a *target*
vector ``t_v`` (what leads to it); the directed edge ``u -> v`` is scored from
``s_u . t_v``, so ``u -> v`` and ``v -> u`` score differently.

Model:

* input ``[s0 | t0] = dropout(X W) + id_v``: any node feature matrix ``X``
  (bag-of-words, category one-hots, price, popularity) through a learned
  projection, plus a learned per-node id embedding (its own weight decay), so a
  node never seen in training still gets a vector from its features;
* ``n_layers`` layers; each updates both roles from both directions (as DirGNN
  does) while keeping them apart for scoring:
  ``[s|t]' = [s|t] + W [ [s|t] , mean_out [s|t] , mean_in [s|t] ]`` (ReLU and
  dropout between layers), where ``mean_out`` averages over the node's sampled
  out-neighbours and ``mean_in`` over its in-neighbours: co-citation,
  shared-reference and 2-hop paths all reach both roles, and a node without
  out-edges still gets a source vector from its in-neighbours;
* neighbourhoods are sampled with BLADE's degree-adaptive rule
  (:class:`~nextbuy.domain.graph.sampler.FanoutRule`: low-degree nodes get larger
  budgets, filled from 2 hops) while training and for Monte-Carlo uncertainty,
  and taken in full, with dropout off, for ranking (deterministic scores);
* link score ``s_u . t_v``; conversion head ``logit = (s_u * t_v) . w + b`` on the
  same encoder (multi-task).

Training keeps message edges and supervision edges apart: each epoch a random
``supervision_share`` of the edges is scored and only the rest pass messages, so
an edge is never in its own neighbourhood.  Every positive gets ``n_negatives``
random destinations, and the reversed edge (when it is not itself an edge) counts
as a negative with weight ``reverse_penalty``.  An optional ``link_prior`` (e.g.
:class:`~nextbuy.domain.graph.pair_structure.StructurePrior`) adds a fixed logit per pair, read
from each epoch's message graph, to the link score while training: the embedding then learns
the residual, and must be scored with the prior (or stacked with the structure) to rank.  An
optional validation callback drives early stopping (best weights restored).  With
``neighbour_history`` a step samples one hop and reads its neighbours' deeper states from a table
refreshed each epoch (:meth:`BladeModel.encode_with_history`), so an epoch costs
O(impressions x fanout) rather than O(impressions x fanout^layers); over several processes each
rank keeps its own table (the same refresh, its own seeds written back).  Training can run
data-parallel over several processes (a :class:`~nextbuy.domain.graph.collective.Collective`; see
:func:`train_blade`).

Serving needs no torch: :func:`export_moments` writes deterministic means and
the variance over ``mc_samples`` stochastic passes; :func:`pair_logit_moments`
turns them into a logit mean and variance per pair in numpy.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nextbuy.domain.graph.collective import SINGLE, Collective
from nextbuy.domain.graph.sampler import (
    CSR,
    Block,
    FanoutRule,
    expand,
    group_members,
    power_law_exponent,
    sample_blocks,
)
from nextbuy.domain.graph.scoring import (  # noqa: F401 - re-export
    link_scores,
    pair_logit_moments,
    score_and_uncertainty,
)

__all__ = [
    "Architecture",
    "TrainingSchedule",
    "DirectedGraph",
    "GraphIndex",
    "BladeModel",
    "train_blade",
    "BladeTraining",
    "embed",
    "export_moments",
    "pair_logit_moments",
    "score_and_uncertainty",
    "link_scores",
]


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
    # the signal (the store's co-purchase graph: -4 to -5; BENCHMARKS.md, session 30).
    id_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_layers < 0:
            raise ValueError("need n_layers >= 0")
        FanoutRule(self.fanout_rule, self.fanout_min, self.fanout_max)  # validates
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must lie in [0, 1)")


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
    # steps can spike the loss and stall a run for hundreds of epochs (BENCHMARKS.md, session 27).
    warmup_steps: int = 0
    # Sample one hop per step and read neighbours' deeper states from a per-epoch history
    # (BladeModel.encode_with_history): linear epochs on large catalogues.
    neighbour_history: bool = False
    export_chunk: int = 8192  # nodes per chunk when every node's states are computed (memory bound)


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
        rules = tuple(
            FanoutRule(a.fanout_rule, a.fanout_min, a.fanout_max, power_law_exponent(csr.degree()))
            for csr in (out_csr, in_csr)
        )
        fallbacks: tuple = (None, None)
        group = graph.group
        if a.cold_start_fallback and group is not None and group.numel() and int(group.max()) >= 0:
            n_groups = int(graph.group.max()) + 1
            fallbacks = tuple(
                (graph.group, group_members(graph.group, csr.degree() > 0, n_groups))
                for csr in (out_csr, in_csr)
            )
        return cls(out_csr, in_csr, rules, fallbacks)

    def blocks(
        self, seeds: Tensor, n_layers: int, sampled: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, list[Block]]:
        return sample_blocks(self.out_csr, self.in_csr, seeds, n_layers, self.rules if sampled else None,
                             generator, fallbacks=self.fallbacks)  # fmt: skip


# torch flags every CSR tensor as beta; _mean's product (covered by the graph tests) is the one used.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)

PASS_ESTIMATORS = ("mc_dropout", "sampler")  # uncertainty from stochastic passes of one model


def inverted_dropout(x: Tensor, p: float, generator: torch.Generator | None, active: bool) -> Tensor:
    """Inverted dropout driven by an explicit generator (so runs are reproducible; None: torch's
    global stream).  A mask from ``torch.rand`` made in place: ~2x faster than ``F.dropout``'s
    ``bernoulli_`` on CPU (4.6 against 9.5 ms forward and backward on 2,810 x 256)."""
    if not active or p <= 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator).ge_(p)
    return (x * keep).div_(1.0 - p)


def _mean(values: Tensor, dst: Tensor, src: Tensor, n_dst: int) -> Tensor:
    """Mean of ``values[src]`` per destination (zero where a destination has no message).

    As a sparse CSR matrix (row ``d``: ``1 / count_d`` at each of its sources) times ``values``:
    no per-edge message tensor is built, forward or backward. On 2 CPU cores, 2 M edges of width
    64, warm: 0.3 s for both passes against 1.1 s for gather + ``index_add_``. Bitwise the same
    run to run, and at 1 and 2 threads (checked)."""
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        order = torch.argsort(dst, stable=True)
        dst, src = dst.index_select(0, order), src.index_select(0, order)
    count = torch.bincount(dst, minlength=n_dst)
    crow = torch.zeros(n_dst + 1, dtype=torch.int64)
    torch.cumsum(count, 0, out=crow[1:])
    weight = (1.0 / count.clamp_min(1).to(values.dtype)).index_select(0, dst)
    matrix = torch.sparse_csr_tensor(crow, src, weight, (n_dst, values.shape[0]), check_invariants=False)
    return matrix @ values


class BladeModel(nn.Module):
    """Dual (source/target) embeddings, ``n_layers`` directed layers, link and conversion heads."""

    def __init__(
        self,
        n_nodes: int,
        n_features: int,
        *,
        embedding_dim: int,
        n_layers: int,
        fanout_rule: str,
        fanout_min: int,
        fanout_max: int,
        dropout: float,
        cold_start_fallback: bool,
        id_embeddings: bool = True,
    ) -> None:
        super().__init__()
        d = int(embedding_dim)
        self.architecture = Architecture(
            d, int(n_layers), fanout_rule, int(fanout_min), int(fanout_max), float(dropout),
            bool(cold_start_fallback), bool(id_embeddings),
        )  # fmt: skip
        if not id_embeddings and not n_features:
            raise ValueError("id_embeddings off needs node features: the model would have no inputs")
        self.n_nodes, self.dim, self.dropout = int(n_nodes), d, float(dropout)
        # Creation order fixes which draws of the seeded RNG each weight gets: keep it (the id table
        # is made, and draws, even when id_embeddings is off, so the other weights start alike).
        # sparse: the optimiser moves only the rows a step touched, not the whole table
        self.id_emb = nn.Embedding(self.n_nodes, 2 * d, sparse=True)
        nn.init.normal_(self.id_emb.weight, std=0.1)
        # The feature projection X W + b as a weighted embedding bag over the sparse feature rows
        # (dense gradient: the table has one row per feature, not per product).
        self.proj = nn.EmbeddingBag(int(n_features), 2 * d, mode="sum") if n_features else None
        self.proj_b = nn.Parameter(torch.zeros(2 * d)) if n_features else None
        if self.proj is not None:
            bound = 1.0 / math.sqrt(int(n_features))  # nn.Linear's initialisation
            nn.init.uniform_(self.proj.weight, -bound, bound)
        self.layers = nn.ModuleList([nn.Linear(6 * d, 2 * d) for _ in range(int(n_layers))])
        # zero: the conversion head owes nothing to the link score until the labels say so (a model
        # trained on shuffled labels must not inherit a ranking from the graph alone)
        self.head_w = nn.Parameter(torch.zeros(d))
        self.head_b = nn.Parameter(torch.zeros(1))

    @classmethod
    def for_graph(cls, graph: DirectedGraph, architecture: Architecture) -> BladeModel:
        return cls(graph.n_nodes, graph.n_features, **asdict(architecture))

    def index(self, graph: DirectedGraph) -> GraphIndex:
        return GraphIndex.build(graph, self.architecture)

    def inputs(
        self, features: FeatureRows | None, nodes: Tensor, generator: torch.Generator | None, stochastic: bool
    ) -> Tensor:
        """Layer-0 states ``[s0 | t0]`` of ``nodes``."""
        if self.architecture.id_embeddings:
            h = self.id_emb(nodes)
        else:
            h = torch.zeros(len(nodes), 2 * self.dim, dtype=self.id_emb.weight.dtype)
        if self.proj is not None and features is not None:
            start = features.rowptr[nodes]
            counts = features.rowptr[nodes + 1] - start
            rows, pos = expand(counts)
            at = start[rows] + pos
            offsets = torch.cumsum(counts, 0) - counts
            xw = self.proj(features.col[at], offsets, per_sample_weights=features.value[at])
            h = h + inverted_dropout(xw + self.proj_b, self.dropout, generator, stochastic)
        return h

    def encode(
        self,
        index: GraphIndex,
        features: FeatureRows | None,
        seeds: Tensor,
        generator: torch.Generator | None = None,
        stochastic: bool = True,
        resample: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(s, t)`` of ``seeds`` (unique ids): dropout when ``stochastic``, and sampled
        neighbourhoods when ``resample`` (default: ``stochastic``); full neighbourhoods and no
        dropout otherwise (deterministic). MC dropout is ``stochastic=True, resample=False``."""
        sampled = stochastic if resample is None else resample
        nodes, blocks = index.blocks(seeds, len(self.layers), sampled, generator)
        h = self.inputs(features, nodes, generator, stochastic)
        for i, block in enumerate(blocks):
            h = self._layer(i, h, block)
            if i < len(self.layers) - 1:
                h = inverted_dropout(F.relu(h), self.dropout, generator, stochastic)
        return h[:, : self.dim], h[:, self.dim :]

    def _layer(self, i: int, h: Tensor, block: Block) -> Tensor:
        """Layer ``i``'s new states of ``block``'s destinations from the states ``h`` below."""
        own = h.index_select(0, block.self_pos)
        out = _mean(h, block.out_dst, block.out_src, block.n_dst)
        inc = _mean(h, block.in_dst, block.in_src, block.n_dst)
        return own + self.layers[i](torch.cat([own, out, inc], dim=1))

    def encode_with_history(
        self,
        index: GraphIndex,
        features: FeatureRows | None,
        seeds: Tensor,
        history: list[Tensor],
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Training-mode ``(s, t)`` of ``seeds`` from *one* sampled hop (GNNAutoScale: Fey et al.,
        ICML 2021; VR-GCN: Chen et al., ICML 2018).  Every layer aggregates over the same sampled
        neighbours; a neighbour's state below layer ``i > 0`` is read from ``history[i - 1]``
        (no gradient) unless it is a seed, whose states are computed exactly and written back.
        A step then costs O(seeds x fanout) whatever the catalogue, where sampling every hop
        costs O(seeds x fanout^layers) distinct nodes, which is most of a catalogue of 10^5."""
        nodes, (block,) = index.blocks(seeds, 1, True, generator)
        h = self.inputs(features, nodes, generator, True)
        for i in range(len(self.layers)):
            top = self._layer(i, h, block)
            if i == len(self.layers) - 1:
                break
            top = F.relu(top)
            history[i].index_copy_(0, seeds, top.detach())
            h = history[i].index_select(0, nodes).index_copy(0, block.self_pos, top)
            h = inverted_dropout(h, self.dropout, generator, True)
        return top[:, : self.dim], top[:, self.dim :]

    @torch.no_grad()
    def layer_states(
        self, index: GraphIndex, features: FeatureRows | None, chunk: int, depth: int | None = None
    ) -> list[Tensor]:
        """Every node's state after each of the first ``depth`` layers (default: all; ReLU'd below
        the last), deterministic: full neighbourhoods, dropout off.  Layer by layer, ``chunk``
        destinations at a time, so the cost is O(depth x (nodes + edges)) and memory one state
        table per layer."""
        n = index.out_csr.n_nodes
        chunks = [torch.arange(start, min(start + int(chunk), n)) for start in range(0, n, int(chunk))]
        below_states = torch.empty(n, 2 * self.dim)  # layer-0 inputs, each node's computed once
        for dst in chunks:
            below_states[dst] = self.inputs(features, dst, None, False)
        states: list[Tensor] = []
        for i in range(len(self.layers) if depth is None else int(depth)):
            table = torch.empty(n, 2 * self.dim)
            for dst in chunks:
                below, (block,) = index.blocks(dst, 1, False, None)
                h = self._layer(i, below_states[below], block)
                table[dst] = F.relu(h) if i < len(self.layers) - 1 else h
            states.append(table)
            below_states = table
        return states

    def conversion_logit(self, s: Tensor, t: Tensor) -> Tensor:
        return (s * t) @ self.head_w + self.head_b

    @staticmethod
    def link_score(s: Tensor, t: Tensor) -> Tensor:
        return (s * t).sum(dim=-1)


@torch.no_grad()
def embed(
    model: BladeModel,
    graph: DirectedGraph,
    *,
    chunk: int,
    index: GraphIndex | None = None,
    generator: torch.Generator | None = None,
    stochastic: bool = False,
    resample: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """``(s, t)`` of every node: deterministic, layer by layer over the whole graph
    (:meth:`BladeModel.layer_states`); ``stochastic``, ``chunk`` seeds at a time through their
    own (sampled when ``resample``, as in :meth:`BladeModel.encode`) neighbourhoods."""
    index = model.index(graph) if index is None else index
    if not stochastic and len(model.layers):  # layer by layer: linear in the graph, same numbers
        h = model.layer_states(index, graph.feature_rows, chunk)[-1]
        return h[:, : model.dim].clone(), h[:, model.dim :].clone()
    s = torch.empty(graph.n_nodes, model.dim)
    t = torch.empty_like(s)
    for start in range(0, graph.n_nodes, int(chunk)):
        nodes = torch.arange(start, min(start + int(chunk), graph.n_nodes))
        s[nodes], t[nodes] = model.encode(index, graph.feature_rows, nodes, generator, stochastic, resample)
    return s, t


# -- training -----------------------------------------------------------------


def _edge_keys(src: Tensor, dst: Tensor, n: int) -> Tensor:
    return torch.unique(src * n + dst)  # sorted


def _is_edge(keys: Tensor, u: Tensor, v: Tensor, n: int) -> Tensor:
    if keys.numel() == 0:
        return torch.zeros(u.shape, dtype=torch.bool)
    q = u * n + v
    pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    return keys[pos] == q


def _decay_touched_rows(weight: nn.Parameter, decay: float) -> None:
    """Adam's L2 weight decay (``grad += decay * weight``) on the rows in ``weight``'s sparse
    gradient only: the rows a step touched, as lazy Adam updates them."""
    grad = weight.grad
    if grad is None or decay <= 0.0:
        return
    grad = grad.coalesce()
    rows = grad.indices()[0]
    values = grad.values() + decay * weight.detach().index_select(0, rows)
    weight.grad = torch.sparse_coo_tensor(
        grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
    )


@dataclass(frozen=True)
class _Conversions:
    """Weighted conversion examples: pairs ``src -> dst``, label in [0, 1], weight >= 0."""

    src: Tensor
    dst: Tensor
    label: Tensor
    weight: Tensor

    @classmethod
    def checked(cls, n_nodes: int, src, dst, label, weight) -> _Conversions:
        as_1d = lambda x, dtype: torch.as_tensor(x).to(dtype).reshape(-1)  # noqa: E731
        conv = cls(
            as_1d(src, torch.long),
            as_1d(dst, torch.long),
            as_1d(label, torch.float32),
            as_1d(weight, torch.float32),
        )
        n = len(conv)
        if not (conv.dst.numel() == conv.label.numel() == conv.weight.numel() == n):
            raise ValueError("conversion arrays must all have the same length")
        if not n:
            return conv
        lo, hi = min(int(conv.src.min()), int(conv.dst.min())), max(int(conv.src.max()), int(conv.dst.max()))
        if lo < 0 or hi >= n_nodes:
            raise ValueError(f"conversion pairs must lie in [0, {n_nodes})")
        if not bool(torch.isfinite(conv.weight).all()) or bool((conv.weight < 0).any()):
            raise ValueError("conversion weights must be finite and >= 0")
        if bool(((conv.label < 0) | (conv.label > 1)).any()):
            raise ValueError("conversion labels must lie in [0, 1]")
        return conv

    def __len__(self) -> int:
        return self.src.numel()

    def base_rate(self) -> float | None:
        """Weighted share of positives, kept off 0 and 1; None without any weight."""
        if not len(self) or float(self.weight.sum()) <= 0:
            return None
        rate = float((self.weight * self.label).sum() / self.weight.sum())
        return min(max(rate, 1e-4), 1 - 1e-4)


def _seeded_model(
    graph: DirectedGraph, architecture: Architecture, conv: _Conversions, seed: int
) -> BladeModel:
    """Weights drawn from ``seed`` (the global torch RNG is left untouched); the head bias starts at the
    log-odds of the weighted base rate so early steps learn pairs rather than the overall rate."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BladeModel.for_graph(graph, architecture)
    rate = conv.base_rate()
    if rate is not None:
        with torch.no_grad():
            model.head_b.fill_(math.log(rate / (1 - rate)))
    return model


@dataclass
class _EpochLosses:
    """Running epoch means: conversion loss weighted by example weight, link loss by step.  Over
    several processes the weights and step counts are the whole run's, the sums this rank's part
    until :meth:`sum_over` adds the parts up at the epoch's end."""

    conv_sum: float = 0.0
    conv_weight: float = 0.0
    link_sum: float = 0.0
    link_count: int = 0

    def record(self, epoch: int) -> dict:
        """The history row of ``epoch`` (0-based); a loss is NaN when it had no data."""
        return {
            "epoch": epoch + 1,
            "conv_loss": self.conv_sum / self.conv_weight if self.conv_weight > 0 else float("nan"),
            "link_loss": self.link_sum / self.link_count if self.link_count else float("nan"),
        }

    def sum_over(self, collective: Collective) -> None:
        if collective.world_size > 1:
            self.conv_sum, self.link_sum = collective.sum_floats(self.conv_sum, self.link_sum)

    def postfix(self) -> dict[str, str]:
        return {
            "conv": f"{self.conv_sum / self.conv_weight:.4f}" if self.conv_weight else "-",
            "link": f"{self.link_sum / self.link_count:.4f}" if self.link_count else "-",
        }


Validation = Callable[[BladeModel, DirectedGraph], float]  # higher is better; model in eval mode


class LinkPrior(Protocol):
    """A fixed logit per pair added to the link score while training (the embedding learns the rest)."""

    def on(self, edges: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``(src, dst) -> logits`` with the graph read from ``edges`` (m, 2), this epoch's message edges."""
        ...


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s per-step draws in a run of several processes."""
    return (int(seed) * 1_000_003 + 7_919 * (rank + 1)) % 2**63


def _linear_warmup(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate ramps linearly to its set value over the first ``steps`` optimiser steps
    (step ``i``, 0-based, runs at ``(i + 1) / steps`` of it), then stays there; ``steps == 0``: none."""
    if steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {steps}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / steps) if steps else 1.0)


class _Trainer:
    """One training run.  A single seeded generator drives, in this order, each epoch's
    supervision split and shuffles, then per step the negatives, the neighbourhood samples and
    the dropout masks: reordering any of these changes the trained numbers.

    Over several processes (``collective``) every rank makes the same epoch draws from that
    generator (same split, same order), takes its share of each step's examples and edges, and
    draws its own negatives, samples and masks from a generator of its own; gradients are summed
    over the ranks before each (identical) optimiser step."""

    def __init__(
        self,
        graph: DirectedGraph,
        conv: _Conversions,
        architecture: Architecture,
        schedule: TrainingSchedule,
        initial: BladeModel | None = None,
        collective: Collective = SINGLE,
        link_prior: LinkPrior | None = None,
    ) -> None:
        self.graph, self.conv, self.schedule, self.collective = graph, conv, schedule, collective
        self.link_prior = link_prior
        self.prior_logit: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # this epoch's
        self.generator = torch.Generator().manual_seed(int(schedule.seed))
        self.step_generator = (
            self.generator
            if collective.world_size == 1
            else torch.Generator().manual_seed(_rank_seed(schedule.seed, collective.rank))
        )
        self.model = (
            _seeded_model(graph, architecture, conv, int(schedule.seed))
            if initial is None
            else copy.deepcopy(initial)
        )
        collective.broadcast_parameters(self.model)
        self.params = list(self.model.parameters())
        self.sparse = [p is self.model.id_emb.weight for p in self.params]
        self.keys = _edge_keys(graph.src, graph.dst, graph.n_nodes)
        rest = [p for name, p in self.model.named_parameters() if not name.startswith("id_emb")]
        self.opt = torch.optim.Adam(rest, lr=schedule.lr, weight_decay=schedule.weight_decay)
        # Lazy Adam on the id table: only the rows a step touched move (dense Adam would move all
        # n x 2d weights every step: 64 M floats per step at a million products).
        self.id_opt = torch.optim.SparseAdam([self.model.id_emb.weight], lr=schedule.lr)
        self.warmups = [_linear_warmup(o, int(schedule.warmup_steps)) for o in (self.opt, self.id_opt)]
        self.batch_size = int(schedule.batch_size)
        self.uses_history = bool(schedule.neighbour_history) and len(self.model.layers) >= 2
        self.history: list[Tensor] = []

    def _supervision(self) -> tuple[DirectedGraph, Tensor]:
        """This epoch's message graph and its supervision edges (shuffled), disjoint."""
        m = self.graph.n_edges
        share = self.schedule.supervision_share if self.schedule.link_loss_weight > 0 else 0.0
        scored = torch.rand(m, generator=self.generator) < share
        if m and not bool(scored.any()) and self.schedule.link_loss_weight > 0:
            scored[int(torch.randint(0, m, (1,), generator=self.generator))] = True
        sup = torch.nonzero(scored).reshape(-1)
        sup = sup[torch.randperm(sup.numel(), generator=self.generator)]
        return self.graph.message_edges(scored), sup

    def epoch(self, epoch: int, progress: bool | str) -> dict:
        message, sup = self._supervision()
        index = self.model.index(message)
        if self.link_prior is not None:  # read from this epoch's message graph, as test pairs read theirs
            self.prior_logit = self.link_prior.on(torch.stack([message.src, message.dst], 1).numpy())
        if self.uses_history:  # refreshed from this epoch's message graph; steps write seeds back
            depth = len(self.model.layers) - 1
            self.history = self.model.layer_states(
                index, self.graph.feature_rows, self.schedule.export_chunk, depth
            )
        perm_c = torch.randperm(len(self.conv), generator=self.generator)
        bs = self.batch_size * self.collective.world_size  # one step's examples over all ranks
        steps = max(1, math.ceil(max(len(self.conv), sup.numel()) / bs))
        link_bs = math.ceil(sup.numel() / steps)
        losses = _EpochLosses()
        # Off a terminal (DVC, Airflow logs) refresh rarely so logs stay readable.
        # ``progress`` may name the phase (EM round, ensemble member): each phase counts its epochs.
        phase = f"{progress}: " if isinstance(progress, str) else "blade "
        bar = tqdm(range(steps), desc=f"{phase}epoch {epoch + 1}/{self.schedule.epochs}", leave=False,
                   disable=not progress, mininterval=0.1 if sys.stderr.isatty() else 10.0)  # fmt: skip
        for step in bar:
            edges = self._share(sup[step * link_bs : (step + 1) * link_bs])
            self._step(index, self._share(perm_c[step * bs : (step + 1) * bs]), edges, losses)
            if progress:
                bar.set_postfix(**losses.postfix(), refresh=False)  # mininterval paces the output
        bar.close()
        losses.sum_over(self.collective)
        return losses.record(epoch)

    def _share(self, items: Tensor) -> Tensor:
        """This rank's contiguous slice of one step's ``items`` (all of them in one process)."""
        part = math.ceil(items.numel() / self.collective.world_size)
        return items[self.collective.rank * part : (self.collective.rank + 1) * part]

    def _link_pairs(self, edges: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pairs and labels/weights: positives, ``n_negatives`` random destinations each, reversed
        edges (when not edges themselves) weighted ``reverse_penalty``."""
        u, v = self.graph.src[edges], self.graph.dst[edges]
        k, n = int(self.schedule.n_negatives), self.graph.n_nodes
        neg_u = u.repeat(k)
        neg_v = torch.randint(0, n, (neg_u.numel(),), generator=self.step_generator)
        one_way = ~_is_edge(self.keys, v, u, n) & (u != v)
        rev_u, rev_v = v[one_way], u[one_way]
        m, r = u.numel(), rev_u.numel()
        y = torch.cat([torch.ones(m), torch.zeros(neg_u.numel() + r)])
        # positives and random negatives weigh as in plain BCE (negatives averaged per positive)
        w = torch.cat([torch.ones(m), torch.full((neg_u.numel(),), 1.0 / max(k, 1)),
                       torch.full((r,), float(self.schedule.reverse_penalty))])  # fmt: skip
        return torch.cat([u, neg_u, rev_u]), torch.cat([v, neg_v, rev_v]), y, w

    def _step(self, index: GraphIndex, cb: Tensor, edges: Tensor, losses: _EpochLosses) -> None:
        """One optimiser step on conversion examples ``cb`` and supervision ``edges`` (one shared pass),
        this rank's share of the step: the losses are normalised by the whole step's totals."""
        wsum, n_pos = self.collective.sum_floats(float(self.conv.weight[cb].sum()), float(edges.numel()))
        losses.conv_weight += wsum
        linked = n_pos > 0 and self.schedule.link_loss_weight > 0
        losses.link_count += int(linked)
        loss = self._loss(index, cb, edges, wsum, n_pos if linked else 0.0, losses)
        self.opt.zero_grad(set_to_none=True)
        self.id_opt.zero_grad(set_to_none=True)
        if loss is not None and loss.requires_grad:
            loss.backward()
        self.collective.sum_gradients(self.params, self.sparse)
        _decay_touched_rows(self.model.id_emb.weight, self.schedule.id_weight_decay)
        # Without a gradient (e.g. a step of zero-weight examples only) Adam leaves a parameter
        # alone: no step, not even weight decay.
        self.opt.step()
        self.id_opt.step()
        for warmup in self.warmups:
            warmup.step()

    def _loss(
        self, index: GraphIndex, cb: Tensor, edges: Tensor, wsum: float, n_pos: float, losses: _EpochLosses
    ) -> Tensor | None:
        """This rank's part of the step's loss (None when its share is empty): conversion
        ``sum(w * bce) / wsum``, plus ``link_loss_weight`` x link when ``n_pos``."""
        nc = cb.numel()
        if not nc and not edges.numel():
            return None
        lu, lv, ly, lw = self._link_pairs(edges) if edges.numel() else (torch.zeros(0, dtype=torch.long),) * 4
        src, dst = torch.cat([self.conv.src[cb], lu]), torch.cat([self.conv.dst[cb], lv])
        seeds, inv = torch.unique(torch.cat([src, dst]), return_inverse=True)
        features = self.graph.feature_rows
        if self.uses_history:
            s_all, t_all = self.model.encode_with_history(
                index, features, seeds, self.history, self.step_generator
            )
        else:
            s_all, t_all = self.model.encode(index, features, seeds, self.step_generator, stochastic=True)
        s, t = s_all.index_select(0, inv[: src.numel()]), t_all.index_select(0, inv[src.numel() :])
        loss = s.new_zeros(())
        if nc and wsum > 0:
            loss = loss + self._conversion_loss(s[:nc], t[:nc], cb, losses) / wsum
        if ly.numel() and n_pos > 0:
            offset = None if self.prior_logit is None else self.prior_logit(lu.numpy(), lv.numpy())
            link = self._link_loss(s[nc:], t[nc:], ly, lw, n_pos, losses, offset)
            loss = loss + self.schedule.link_loss_weight * link
        return loss

    def _conversion_loss(self, s: Tensor, t: Tensor, cb: Tensor, losses: _EpochLosses) -> Tensor:
        """``sum(w * bce)`` over the examples ``cb``."""
        w = self.conv.weight[cb]
        bce = F.binary_cross_entropy_with_logits(
            self.model.conversion_logit(s, t), self.conv.label[cb], reduction="none"
        )
        wb = (w * bce).sum()
        losses.conv_sum += float(wb.detach())
        return wb

    def _link_loss(
        self,
        s: Tensor,
        t: Tensor,
        y: Tensor,
        w: Tensor,
        n_pos: float,
        losses: _EpochLosses,
        offset: np.ndarray | None = None,
    ) -> Tensor:
        """``sum(w * bce) / n_pos`` over the pairs (``n_pos``: the whole step's positives), the link
        score plus ``offset`` (the prior's logits) when given."""
        logit = self.model.link_score(s, t)
        if offset is not None:
            logit = logit + torch.as_tensor(offset, dtype=logit.dtype)
        bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
        loss = (w * bce).sum() / n_pos
        losses.link_sum += float(loss.detach())
        return loss


class _EarlyStopping:
    """Keeps the best weights by ``validate``; says stop after ``patience`` checks without a gain.
    Over several processes rank 0 validates and every rank takes its value: the same decisions."""

    def __init__(
        self,
        validate: Validation | None,
        graph: DirectedGraph,
        schedule: TrainingSchedule,
        collective: Collective = SINGLE,
    ) -> None:
        self.validate, self.graph, self.collective = validate, graph, collective
        self.every, self.patience = max(1, int(schedule.eval_every)), int(schedule.patience)
        self.best, self.best_state, self.stale = -math.inf, None, 0

    def check(self, model: BladeModel, epoch: int, row: dict) -> bool:
        """Validate after ``epoch`` (0-based) when due; True when training should stop."""
        if self.validate is None or (epoch + 1) % self.every:
            return False
        model.eval()
        value = float(self.validate(model, self.graph)) if self.collective.rank == 0 else math.nan
        value = self.collective.broadcast_float(value)
        model.train()
        row["validation"] = value
        if value > self.best:
            self.best, self.best_state, self.stale = value, copy.deepcopy(model.state_dict()), 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: BladeModel) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def _check_same_run(collective: Collective, graph: DirectedGraph, conv: _Conversions, schedule) -> None:
    """Refuse (on every rank at once) ranks that see different data or schedules: their steps
    would not line up, and training would hang or silently mix two runs."""
    if collective.world_size == 1:
        return
    arrays = (graph.src, graph.dst, conv.src, conv.dst, conv.weight, conv.label)
    sums = [float(x.double().sum()) for x in arrays]
    fingerprint = [graph.n_nodes, graph.n_edges, len(conv), *sums, *map(float, asdict(schedule).values())]
    if not collective.agree(fingerprint):
        raise ValueError("the ranks of a distributed run differ in training data or schedule")


def train_blade(
    graph: DirectedGraph,
    conv_src: Tensor,
    conv_dst: Tensor,
    conv_label: Tensor,
    conv_weight: Tensor,
    *,
    architecture: Architecture,
    schedule: TrainingSchedule,
    validate: Validation | None = None,
    progress: bool | str = True,
    initial: BladeModel | None = None,
    collective: Collective = SINGLE,
) -> tuple[BladeModel, list[dict]]:
    """Train a :class:`BladeModel` on weighted conversion examples plus the directed link loss.

    One step = a batch of ``schedule.batch_size`` conversion examples (loss
    ``sum(w * bce) / sum(w)``) and a slice of this epoch's supervision edges (see
    the module docstring); total loss = conv + ``link_loss_weight`` * link.  An epoch is
    one pass over the conversion examples, or over the supervision edges when there
    are none.  With ``validate`` (called every ``eval_every`` epochs on the model in
    eval mode, higher is better) training stops after ``patience`` checks without a
    gain and the best weights are restored.  Deterministic for a given seed; the global
    torch RNG is left untouched.  ``initial``: continue from a copy of this model's weights
    (ensemble members) instead of fresh seeded ones.  Returns the model (eval mode) and per-epoch
    ``{"epoch", "conv_loss", "link_loss"[, "validation"]}``; a loss is NaN without data.

    ``collective``: data-parallel training over its ranks (every rank calls this with the same
    data and schedule).  A step then covers ``batch_size`` examples *per rank*, each rank taking
    its slice of the step's shuffled examples and edges; losses are normalised by the whole
    step's totals and gradients summed, so the weights move as one process's would with
    ``batch_size x world_size``.  The epoch draws are shared; negatives, neighbourhood samples
    and dropout masks come from a per-rank stream, so runs with and without sampling noise only
    match where a step draws nothing.  ``validate`` runs on rank 0 only.
    """
    run = BladeTraining(
        graph, conv_src, conv_dst, conv_label, conv_weight, architecture=architecture,
        schedule=schedule, validate=validate, initial=initial, collective=collective,
    )  # fmt: skip
    run.advance(int(schedule.epochs), progress)
    return run.finish()


class BladeTraining:
    """:func:`train_blade` as a run that can be advanced a budget at a time and paused between
    budgets (successive halving over configs advances many runs in turns).  Arguments as
    :func:`train_blade`; ``best`` is the best validation so far (-inf before the first)."""

    def __init__(
        self,
        graph: DirectedGraph,
        conv_src: Tensor,
        conv_dst: Tensor,
        conv_label: Tensor,
        conv_weight: Tensor,
        *,
        architecture: Architecture,
        schedule: TrainingSchedule,
        validate: Validation | None = None,
        initial: BladeModel | None = None,
        collective: Collective = SINGLE,
        link_prior: LinkPrior | None = None,
    ) -> None:
        conv = _Conversions.checked(graph.n_nodes, conv_src, conv_dst, conv_label, conv_weight)
        if not len(conv) and graph.n_edges == 0:
            raise ValueError("nothing to train on: no conversion examples and no edges")
        _check_same_run(collective, graph, conv, schedule)
        self.trainer = _Trainer(graph, conv, architecture, schedule, initial, collective, link_prior)
        self.stopping = _EarlyStopping(validate, graph, schedule, collective)
        self.max_epochs = int(schedule.epochs)
        self.history: list[dict] = []
        self.stopped = self.max_epochs <= 0

    @property
    def best(self) -> float:
        return self.stopping.best

    def advance(self, until: int, progress: bool | str = False) -> bool:
        """Train up to epoch ``until`` (at most ``schedule.epochs``) unless early stopping ends the
        run first; returns whether the run is over."""
        model = self.trainer.model
        model.train()
        while not self.stopped and len(self.history) < min(int(until), self.max_epochs):
            epoch = len(self.history)
            self.history.append(self.trainer.epoch(epoch, progress))
            self.stopped = self.stopping.check(model, epoch, self.history[-1])
        self.stopped = self.stopped or len(self.history) >= self.max_epochs
        return self.stopped

    def finish(self) -> tuple[BladeModel, list[dict]]:
        """The model with its best validated weights (eval mode) and the per-epoch history."""
        model = self.trainer.model
        self.stopping.restore(model)
        model.eval()
        return model, self.history


# -- export and serving -------------------------------------------------------


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


def _folded_embeddings(members: Iterable[BladeModel], graph: DirectedGraph, chunk: int):
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
    members share their starting point (see ``train.fit_graph``), so their embedding
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


def member_moments(
    members: Iterable[BladeModel], graph: DirectedGraph, *, chunk: int
) -> dict[str, np.ndarray]:
    """Every member's deterministic embeddings, kept apart: ``s_members``, ``t_members`` [K, n, d]
    (each member's head folded into its target role, ``(s*t).w = s.(t*w)``) and ``b_members`` [K].

    For members trained from independent initialisations (a classic deep ensemble): their
    embedding spaces are not aligned, so per-node moments (:func:`ensemble_moments`) would mix
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
