"""BLADE-style dual-embedding GNN for directed product graphs.

Every product ``v`` has a *source* vector ``s_v`` (what it leads to) and a
*target* vector ``t_v`` (what leads to it); the directed edge ``u -> v`` is
scored from ``s_u . t_v``, so ``u -> v`` and ``v -> u`` score differently.

Model (one directed aggregation layer over degree-adaptive samples):

* base vectors ``[s0_v | t0_v] = id_v + MLP(category_v, price_v)``: the id
  embedding is learned per product, the category/price part is shared, so a
  product never seen in training still gets a sensible vector;
* ``s_u = s0_u + SAGE_s(s0_u, {dropout(t0_w) : u -> w sampled})`` and
  ``t_v = t0_v + SAGE_t(t0_v, {dropout(s0_w) : w -> v sampled})``.  The
  neighbour messages are *summed and divided by fanout_max* (not averaged),
  so a node leans on its neighbourhood in proportion to its budget: low-degree
  nodes, whose own id embedding is poorly trained, borrow more.
* Dropout acts on the neighbour messages only, not on a node's own vector.
  Together with the sampling this makes the spread over stochastic passes a
  neighbourhood-driven signal: largest for nodes with big random (2-hop or
  cold-start) neighbourhoods, smallest for mid-degree nodes whose whole
  neighbourhood fits the budget.  Dropout on the node's own vector would add
  variance proportional to its norm, i.e. mostly to well-trained hubs.
* conversion head ``logit = (s_u * t_v) . w + b``; link score ``s_u . t_v``.

Training is mini-batch: each step computes only the batch's nodes and their
sampled neighbourhoods (memory bounded by the batch size, not the graph).

Serving needs no torch: :func:`export_moments` runs ``mc_samples`` stochastic
passes (dropout on, fresh neighbourhood samples) and keeps per-dimension means
and variances; :func:`pair_logit_moments` turns them into a logit mean and
variance per pair in numpy.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv
from tqdm.auto import tqdm

from nextbuy.domain.graph.sampler import CSR, group_members, sample_neighbourhood
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
    "export_moments",
    "pair_logit_moments",
    "score_and_uncertainty",
    "link_scores",
]


@dataclass(frozen=True)
class Architecture:
    """A model's shape and neighbourhood sampling: fixed for its lifetime, so training and export agree."""

    embedding_dim: int  # d: size of each of s_v and t_v
    hidden_dim: int  # width of the category/price encoder
    fanout_min: int  # neighbour budget of the highest-degree node
    fanout_max: int  # neighbour budget of the lowest-degree node (also the message scale)
    two_hop_degree: int  # nodes with fewer neighbours fill their budget with 2-hop ones
    dropout: float  # message dropout; drives the MC spread at export
    cold_start_fallback: bool  # nodes without neighbours in a direction sample same-category products

    def __post_init__(self) -> None:
        if not 1 <= self.fanout_min <= self.fanout_max:
            raise ValueError("need 1 <= fanout_min <= fanout_max")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must lie in [0, 1)")


@dataclass(frozen=True)
class TrainingSchedule:
    """How :func:`train_blade` fits a model: epochs, batches, optimiser, loss mix and seed."""

    epochs: int
    batch_size: int  # conversion examples (and graph edges) per step
    lr: float  # Adam learning rate
    weight_decay: float  # Adam weight decay
    link_loss_weight: float  # total loss = conversion + link_loss_weight * link
    reverse_negative_share: float  # share of link negatives that are the reversed edge
    seed: int


@dataclass(frozen=True)
class DirectedGraph:
    """What the model sees: a directed graph with node attributes and no labels."""

    n_nodes: int
    src: Tensor  # int64 [m] directed edges src -> dst
    dst: Tensor  # int64 [m]
    category: Tensor  # int64 [n], -1 = unknown
    log_price: Tensor  # float32 [n], NaN = unknown

    def __post_init__(self) -> None:
        n = int(self.n_nodes)
        for name, t, dtype in (
            ("src", self.src, torch.long),
            ("dst", self.dst, torch.long),
            ("category", self.category, torch.long),
            ("log_price", self.log_price, torch.float32),
        ):
            object.__setattr__(self, name, torch.as_tensor(t).to(dtype).reshape(-1))
        if self.src.numel() != self.dst.numel():
            raise ValueError("src and dst must have the same length")
        if self.category.numel() != n or self.log_price.numel() != n:
            raise ValueError("category and log_price must have one entry per node")
        if self.src.numel() and (
            min(int(self.src.min()), int(self.dst.min())) < 0
            or max(int(self.src.max()), int(self.dst.max())) >= n
        ):
            raise ValueError(f"edge endpoints must lie in [0, {n})")

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    @property
    def n_categories(self) -> int:
        return int(self.category.max()) + 1 if self.category.numel() and int(self.category.max()) >= 0 else 0


@dataclass(frozen=True)
class GraphIndex:
    """Adjacency in both directions plus node features, built once per graph."""

    out_csr: CSR  # u -> its out-neighbours (feeds s_u)
    in_csr: CSR  # v -> its in-neighbours (feeds t_v)
    category: Tensor
    log_price: Tensor
    out_fallback: tuple[Tensor, CSR] | None
    in_fallback: tuple[Tensor, CSR] | None

    @classmethod
    def build(cls, graph: DirectedGraph, cold_start_fallback: bool = True) -> GraphIndex:
        out_csr = CSR.from_edges(graph.src, graph.dst, graph.n_nodes)
        in_csr = CSR.from_edges(graph.dst, graph.src, graph.n_nodes)
        out_fb = in_fb = None
        if cold_start_fallback and graph.n_categories > 0:
            out_fb = (graph.category, group_members(graph.category, out_csr.degree() > 0, graph.n_categories))
            in_fb = (graph.category, group_members(graph.category, in_csr.degree() > 0, graph.n_categories))
        return cls(out_csr, in_csr, graph.category, graph.log_price, out_fb, in_fb)


def _dropout(x: Tensor, p: float, generator: torch.Generator | None, active: bool) -> Tensor:
    """Inverted dropout driven by an explicit generator (so runs are reproducible)."""
    if not active or p <= 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class BladeModel(nn.Module):
    """Dual (source/target) embeddings + one directed aggregation layer + conversion head."""

    def __init__(
        self,
        n_nodes: int,
        n_categories: int,
        *,
        embedding_dim: int,
        hidden_dim: int,
        fanout_min: int,
        fanout_max: int,
        two_hop_degree: int,
        dropout: float,
        cold_start_fallback: bool,
        price_mean: float = 0.0,
        price_std: float = 1.0,
    ) -> None:
        super().__init__()
        d, h = int(embedding_dim), int(hidden_dim)
        self.n_nodes = int(n_nodes)
        self.n_categories = int(n_categories)
        self.dim = d
        self.dropout = float(dropout)
        self.fanout_min = int(fanout_min)
        self.fanout_max = int(fanout_max)
        self.two_hop_degree = int(two_hop_degree)
        self.cold_start_fallback = bool(cold_start_fallback)
        # Creation order fixes which draws of the seeded RNG each weight gets: keep it.
        self.id_emb = nn.Embedding(self.n_nodes, 2 * d)
        nn.init.normal_(self.id_emb.weight, std=0.1)
        self.cat_emb = nn.Embedding(self.n_categories + 1, h)  # last row: unknown category
        nn.init.normal_(self.cat_emb.weight, std=0.1)
        self.features = nn.Sequential(nn.Linear(h + 2, h), nn.ReLU(), nn.Linear(h, 2 * d))
        self.conv_s = SAGEConv((d, d), d, aggr="sum")  # s_u <- t0 of out-neighbours
        self.conv_t = SAGEConv((d, d), d, aggr="sum")  # t_v <- s0 of in-neighbours
        self.head_w = nn.Parameter(torch.ones(d))
        self.head_b = nn.Parameter(torch.zeros(1))
        self.register_buffer("price_stats", torch.tensor([price_mean, price_std], dtype=torch.float32))

    @classmethod
    def for_graph(cls, graph: DirectedGraph, architecture: Architecture) -> BladeModel:
        """A model sized for ``graph``, with its price features standardised on the graph's known prices."""
        lp = graph.log_price[torch.isfinite(graph.log_price)]
        mean = float(lp.mean()) if lp.numel() else 0.0
        std = float(lp.std()) if lp.numel() > 1 else 1.0
        return cls(
            graph.n_nodes,
            graph.n_categories,
            **asdict(architecture),
            price_mean=mean,
            price_std=std if std > 1e-6 else 1.0,
        )

    def index(self, graph: DirectedGraph) -> GraphIndex:
        """The adjacency this model samples from (with its cold-start fallback setting)."""
        return GraphIndex.build(graph, self.cold_start_fallback)

    # -- pieces -------------------------------------------------------------
    def base(self, index: GraphIndex, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Base role vectors ``(s0, t0)`` of ``nodes``, each [len(nodes), d]."""
        cat = index.category[nodes]
        unknown = torch.full_like(cat, self.n_categories)
        cat = torch.where((cat >= 0) & (cat < self.n_categories), cat, unknown)
        lp = index.log_price[nodes]
        known = torch.isfinite(lp)
        z = torch.where(known, (lp - self.price_stats[0]) / self.price_stats[1], torch.zeros_like(lp))
        feats = torch.cat([self.cat_emb(cat), z.unsqueeze(1), (~known).to(z.dtype).unsqueeze(1)], dim=1)
        hvec = self.id_emb(nodes) + self.features(feats)
        return hvec[:, : self.dim], hvec[:, self.dim :]

    def encode(
        self,
        index: GraphIndex,
        s_nodes: Tensor,
        t_nodes: Tensor,
        generator: torch.Generator | None = None,
        stochastic: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Source vectors of ``s_nodes`` and target vectors of ``t_nodes`` (one sampled pass).

        Only the unique requested nodes and their sampled neighbourhoods are computed.
        Neighbourhoods are always sampled; ``stochastic`` switches message dropout.
        """
        us, inv_s = torch.unique(s_nodes, return_inverse=True)
        ut, inv_t = torch.unique(t_nodes, return_inverse=True)
        kw = dict(
            fanout_min=self.fanout_min,
            fanout_max=self.fanout_max,
            two_hop_degree=self.two_hop_degree,
            generator=generator,
        )
        cp_o, nb_o = sample_neighbourhood(index.out_csr, us, fallback=index.out_fallback, **kw)
        cp_i, nb_i = sample_neighbourhood(index.in_csr, ut, fallback=index.in_fallback, **kw)
        sizes = [us.numel(), ut.numel(), nb_o.numel(), nb_i.numel()]
        nodes, inv = torch.unique(torch.cat([us, ut, nb_o, nb_i]), return_inverse=True)
        loc_us, loc_ut, loc_o, loc_i = torch.split(inv, sizes)
        s0, t0 = self.base(index, nodes)
        scale = 1.0 / self.fanout_max
        msg_t = _dropout(t0, self.dropout, generator, stochastic) * scale
        msg_s = _dropout(s0, self.dropout, generator, stochastic) * scale
        s = s0[loc_us] + self.conv_s((msg_t, s0[loc_us]), torch.stack([loc_o, cp_o]))
        t = t0[loc_ut] + self.conv_t((msg_s, t0[loc_ut]), torch.stack([loc_i, cp_i]))
        return s[inv_s], t[inv_t]

    def conversion_logit(self, s: Tensor, t: Tensor) -> Tensor:
        return (s * t) @ self.head_w + self.head_b

    @staticmethod
    def link_score(s: Tensor, t: Tensor) -> Tensor:
        return (s * t).sum(dim=-1)

    def forward(
        self,
        index: GraphIndex,
        src: Tensor,
        dst: Tensor,
        generator: torch.Generator | None = None,
        stochastic: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """``(conversion_logit, link_score)`` for pairs ``src -> dst``."""
        s, t = self.encode(index, src, dst, generator, stochastic)
        return self.conversion_logit(s, t), self.link_score(s, t)


# -- training -----------------------------------------------------------------


def _edge_keys(src: Tensor, dst: Tensor, n: int) -> Tensor:
    return torch.unique(src * n + dst)  # sorted


def _is_edge(keys: Tensor, u: Tensor, v: Tensor, n: int) -> Tensor:
    if keys.numel() == 0:
        return torch.zeros(u.shape, dtype=torch.bool)
    q = u * n + v
    pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    return keys[pos] == q


def _link_batch(
    src: Tensor, dst: Tensor, keys: Tensor, n: int, reverse_share: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Positives ``src -> dst`` plus one negative each: the reversed edge (if not itself an edge) or a
    random destination."""
    m = src.numel()
    want_rev = torch.rand(m, generator=generator) < reverse_share
    rand_dst = torch.randint(0, n, (m,), generator=generator)
    use_rev = want_rev & ~_is_edge(keys, dst, src, n) & (src != dst)
    neg_u = torch.where(use_rev, dst, src)
    neg_v = torch.where(use_rev, src, rand_dst)
    u = torch.cat([src, neg_u])
    v = torch.cat([dst, neg_v])
    y = torch.cat([torch.ones(m), torch.zeros(m)])
    return u, v, y


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
    """Running epoch means: conversion loss weighted by example weight, link loss by example count."""

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

    def postfix(self) -> dict[str, str]:
        return {
            "conv": f"{self.conv_sum / self.conv_weight:.4f}" if self.conv_weight else "-",
            "link": f"{self.link_sum / self.link_count:.4f}" if self.link_count else "-",
        }


class _Trainer:
    """One training run.  A single seeded generator drives, in this order, the epoch's shuffles and
    then per step the link negatives, the neighbourhood samples and the dropout masks: reordering
    any of these changes the trained numbers."""

    def __init__(
        self, graph: DirectedGraph, conv: _Conversions, architecture: Architecture, schedule: TrainingSchedule
    ) -> None:
        self.graph, self.conv, self.schedule = graph, conv, schedule
        self.generator = torch.Generator().manual_seed(int(schedule.seed))
        self.model = _seeded_model(graph, architecture, conv, int(schedule.seed))
        self.index = self.model.index(graph)
        self.keys = _edge_keys(graph.src, graph.dst, graph.n_nodes)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay
        )
        self.batch_size = int(schedule.batch_size)
        # An epoch is one pass over the conversion examples, or over the edges when there are none.
        self.steps = math.ceil((len(conv) or graph.n_edges) / self.batch_size)
        self.link_batch_size = min(self.batch_size, graph.n_edges)

    def epoch(self, epoch: int, progress: bool) -> dict:
        perm_c = torch.randperm(len(self.conv), generator=self.generator)
        perm_e = torch.randperm(self.graph.n_edges, generator=self.generator)
        losses = _EpochLosses()
        # Off a terminal (DVC, Airflow logs) refresh rarely so logs stay readable.
        desc = f"blade epoch {epoch + 1}/{self.schedule.epochs}"
        bar = tqdm(
            range(self.steps),
            desc=desc,
            disable=not progress,
            leave=False,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,
        )
        bs = self.batch_size
        for step in bar:
            links = self._link_examples(perm_e, step)
            self._step(perm_c[step * bs : (step + 1) * bs], links, losses)
            if progress:
                # refresh=False: let mininterval pace the output
                bar.set_postfix(**losses.postfix(), refresh=False)
        bar.close()
        return losses.record(epoch)

    def _link_examples(self, perm_e: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """This step's edges (cycling through the epoch's edge order), each with one negative."""
        lbs, n_edges = self.link_batch_size, self.graph.n_edges
        if not lbs:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty, torch.zeros(0)
        eb = perm_e[(step * lbs + torch.arange(lbs)) % n_edges]
        return _link_batch(
            self.graph.src[eb],
            self.graph.dst[eb],
            self.keys,
            self.graph.n_nodes,
            self.schedule.reverse_negative_share,
            self.generator,
        )

    def _step(self, cb: Tensor, links: tuple[Tensor, Tensor, Tensor], losses: _EpochLosses) -> None:
        """One optimiser step on conversion examples ``cb`` and link examples ``links`` (one shared pass)."""
        lu, lv, ly = links
        nc = cb.numel()
        src, dst = torch.cat([self.conv.src[cb], lu]), torch.cat([self.conv.dst[cb], lv])
        s, t = self.model.encode(self.index, src, dst, self.generator, stochastic=True)
        loss = s.new_zeros(())
        if nc:
            conv_loss = self._conversion_loss(s[:nc], t[:nc], cb, losses)
            if conv_loss is not None:
                loss = loss + conv_loss
        if ly.numel():
            loss = loss + self.schedule.link_loss_weight * self._link_loss(s[nc:], t[nc:], ly, losses)
        self.opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # e.g. a batch of zero-weight examples only: no step, not even weight decay
            loss.backward()
            self.opt.step()

    def _conversion_loss(self, s: Tensor, t: Tensor, cb: Tensor, losses: _EpochLosses) -> Tensor | None:
        """``sum(w * bce) / sum(w)`` over the batch; None when the batch carries no weight."""
        w = self.conv.weight[cb]
        bce = F.binary_cross_entropy_with_logits(
            self.model.conversion_logit(s, t), self.conv.label[cb], reduction="none"
        )
        wsum = float(w.sum())
        wb = (w * bce).sum()
        losses.conv_sum += float(wb.detach())
        losses.conv_weight += wsum
        return wb / wsum if wsum > 0 else None

    def _link_loss(self, s: Tensor, t: Tensor, y: Tensor, losses: _EpochLosses) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(self.model.link_score(s, t), y)
        losses.link_sum += float(loss.detach()) * y.numel()
        losses.link_count += y.numel()
        return loss


def train_blade(
    graph: DirectedGraph,
    conv_src: Tensor,
    conv_dst: Tensor,
    conv_label: Tensor,
    conv_weight: Tensor,
    *,
    architecture: Architecture,
    schedule: TrainingSchedule,
    progress: bool = True,
) -> tuple[BladeModel, list[dict]]:
    """Train a :class:`BladeModel` on weighted conversion examples plus the directed link loss.

    One step = a batch of ``schedule.batch_size`` conversion examples (loss
    ``sum(w * bce) / sum(w)``) and a batch of ``schedule.batch_size`` graph edges,
    each with one negative: with probability ``schedule.reverse_negative_share``
    the reversed edge (unless that is an edge too), otherwise a uniformly random
    destination.  Total loss = conv + ``schedule.link_loss_weight`` * link.  An
    epoch is one pass over the conversion examples (or over the edges when there
    are none).  Deterministic for a given ``schedule.seed``; the global torch RNG
    is left untouched.  Returns the model (eval mode) and per-epoch
    ``{"epoch", "conv_loss", "link_loss"}``; a loss is NaN when it had no data.
    """
    conv = _Conversions.checked(graph.n_nodes, conv_src, conv_dst, conv_label, conv_weight)
    if not len(conv) and graph.n_edges == 0:
        raise ValueError("nothing to train on: no conversion examples and no edges")
    trainer = _Trainer(graph, conv, architecture, schedule)
    trainer.model.train()
    history = [trainer.epoch(epoch, progress) for epoch in range(int(schedule.epochs))]
    trainer.model.eval()
    return trainer.model, history


# -- export and serving -------------------------------------------------------


@torch.no_grad()
def export_moments(
    model: BladeModel, graph: DirectedGraph, *, mc_samples: int, chunk: int, seed: int
) -> dict[str, np.ndarray]:
    """Per-node mean and variance of ``s`` and ``t`` over ``mc_samples`` stochastic passes.

    Each pass has dropout on and draws fresh neighbourhoods (with the model's own
    sampling settings); nodes are processed ``chunk`` at a time so memory stays
    bounded for large graphs.  Variances are unbiased (ddof=1).  Returns float32
    ``s_mean, s_var, t_mean, t_var`` [n, d], ``head_w`` [d], ``head_b`` [1].
    Deterministic for ``seed`` (the training seed: export draws from a stream offset from it).
    """
    if int(mc_samples) < 2:
        raise ValueError("mc_samples must be >= 2 (the variance needs two passes)")
    if int(chunk) < 1:
        raise ValueError("chunk must be >= 1")
    n, d = graph.n_nodes, model.dim
    index = model.index(graph)
    generator = torch.Generator().manual_seed(int(seed) + 1_000_003)
    out = {k: np.empty((n, d), dtype=np.float32) for k in ("s_mean", "s_var", "t_mean", "t_var")}
    was_training = model.training
    model.eval()
    for start in range(0, n, int(chunk)):
        nodes = torch.arange(start, min(start + int(chunk), n))
        for key, value in _chunk_moments(model, index, nodes, int(mc_samples), generator).items():
            out[key][start : start + nodes.numel()] = value
    model.train(was_training)
    out["head_w"] = model.head_w.detach().float().numpy().copy()
    out["head_b"] = model.head_b.detach().float().numpy().reshape(1).copy()
    return out


def _chunk_moments(
    model: BladeModel, index: GraphIndex, nodes: Tensor, mc: int, generator: torch.Generator
) -> dict[str, np.ndarray]:
    """Mean and unbiased variance of ``s`` and ``t`` of ``nodes`` over ``mc`` passes (float64 sums)."""
    s_sum = torch.zeros(nodes.numel(), model.dim, dtype=torch.float64)
    s_sq = torch.zeros_like(s_sum)
    t_sum = torch.zeros_like(s_sum)
    t_sq = torch.zeros_like(s_sum)
    for _ in range(mc):
        s, t = model.encode(index, nodes, nodes, generator, stochastic=True)
        s, t = s.double(), t.double()
        s_sum += s
        s_sq += s * s
        t_sum += t
        t_sq += t * t
    out = {}
    for name, tot, sq in (("s", s_sum, s_sq), ("t", t_sum, t_sq)):
        mean = tot / mc
        var = ((sq - mc * mean * mean) / (mc - 1)).clamp_min(0.0)
        out[f"{name}_mean"] = mean.float().numpy()
        out[f"{name}_var"] = var.float().numpy()
    return out
