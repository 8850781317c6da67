"""Baselines of `nextbuy bench linkpred`: each fitted on the observed graph of a
:class:`~nextbuy.domain.linkpred.LinkSplit`, tuned on validation only, and returned as
a score function ``f(src, dst) -> numpy scores`` with its training times.

* ``adamic_adar``: no training, on the undirected observed graph.
* ``gcn`` / ``sage``: 2-layer undirected autoencoders (features through a linear
  projection, dot-product decoder).
* ``dual_mf``: per-node source/target embeddings, score ``s_u . t_v``, no GNN.
* ``dirgnn``: 2 ``DirGNNConv`` layers (GCNConv inside) with source/target heads.
* ``blade`` / ``blade_fixed``: the project's BLADE through ``train_blade`` (link loss
  only, no node features: it knows categories and prices, not bag-of-words).

GNN-style models train full-batch with BCE against ``N_NEG`` random destinations per
positive, evaluating validation Hits@20 every ``EVAL_EVERY`` epochs and keeping the best
weights (early stopping).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import DirGNNConv, GCNConv, SAGEConv

from nextbuy.domain.linkpred import LinkSplit, hits_at_k

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
LRS = (0.01, 0.003)
HIDDEN = (64, 128)
MAX_EPOCHS = 300
EVAL_EVERY = 5
PATIENCE = 8  # evaluations without improvement
N_NEG = 3
FUSION_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


@dataclass
class Fitted:
    score: ScoreFn
    epoch_s: float
    train_s: float
    config: dict


# -- Adamic-Adar ----------------------------------------------------------------


def adamic_adar(split: LinkSplit) -> Fitted:
    started = time.perf_counter()
    n, e = split.n_nodes, split.observed
    a = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64).tocsr()
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_log = np.where(deg > 1, 1.0 / np.log(np.maximum(deg, 2)), 0.0)
    weighted = (a @ sp.diags(inv_log)).tocsr()

    def score(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        return np.asarray(weighted[src].multiply(a[dst]).sum(axis=1)).ravel()

    return Fitted(score, 0.0, time.perf_counter() - started, {})


# -- encoders ---------------------------------------------------------------------


class NodeInput(nn.Module):
    """Sparse features through a linear projection, or a free embedding per node."""

    def __init__(self, n: int, features: Tensor | None, hidden: int) -> None:
        super().__init__()
        self.features = features
        self.proj = nn.Linear(features.shape[1], hidden) if features is not None else None
        self.emb = nn.Embedding(n, hidden) if features is None else None

    def forward(self) -> Tensor:
        if self.proj is None:
            return self.emb.weight
        return torch.sparse.mm(self.features, self.proj.weight.T) + self.proj.bias


class AutoEncoder(nn.Module):
    """Two undirected GCN or SAGE layers; s = t (symmetric dot-product decoder)."""

    def __init__(self, kind: str, n: int, features: Tensor | None, hidden: int, edge_index: Tensor) -> None:
        super().__init__()
        self.inp = NodeInput(n, features, hidden)
        conv = (
            (lambda: GCNConv(hidden, hidden, cached=True))
            if kind == "gcn"
            else (lambda: SAGEConv(hidden, hidden))
        )
        self.conv1, self.conv2 = conv(), conv()
        self.edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)

    def forward(self) -> tuple[Tensor, Tensor]:
        h = F.dropout(F.relu(self.conv1(self.inp(), self.edge_index)), 0.5, self.training)
        h = self.conv2(h, self.edge_index)
        return h, h


class DualMF(nn.Module):
    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.s, self.t = nn.Embedding(n, hidden), nn.Embedding(n, hidden)
        nn.init.normal_(self.s.weight, std=0.1)
        nn.init.normal_(self.t.weight, std=0.1)

    def forward(self) -> tuple[Tensor, Tensor]:
        return self.s.weight, self.t.weight


class DirGNN(nn.Module):
    """Two DirGNNConv(GCNConv) layers on the directed graph, source and target heads."""

    def __init__(self, n: int, features: Tensor | None, hidden: int, edge_index: Tensor) -> None:
        super().__init__()
        self.inp = NodeInput(n, features, hidden)
        self.conv1 = DirGNNConv(GCNConv(hidden, hidden), alpha=0.5)
        self.conv2 = DirGNNConv(GCNConv(hidden, hidden), alpha=0.5)
        self.head_s, self.head_t = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.edge_index = edge_index

    def forward(self) -> tuple[Tensor, Tensor]:
        h = F.dropout(F.relu(self.conv1(self.inp(), self.edge_index)), 0.5, self.training)
        h = F.relu(self.conv2(h, self.edge_index))
        return self.head_s(h), self.head_t(h)


def _features(features: sp.spmatrix | None) -> Tensor | None:
    if features is None:
        return None
    coo = sp.coo_matrix(features, dtype=np.float32)
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    data = torch.as_tensor(coo.data)
    return torch.sparse_coo_tensor(idx, data, coo.shape, check_invariants=False).coalesce()


def build(key: str, split: LinkSplit, features: sp.spmatrix | None, hidden: int) -> nn.Module:
    n, x = split.n_nodes, _features(features)
    edge_index = torch.as_tensor(split.observed.T.copy(), dtype=torch.long)
    if key in ("gcn", "sage"):
        return AutoEncoder(key, n, x, hidden, edge_index)
    if key == "dirgnn":
        return DirGNN(n, x, hidden, edge_index)
    if key == "dual_mf":
        return DualMF(n, hidden)
    raise ValueError(f"unknown model {key!r}")


# -- training -------------------------------------------------------------------


def _pair_scores(s: Tensor, t: Tensor, edges: np.ndarray) -> np.ndarray:
    e = torch.as_tensor(edges, dtype=torch.long)
    return (s[e[:, 0]] * t[e[:, 1]]).sum(-1).numpy()


def _val_hits(s: Tensor, t: Tensor, split: LinkSplit) -> float:
    return hits_at_k(_pair_scores(s, t, split.pos_val), _pair_scores(s, t, split.neg_val), 20)


def _loss(model: nn.Module, pos: Tensor, n: int, gen: torch.Generator) -> Tensor:
    s, t = model()
    u = pos[:, 0].repeat(N_NEG)
    v = torch.randint(0, n, (u.numel(),), generator=gen)
    logit_pos = (s[pos[:, 0]] * t[pos[:, 1]]).sum(-1)
    logit_neg = (s[u] * t[v]).sum(-1)
    logits = torch.cat([logit_pos, logit_neg])
    y = torch.cat([torch.ones_like(logit_pos), torch.zeros_like(logit_neg)])
    return F.binary_cross_entropy_with_logits(logits, y)


def fit_one(key: str, split: LinkSplit, features, hidden: int, lr: float, seed: int) -> tuple[Fitted, float]:
    """One config, early-stopped on validation Hits@20; returns the fit and its best validation Hits@20."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(key, split, features, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4 if key != "dual_mf" else 0.0)
    pos = torch.as_tensor(split.observed, dtype=torch.long)
    best, best_emb, stale, epochs = -1.0, None, 0, 0
    started = time.perf_counter()
    for epoch in range(1, MAX_EPOCHS + 1):
        model.train()
        opt.zero_grad()
        _loss(model, pos, split.n_nodes, gen).backward()
        opt.step()
        epochs = epoch
        if epoch % EVAL_EVERY:
            continue
        model.eval()
        with torch.no_grad():
            s, t = (x.detach() for x in model())
        hits = _val_hits(s, t, split)
        best, best_emb, stale = (hits, (s, t), 0) if hits > best else (best, best_emb, stale + 1)
        if stale >= PATIENCE:
            break
    train_s = time.perf_counter() - started
    s, t = best_emb
    fitted = Fitted(_embedding_score(s, t), train_s / epochs, train_s, {"hidden": hidden, "lr": lr})
    return fitted, best


def _embedding_score(s: Tensor, t: Tensor) -> ScoreFn:
    s_np, t_np = s.numpy().copy(), t.numpy().copy()
    return lambda src, dst: np.einsum("ij,ij->i", s_np[src], t_np[dst])


def tune(key: str, split: LinkSplit, features, seed: int) -> Fitted:
    """The config of ``LRS x HIDDEN`` with the best validation Hits@20 (test never seen)."""
    if key == "blade":
        return tune_blade(split, seed)
    if key == "blade_fixed":
        return fit_blade(split, seed)[0]
    runs = [fit_one(key, split, features, h, lr, seed) for lr, h in itertools.product(LRS, HIDDEN)]
    return max(runs, key=lambda r: r[1])[0]


# -- BLADE ----------------------------------------------------------------------

BLADE_EPOCHS = 100  # passes over the observed edges (link loss only: no conversion examples)


def _blade_graph(split: LinkSplit):
    from nextbuy.domain.graph.blade import DirectedGraph

    n, e = split.n_nodes, torch.as_tensor(split.observed, dtype=torch.long)
    unknown = torch.full((n,), float("nan"))
    return DirectedGraph(n, e[:, 0], e[:, 1], torch.full((n,), -1, dtype=torch.long), unknown)


def fit_blade(split: LinkSplit, seed: int, lr: float = 0.01, dim: int = 32) -> tuple[Fitted, float]:
    """BLADE with the architecture and optimiser of params.yaml's train section (``lr``, ``dim`` aside)."""
    from nextbuy.domain.graph.blade import Architecture, TrainingSchedule, export_moments, train_blade
    from nextbuy.domain.graph.scoring import link_scores

    graph = _blade_graph(split)
    arch = Architecture(dim, 64, fanout_min=4, fanout_max=20, two_hop_degree=5, dropout=0.2,
                        cold_start_fallback=True)  # fmt: skip
    schedule = TrainingSchedule(BLADE_EPOCHS, 2048, lr, 1e-5, 1.0, 0.5, seed)
    empty = torch.zeros(0)
    started = time.perf_counter()
    model, _ = train_blade(graph, empty.long(), empty.long(), empty, empty, architecture=arch,
                           schedule=schedule, progress=False)  # fmt: skip
    moments = export_moments(model, graph, mc_samples=8, chunk=8192, seed=seed)
    train_s = time.perf_counter() - started
    score = lambda src, dst: link_scores(moments, src, dst).astype(np.float64)  # noqa: E731
    val = hits_at_k(score(*split.pos_val.T), score(*split.neg_val.T), 20)
    return Fitted(score, train_s / BLADE_EPOCHS, train_s, {"lr": lr, "dim": dim}), val


def tune_blade(split: LinkSplit, seed: int) -> Fitted:
    runs = [fit_blade(split, seed, lr, dim) for lr, dim in itertools.product(LRS, (32, 64))]
    return max(runs, key=lambda r: r[1])[0]


# -- fusion with Adamic-Adar ----------------------------------------------------


def fuse(model: ScoreFn, aa: ScoreFn, split: LinkSplit) -> tuple[ScoreFn, float]:
    """``z(model) + w * z(AA)``, both standardised on the validation pool, ``w`` chosen on validation."""
    val = np.vstack([split.pos_val, split.neg_val])
    m_val, a_val = model(val[:, 0], val[:, 1]), aa(val[:, 0], val[:, 1])
    m_mu, m_sd = m_val.mean(), m_val.std() or 1.0
    a_mu, a_sd = a_val.mean(), a_val.std() or 1.0
    n_pos = len(split.pos_val)

    def combined(w: float, m: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (m - m_mu) / m_sd + w * (a - a_mu) / a_sd

    def val_hits(w: float) -> float:
        fused = combined(w, m_val, a_val)
        return hits_at_k(fused[:n_pos], fused[n_pos:], 20)

    w = max(FUSION_WEIGHTS, key=val_hits)
    return (lambda src, dst: combined(w, model(src, dst), aa(src, dst))), w
