"""LightGCN (He et al., SIGIR 2020) on a store's co-purchase graph: the GNN baseline of
`bench real-ranking`.

Products are the nodes; every pair u -> v bought at the snapshot is an interaction, the graph
made undirected and symmetrically normalised, as LightGCN's user-item graph is (PyG's
``LightGCN``: no features, no non-linearity, the layers' embeddings averaged). A product's
embedding is both its source and its target side, so the score of u -> v equals v -> u: its
direction is 0.5 by construction, which is what a graph model without direction gives.

Training: BPR with one uniform negative per positive pair and L2 of the embeddings used
(``recommendation_loss``), Adam, ``BATCH`` pairs a step, one propagation a step. A seeded
``VALIDATION_PAIRS`` of the pairs is held out of the graph and of the loss; their Hits@20
ranked against every product is measured every ``EVAL_EVERY`` steps and the best embeddings
kept (early stopping, ``PATIENCE`` evaluations). The settings are the paper's (64 dimensions,
3 layers, L2 1e-4) with a learning rate for large batches; nothing is tuned per store, and
BLADE in the same bench is not tuned either.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from torch_geometric.nn.models import LightGCN

from nextbuy.domain.served_ranking import ranks_by

EMBEDDING_DIM = 64
LAYERS = 3
LEARNING_RATE = 0.01
L2 = 1e-4
BATCH = 1 << 16
MAX_STEPS = 200
EVAL_EVERY = 10
PATIENCE = 4  # evaluations without a better validation Hits@20
VALIDATION_PAIRS = 2_000
VALIDATION_K = 20


def normalised_adjacency(src: np.ndarray, dst: np.ndarray, n: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the undirected graph of the pairs (duplicates merged), as CSR."""
    a = np.concatenate([src, dst]).astype(np.int64)
    b = np.concatenate([dst, src]).astype(np.int64)
    keys = np.unique(a * n + b)
    row, col = keys // n, keys % n
    degree = np.bincount(row, minlength=n).astype(np.float64)
    inv = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0)
    values = torch.as_tensor(inv[row] * inv[col], dtype=torch.float32)
    crow = torch.as_tensor(np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n))]), dtype=torch.int64)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": its products work
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, torch.as_tensor(col), values, (n, n))


def validation_hits(embedding: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """Hits@VALIDATION_K of v among every product but u, for source u, ranked as every method
    of the bench is ranked (``served_ranking.ranks_by``: ties count half)."""
    ranks = ranks_by(lambda su, _: embedding[su] @ embedding.T, u, v, len(embedding))
    return float((ranks <= VALIDATION_K).mean())


def fit(src: np.ndarray, dst: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Embeddings [n, EMBEDDING_DIM] of the products, from pairs u -> v (the counted edges)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pairs = np.unique(np.asarray(src, np.int64) * n + np.asarray(dst, np.int64))
    pairs = pairs[pairs // n != pairs % n]
    rng = np.random.default_rng(seed)
    held = rng.permutation(len(pairs))[: min(VALIDATION_PAIRS, len(pairs) // 10)]
    keep = np.ones(len(pairs), dtype=bool)
    keep[held] = False
    train = torch.as_tensor(np.stack([pairs[keep] // n, pairs[keep] % n]))
    val_u, val_v = pairs[held] // n, pairs[held] % n
    adj = normalised_adjacency(pairs[keep] // n, pairs[keep] % n, n)
    model = LightGCN(n, EMBEDDING_DIM, LAYERS, normalize=False)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    best, best_embedding, stale, started = -1.0, None, 0, time.perf_counter()
    for step in range(1, MAX_STEPS + 1):
        model.train()
        pick = torch.randint(0, train.shape[1], (min(BATCH, train.shape[1]),), generator=gen)
        u, v = train[0, pick], train[1, pick]
        negative = torch.randint(0, n, (len(pick),), generator=gen)
        embedding = model.get_embedding(adj)
        pos = (embedding[u] * embedding[v]).sum(-1)
        neg = (embedding[u] * embedding[negative]).sum(-1)
        nodes = torch.cat([u, v, negative]).unique()
        loss = model.recommendation_loss(pos, neg, node_id=nodes, lambda_reg=L2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % EVAL_EVERY and step != MAX_STEPS:
            continue
        model.eval()
        with torch.no_grad():
            embedding = model.get_embedding(adj)
            hits = validation_hits(embedding.numpy(), val_u, val_v) if len(val_u) else 0.0
        seconds = time.perf_counter() - started
        print(
            f"lightgcn step {step}: validation Hits@{VALIDATION_K} {hits:.4f} ({seconds:.0f} s)", flush=True
        )
        if hits > best:
            best, best_embedding, stale = hits, embedding.clone(), 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    assert best_embedding is not None
    return best_embedding.numpy().astype(np.float32)
