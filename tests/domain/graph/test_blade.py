"""BLADE dual-embedding GNN: direction is learned, conversions are learned, moments are right."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nextbuy.domain.graph.blade import (
    Architecture,
    DirectedGraph,
    TrainingSchedule,
    export_moments,
    link_scores,
    pair_logit_moments,
    score_and_uncertainty,
    train_blade,
)

N_CAT = 12


SHIFTS = (1, 3)  # category c complements c+1 and c+3 (mod N_CAT): one-way, never c-1 / c-3

# Small and fast; the rest as in params.yaml (the domain takes plain hyperparameters, no TrainConfig).
ARCH = Architecture(
    embedding_dim=16,
    hidden_dim=16,
    fanout_min=4,
    fanout_max=20,
    two_hop_degree=5,
    dropout=0.2,
    cold_start_fallback=True,
)
SCHEDULE = TrainingSchedule(
    epochs=1,
    batch_size=256,
    lr=0.01,
    weight_decay=1e-5,
    link_loss_weight=1.0,
    reverse_negative_share=0.5,
    seed=0,
)
EXPORT = dict(mc_samples=6, chunk=8192, seed=0)


def _train(graph, *conversions, progress=False, **schedule):
    """train_blade with ARCH and SCHEDULE, ``schedule`` changed."""
    return train_blade(
        graph, *conversions, architecture=ARCH, schedule=replace(SCHEDULE, **schedule), progress=progress
    )


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties count half."""
    scores = np.concatenate([pos, neg])
    ranks = np.empty(scores.size)
    order = np.argsort(scores, kind="stable")
    ranks[order] = np.arange(1, scores.size + 1)
    # average ranks of ties
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _store(n: int = 500, seed: int = 0):
    """Products in categories; edges only along one-way complement relations c -> c+1, c+3."""
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, N_CAT, n)
    deg = np.minimum(rng.zipf(1.8, n), 60)  # heavy tail: many degree-1 products, a few hubs
    src = np.repeat(np.arange(n), deg)
    tc = (cat[src] + rng.choice(SHIFTS, size=src.size)) % N_CAT
    popularity = 1.0 / rng.permutation(np.arange(1, n + 1))  # Zipf: some products are bought after many
    dst = np.empty_like(src)
    for c in range(N_CAT):
        members = np.flatnonzero(cat == c)
        sel = tc == c
        dst[sel] = rng.choice(members, sel.sum(), p=popularity[members] / popularity[members].sum())
    edges = np.unique(np.stack([src, dst], axis=1), axis=0)
    log_price = rng.normal(3.0, 1.0, n).astype(np.float32)
    log_price[rng.random(n) < 0.1] = np.nan
    return cat, edges, log_price


def _graph(n: int, edges: np.ndarray, cat: np.ndarray, log_price: np.ndarray) -> DirectedGraph:
    return DirectedGraph(
        n_nodes=n,
        src=torch.as_tensor(edges[:, 0]),
        dst=torch.as_tensor(edges[:, 1]),
        category=torch.as_tensor(cat),
        log_price=torch.as_tensor(log_price),
    )


def _no_conversions():
    z = torch.zeros(0, dtype=torch.long)
    return z, z, torch.zeros(0), torch.zeros(0)


@pytest.fixture(scope="module")
def link_only():
    """A link-only model trained on 80% of the edges of a small directed store."""
    n = 500
    cat, edges, log_price = _store(n, seed=0)
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(edges))
    n_train = int(0.8 * len(edges))
    train, held_out = edges[perm[:n_train]], edges[perm[n_train:]]
    graph = _graph(n, train, cat, log_price)
    model, history = _train(graph, *_no_conversions(), epochs=12)
    moments = export_moments(model, graph, **EXPORT)
    return dict(
        n=n, graph=graph, train=train, held_out=held_out, model=model, history=history, moments=moments
    )


def test_link_only_training_reports_per_epoch_losses(link_only):
    history = link_only["history"]
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert all(set(h) == {"epoch", "conv_loss", "link_loss"} for h in history)
    assert all(np.isnan(h["conv_loss"]) for h in history)  # no conversion examples
    assert history[-1]["link_loss"] < history[0]["link_loss"] < np.log(2) + 0.05


def test_held_out_edges_beat_their_reverses_and_random_pairs(link_only):
    m, held = link_only["moments"], link_only["held_out"]
    u, v = held[:, 0], held[:, 1]
    forward = link_scores(m, u, v)
    reverse = link_scores(m, v, u)
    rng = np.random.default_rng(2)
    random = link_scores(m, u, rng.integers(0, link_only["n"], u.size))
    assert _auc(forward, reverse) > 0.75
    assert _auc(forward, random) > 0.7
    np.testing.assert_allclose(
        forward, np.einsum("ij,ij->i", m["s_mean"][u], m["t_mean"][v]), rtol=1e-5, atol=1e-5
    )


def test_export_moments_shapes_dtypes_and_determinism(link_only):
    m, n, d = link_only["moments"], link_only["n"], ARCH.embedding_dim
    for key in ("s_mean", "s_var", "t_mean", "t_var"):
        assert m[key].shape == (n, d) and m[key].dtype == np.float32
        assert np.isfinite(m[key]).all()
    assert (m["s_var"] >= 0).all() and (m["t_var"] >= 0).all()
    assert m["head_w"].shape == (d,) and m["head_w"].dtype == np.float32
    assert m["head_b"].shape == (1,) and m["head_b"].dtype == np.float32
    again = export_moments(link_only["model"], link_only["graph"], **EXPORT)
    for key in m:
        np.testing.assert_array_equal(m[key], again[key])
    # chunking is only a memory bound: a small chunk gives the same means within MC noise
    small = export_moments(link_only["model"], link_only["graph"], **dict(EXPORT, chunk=37))
    assert small["s_mean"].shape == (n, d)
    assert np.corrcoef(small["s_mean"].ravel(), m["s_mean"].ravel())[0, 1] > 0.95


def test_low_degree_nodes_carry_more_variance_than_hubs(link_only):
    m, train, n = link_only["moments"], link_only["train"], link_only["n"]
    out_deg = np.bincount(train[:, 0], minlength=n)
    in_deg = np.bincount(train[:, 1], minlength=n)
    s_var, t_var = m["s_var"].mean(axis=1), m["t_var"].mean(axis=1)
    low, high = (out_deg >= 1) & (out_deg <= 2), out_deg >= 15
    assert low.sum() > 20 and high.sum() > 5
    assert s_var[low].mean() > 1.5 * s_var[high].mean()
    low, high = (in_deg >= 1) & (in_deg <= 2), in_deg >= 15
    assert low.sum() > 20 and high.sum() > 5
    assert t_var[low].mean() > 1.5 * t_var[high].mean()


def test_training_is_deterministic_for_a_seed():
    n = 120
    cat, edges, log_price = _store(n, seed=5)
    graph = _graph(n, edges, cat, log_price)
    m1, h1 = _train(graph, *_no_conversions(), seed=3)
    m2, h2 = _train(graph, *_no_conversions(), seed=3)
    m3, _ = _train(graph, *_no_conversions(), seed=4)
    np.testing.assert_equal(h1, h2)  # NaN conv_loss compares equal here
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=False):
        assert torch.equal(a, b), k
    assert not torch.equal(m1.id_emb.weight, m3.id_emb.weight)


def _conversions(cat: np.ndarray, n_examples: int, seed: int):
    """Impressions (u, v): half shown a complement of u's category. Converts mostly on complements."""
    rng = np.random.default_rng(seed)
    n = cat.size
    u = rng.integers(0, n, n_examples)
    v = rng.integers(0, n, n_examples)
    comp = rng.random(n_examples) < 0.5
    by_cat = [np.flatnonzero(cat == c) for c in range(N_CAT)]
    tc = (cat[u] + rng.choice(SHIFTS, size=n_examples)) % N_CAT
    for c in range(N_CAT):
        sel = comp & (tc == c)
        v[sel] = rng.choice(by_cat[c], sel.sum())
    is_comp = np.isin((cat[v] - cat[u]) % N_CAT, SHIFTS)
    p = np.where(is_comp, 0.6, 0.05)
    y = (rng.random(n_examples) < p).astype(np.float32)
    return u, v, y


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_conversion_head_learns_a_hidden_pairwise_rule():
    n = 300
    cat, edges, log_price = _store(n, seed=3)
    graph = _graph(n, edges, cat, log_price)
    u, v, y = _conversions(cat, 6000, seed=4)
    tu, tv, ty = _conversions(cat, 3000, seed=5)
    examples = (torch.as_tensor(u), torch.as_tensor(v), torch.as_tensor(y), torch.ones(len(y)))
    model, history = _train(graph, *examples, epochs=3)
    assert history[-1]["conv_loss"] < history[0]["conv_loss"]
    moments = export_moments(model, graph, **EXPORT)
    score, unc = score_and_uncertainty(moments, tu, tv)
    constant = np.full(ty.size, y.mean())
    assert _log_loss(score, ty) < _log_loss(constant, ty) - 0.05
    assert ((score > 0) & (score < 1)).all() and (unc >= 0).all()


def test_zero_weight_examples_do_not_influence_training():
    n = 150
    cat, edges, log_price = _store(n, seed=6)
    graph = _graph(n, edges, cat, log_price)
    u, v, y = _conversions(cat, 1500, seed=7)
    w = np.ones(y.size, dtype=np.float32)
    ignored = np.random.default_rng(8).random(y.size) < 0.3
    w[ignored] = 0.0
    flipped = y.copy()
    flipped[ignored] = 1.0 - flipped[ignored]
    args = (graph, torch.as_tensor(u), torch.as_tensor(v))
    m_a, h_a = _train(*args, torch.as_tensor(y), torch.as_tensor(w))
    m_b, h_b = _train(*args, torch.as_tensor(flipped), torch.as_tensor(w))
    assert h_a == h_b
    for a, b in zip(m_a.parameters(), m_b.parameters(), strict=False):
        assert torch.equal(a, b)
    # ...whereas giving the flipped subset weight changes the model
    m_c, _ = _train(*args, torch.as_tensor(flipped), torch.ones(y.size))
    assert not torch.equal(m_a.head_w, m_c.head_w)


def test_progress_bar_can_be_shown(capsys):
    n = 60
    cat, edges, log_price = _store(n, seed=10)
    _, history = _train(_graph(n, edges, cat, log_price), *_no_conversions(), progress=True)
    assert len(history) == 1 and np.isfinite(history[0]["link_loss"])
    assert "blade epoch" in capsys.readouterr().err


def test_train_blade_rejects_bad_inputs():
    n = 60
    cat, edges, log_price = _store(n, seed=9)
    graph = _graph(n, edges, cat, log_price)
    one = torch.tensor([0])
    with pytest.raises(ValueError):
        _train(graph, one, torch.tensor([1, 2]), torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        _train(graph, one, torch.tensor([n]), torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        _train(graph, one, one, torch.tensor([1.0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError):
        DirectedGraph(
            n, torch.tensor([0]), torch.tensor([n]), torch.as_tensor(cat), torch.as_tensor(log_price)
        )
    with pytest.raises(ValueError):
        replace(ARCH, fanout_min=ARCH.fanout_max + 1)


def _random_moments(n: int, d: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "s_mean": rng.normal(0, 0.5, (n, d)).astype(np.float32),
        "t_mean": rng.normal(0, 0.5, (n, d)).astype(np.float32),
        "s_var": rng.uniform(0, 0.2, (n, d)).astype(np.float32),
        "t_var": rng.uniform(0, 0.2, (n, d)).astype(np.float32),
        "head_w": rng.normal(0, 1, d).astype(np.float32),
        "head_b": np.array([-0.7], dtype=np.float32),
    }


def test_pair_logit_moments_match_monte_carlo_on_gaussian_embeddings():
    n, d, draws = 6, 8, 200_000
    m = _random_moments(n, d, seed=0)
    src, dst = np.array([0, 1, 2, 3, 5, 4]), np.array([1, 0, 2, 5, 3, 4])
    mean, var = pair_logit_moments(m, src, dst)
    rng = np.random.default_rng(1)
    for i, (u, v) in enumerate(zip(src, dst, strict=False)):
        s = m["s_mean"][u] + np.sqrt(m["s_var"][u]) * rng.standard_normal((draws, d))
        t = m["t_mean"][v] + np.sqrt(m["t_var"][v]) * rng.standard_normal(
            (draws, d)
        )  # independent, even if u == v
        logit = (s * t) @ m["head_w"] + m["head_b"][0]
        assert mean[i] == pytest.approx(logit.mean(), abs=4 * logit.std() / np.sqrt(draws) + 1e-4)
        assert var[i] == pytest.approx(logit.var(), rel=0.03)


def test_pair_logit_moments_is_exact_across_chunk_boundaries():
    n, d, m_pairs = 50, 4, 140_000  # more pairs than one internal chunk
    m = _random_moments(n, d, seed=2)
    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, n, m_pairs), rng.integers(0, n, m_pairs)
    mean, var = pair_logit_moments(m, src, dst)
    assert mean.shape == var.shape == (m_pairs,)
    s, sv, t, tv = (m[k].astype(np.float64) for k in ("s_mean", "s_var", "t_mean", "t_var"))
    w = m["head_w"].astype(np.float64)
    exp_mean = (s[src] * t[dst]) @ w + m["head_b"][0]
    exp_var = (s[src] ** 2 * tv[dst] + t[dst] ** 2 * sv[src] + sv[src] * tv[dst]) @ (w**2)
    np.testing.assert_allclose(mean, exp_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, exp_var, rtol=1e-4, atol=1e-6)
    assert pair_logit_moments(m, src[:0], dst[:0])[0].shape == (0,)
    with pytest.raises(ValueError):
        pair_logit_moments(m, np.array([n]), np.array([0]))


def test_score_is_a_probability_shrunk_towards_half_by_uncertainty():
    m = _random_moments(40, 8, seed=4)
    rng = np.random.default_rng(5)
    src, dst = rng.integers(0, 40, 2000), rng.integers(0, 40, 2000)
    score, unc = score_and_uncertainty(m, src, dst)
    mean, var = pair_logit_moments(m, src, dst)
    assert score.shape == unc.shape == (2000,)
    assert ((score > 0) & (score < 1)).all() and (unc >= 0).all()
    np.testing.assert_allclose(unc, np.sqrt(var), rtol=1e-6)
    plain = 1 / (1 + np.exp(-mean.astype(np.float64)))
    assert (np.abs(score - 0.5) <= np.abs(plain - 0.5) + 1e-9).all()
    # no variance -> plain sigmoid; extreme logits stay strictly inside (0, 1)
    sure = dict(m, s_var=np.zeros_like(m["s_var"]), t_var=np.zeros_like(m["t_var"]))
    s0, u0 = score_and_uncertainty(sure, src, dst)
    np.testing.assert_allclose(s0, plain, rtol=1e-5)
    assert (u0 == 0).all()
    huge = dict(sure, head_b=np.array([1e4], dtype=np.float32))
    s_hi, _ = score_and_uncertainty(huge, src[:5], dst[:5])
    assert (s_hi < 1).all()
