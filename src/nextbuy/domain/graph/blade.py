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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv
from tqdm.auto import tqdm

from nextbuy.config import TrainConfig
from nextbuy.domain.graph.sampler import CSR, group_members, sample_neighbourhood
from nextbuy.domain.graph.scoring import link_scores, pair_logit_moments, score_and_uncertainty  # noqa: F401 - re-export

__all__ = [
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
            min(int(self.src.min()), int(self.dst.min())) < 0 or max(int(self.src.max()), int(self.dst.max())) >= n
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
    def build(cls, graph: DirectedGraph, cold_start_fallback: bool = True) -> "GraphIndex":
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
        cfg: TrainConfig,
        price_mean: float = 0.0,
        price_std: float = 1.0,
    ) -> None:
        super().__init__()
        d, h = cfg.embedding_dim, cfg.hidden_dim
        self.n_nodes = int(n_nodes)
        self.n_categories = int(n_categories)
        self.dim = d
        self.dropout = float(cfg.dropout)
        self.fanout_min = int(cfg.fanout_min)
        self.fanout_max = int(cfg.fanout_max)
        self.two_hop_degree = int(cfg.two_hop_degree)
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
    def for_graph(cls, graph: DirectedGraph, cfg: TrainConfig) -> "BladeModel":
        lp = graph.log_price[torch.isfinite(graph.log_price)]
        mean = float(lp.mean()) if lp.numel() else 0.0
        std = float(lp.std()) if lp.numel() > 1 else 1.0
        return cls(graph.n_nodes, graph.n_categories, cfg, mean, std if std > 1e-6 else 1.0)

    # -- pieces -------------------------------------------------------------
    def base(self, index: GraphIndex, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Base role vectors ``(s0, t0)`` of ``nodes``, each [len(nodes), d]."""
        cat = index.category[nodes]
        cat = torch.where((cat >= 0) & (cat < self.n_categories), cat, torch.full_like(cat, self.n_categories))
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
    """Positives ``src -> dst`` plus one negative each: reversed edge (if not itself an edge) or random dst."""
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


def train_blade(
    graph: DirectedGraph,
    conv_src: Tensor,
    conv_dst: Tensor,
    conv_label: Tensor,
    conv_weight: Tensor,
    cfg: TrainConfig,
    progress: bool = True,
) -> tuple[BladeModel, list[dict]]:
    """Train a :class:`BladeModel` on weighted conversion examples plus the directed link loss.

    One step = a batch of ``cfg.batch_size`` conversion examples (loss
    ``sum(w * bce) / sum(w)``) and a batch of ``cfg.batch_size`` graph edges,
    each with one negative: with probability ``cfg.reverse_negative_share`` the
    reversed edge (unless that is an edge too), otherwise a uniformly random
    destination.  Total loss = conv + ``cfg.link_loss_weight`` * link.  An epoch
    is one pass over the conversion examples (or over the edges when there are
    none).  Deterministic for a given ``cfg.seed``; the global torch RNG is left
    untouched.  Returns the model (eval mode) and per-epoch
    ``{"epoch", "conv_loss", "link_loss"}``; a loss is NaN when it had no data.
    """
    n = graph.n_nodes
    conv_src = torch.as_tensor(conv_src).to(torch.long).reshape(-1)
    conv_dst = torch.as_tensor(conv_dst).to(torch.long).reshape(-1)
    conv_label = torch.as_tensor(conv_label).to(torch.float32).reshape(-1)
    conv_weight = torch.as_tensor(conv_weight).to(torch.float32).reshape(-1)
    n_conv = conv_src.numel()
    if not (conv_dst.numel() == conv_label.numel() == conv_weight.numel() == n_conv):
        raise ValueError("conversion arrays must all have the same length")
    if n_conv:
        if min(int(conv_src.min()), int(conv_dst.min())) < 0 or max(int(conv_src.max()), int(conv_dst.max())) >= n:
            raise ValueError(f"conversion pairs must lie in [0, {n})")
        if not bool(torch.isfinite(conv_weight).all()) or bool((conv_weight < 0).any()):
            raise ValueError("conversion weights must be finite and >= 0")
        if bool(((conv_label < 0) | (conv_label > 1)).any()):
            raise ValueError("conversion labels must lie in [0, 1]")
    n_edges = graph.n_edges
    if n_conv == 0 and n_edges == 0:
        raise ValueError("nothing to train on: no conversion examples and no edges")

    generator = torch.Generator().manual_seed(int(cfg.seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        model = BladeModel.for_graph(graph, cfg)
    if n_conv and float(conv_weight.sum()) > 0:
        rate = float((conv_weight * conv_label).sum() / conv_weight.sum())
        rate = min(max(rate, 1e-4), 1 - 1e-4)
        with torch.no_grad():
            model.head_b.fill_(math.log(rate / (1 - rate)))
    index = GraphIndex.build(graph, cfg.cold_start_fallback)
    keys = _edge_keys(graph.src, graph.dst, n)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    bs = int(cfg.batch_size)
    steps = math.ceil(n_conv / bs) if n_conv else math.ceil(n_edges / bs)
    link_bs = min(bs, n_edges)
    history: list[dict] = []
    model.train()
    for epoch in range(int(cfg.epochs)):
        perm_c = torch.randperm(n_conv, generator=generator)
        perm_e = torch.randperm(n_edges, generator=generator)
        c_num = c_den = 0.0
        l_num, l_cnt = 0.0, 0
        # Off a terminal (DVC, Airflow logs) refresh rarely so logs stay readable.
        bar = tqdm(range(steps), desc=f"blade epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False,
                   mininterval=0.1 if sys.stderr.isatty() else 10.0)
        for step in bar:
            cb = perm_c[step * bs : (step + 1) * bs]
            if link_bs:
                eb = perm_e[(step * link_bs + torch.arange(link_bs)) % n_edges]
                lu, lv, ly = _link_batch(
                    graph.src[eb], graph.dst[eb], keys, n, cfg.reverse_negative_share, generator
                )
            else:
                lu = lv = torch.zeros(0, dtype=torch.long)
                ly = torch.zeros(0)
            nc = cb.numel()
            s, t = model.encode(
                index, torch.cat([conv_src[cb], lu]), torch.cat([conv_dst[cb], lv]), generator, stochastic=True
            )
            loss = s.new_zeros(())
            if nc:
                w = conv_weight[cb]
                bce = F.binary_cross_entropy_with_logits(
                    model.conversion_logit(s[:nc], t[:nc]), conv_label[cb], reduction="none"
                )
                wsum = float(w.sum())
                wb = (w * bce).sum()
                if wsum > 0:
                    loss = loss + wb / wsum
                c_num += float(wb.detach())
                c_den += wsum
            if ly.numel():
                link_loss = F.binary_cross_entropy_with_logits(model.link_score(s[nc:], t[nc:]), ly)
                loss = loss + cfg.link_loss_weight * link_loss
                l_num += float(link_loss.detach()) * ly.numel()
                l_cnt += ly.numel()
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            if progress:
                bar.set_postfix(  # refresh=False: let mininterval pace the output
                    conv=f"{c_num / c_den:.4f}" if c_den else "-", link=f"{l_num / l_cnt:.4f}" if l_cnt else "-",
                    refresh=False,
                )
        bar.close()
        history.append(
            {
                "epoch": epoch + 1,
                "conv_loss": c_num / c_den if c_den > 0 else float("nan"),
                "link_loss": l_num / l_cnt if l_cnt else float("nan"),
            }
        )
    model.eval()
    return model, history


# -- export and serving -------------------------------------------------------


@torch.no_grad()
def export_moments(model: BladeModel, graph: DirectedGraph, cfg: TrainConfig) -> dict[str, np.ndarray]:
    """Per-node mean and variance of ``s`` and ``t`` over ``cfg.mc_samples`` stochastic passes.

    Each pass has dropout on and draws fresh neighbourhoods; nodes are processed
    in chunks of ``cfg.export_chunk`` so memory stays bounded for large graphs.
    Variances are unbiased (ddof=1).  Returns float32 ``s_mean, s_var, t_mean,
    t_var`` [n, d], ``head_w`` [d], ``head_b`` [1].  Deterministic for ``cfg.seed``.
    """
    n, d = graph.n_nodes, model.dim
    mc = int(cfg.mc_samples)
    index = GraphIndex.build(graph, cfg.cold_start_fallback)
    generator = torch.Generator().manual_seed(int(cfg.seed) + 1_000_003)
    out = {k: np.empty((n, d), dtype=np.float32) for k in ("s_mean", "s_var", "t_mean", "t_var")}
    chunk = int(cfg.export_chunk)
    was_training = model.training
    model.eval()
    for start in range(0, n, chunk):
        nodes = torch.arange(start, min(start + chunk, n))
        s_sum = torch.zeros(nodes.numel(), d, dtype=torch.float64)
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
        sl = slice(start, start + nodes.numel())
        for name, tot, sq in (("s", s_sum, s_sq), ("t", t_sum, t_sq)):
            mean = tot / mc
            var = ((sq - mc * mean * mean) / (mc - 1)).clamp_min(0.0)
            out[f"{name}_mean"][sl] = mean.float().numpy()
            out[f"{name}_var"][sl] = var.float().numpy()
    model.train(was_training)
    out["head_w"] = model.head_w.detach().float().numpy().copy()
    out["head_b"] = model.head_b.detach().float().numpy().reshape(1).copy()
    return out
