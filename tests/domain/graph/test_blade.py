"""BLADE dual-embedding GNN: direction is learned, conversions are learned, moments are right."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from nextbuy.domain.graph.blade import (
    Architecture,
    BladeTraining,
    Conversions,
    DirectedGraph,
    TrainingSchedule,
    embed,
    ensemble_moments,
    export_moments,
    inverted_dropout,
    link_scores,
    pair_logit_moments,
    score_and_uncertainty,
    train_blade,
)
from nextbuy.domain.graph.features import store_features, to_torch

N_CAT = 12


SHIFTS = (1, 3)  # category c complements c+1 and c+3 (mod N_CAT): one-way, never c-1 / c-3

# Small and fast; the rest as in params.yaml (the domain takes plain hyperparameters, no TrainConfig).
ARCH = Architecture(
    embedding_dim=16,
    n_layers=2,
    fanout_rule="power_law",
    fanout_min=4,
    fanout_max=20,
    dropout=0.2,
    cold_start_fallback=True,
    id_embeddings=True,
)
SCHEDULE = TrainingSchedule(
    epochs=1,
    batch_size=256,
    lr=0.01,
    weight_decay=0.0,
    id_weight_decay=1e-4,
    link_loss_weight=1.0,
    n_negatives=5,
    reverse_penalty=1.0,
    supervision_share=0.5,
    eval_every=1,
    patience=3,
    seed=0,
    warmup_steps=0,
    neighbour_history=False,
    export_chunk=8192,
)
EXPORT = dict(mc_samples=6, chunk=8192, seed=0)


def _train(graph, *conversions, progress=False, validate=None, architecture=ARCH, **schedule):
    """train_blade with ARCH and SCHEDULE, ``schedule`` changed."""
    return train_blade(
        graph,
        Conversions(*conversions),
        architecture=architecture,
        schedule=replace(SCHEDULE, **schedule),
        validate=validate,
        progress=progress,
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
    """The store as the model sees it: edges, category one-hots + price + degree features, groups."""
    x = store_features(cat, np.exp(log_price.astype(np.float64)), edges[:, 0], edges[:, 1])
    return DirectedGraph(
        n_nodes=n,
        src=torch.as_tensor(edges[:, 0]),
        dst=torch.as_tensor(edges[:, 1]),
        features=to_torch(x),
        group=torch.as_tensor(cat),
    )


def _no_conversions():
    z = torch.zeros(0, dtype=torch.long)
    return z, z, torch.zeros(0), torch.zeros(0)


LINK_EPOCHS, LINK_BATCH = 25, 128


@pytest.fixture(scope="module")
def link_only():
    """A link-only model trained on 80% of the edges among 90% of a small directed store's products;
    the other 10% ("cold") have no edges at all in training."""
    n = 500
    cat, edges, log_price = _store(n, seed=0)
    rng = np.random.default_rng(1)
    cold = np.zeros(n, dtype=bool)
    cold[rng.choice(n, n // 10, replace=False)] = True
    touches_cold = cold[edges[:, 0]] | cold[edges[:, 1]]
    warm = edges[~touches_cold]
    perm = rng.permutation(len(warm))
    n_train = int(0.8 * len(warm))
    train, held_out = warm[perm[:n_train]], warm[perm[n_train:]]
    graph = _graph(n, train, cat, log_price)
    model, history = _train(graph, *_no_conversions(), epochs=LINK_EPOCHS, batch_size=LINK_BATCH)
    moments = export_moments(model, graph, **EXPORT)
    return dict(
        n=n,
        cat=cat,
        cold=np.flatnonzero(cold),
        graph=graph,
        train=train,
        held_out=held_out,
        model=model,
        history=history,
        moments=moments,
    )


def test_link_only_training_reports_per_epoch_losses(link_only):
    history = link_only["history"]
    assert [h["epoch"] for h in history] == list(range(1, LINK_EPOCHS + 1))
    assert all(set(h) == {"epoch", "conv_loss", "link_loss"} for h in history)  # no validation asked for
    assert all(np.isnan(h["conv_loss"]) for h in history)  # no conversion examples
    assert all(np.isfinite(h["link_loss"]) for h in history)
    assert history[-1]["link_loss"] < 0.6 * history[0]["link_loss"]


def test_held_out_edges_beat_their_reverses_and_random_pairs(link_only):
    m, held = link_only["moments"], link_only["held_out"]
    u, v = held[:, 0], held[:, 1]
    forward = link_scores(m, u, v)
    reverse = link_scores(m, v, u)
    rng = np.random.default_rng(2)
    random = link_scores(m, u, rng.integers(0, link_only["n"], u.size))
    assert _auc(forward, reverse) > 0.9
    assert _auc(forward, random) > 0.8
    np.testing.assert_allclose(
        forward, np.einsum("ij,ij->i", m["s_mean"][u], m["t_mean"][v]), rtol=1e-5, atol=1e-5
    )


def test_nodes_without_training_edges_are_scored_from_their_features_and_category(link_only):
    """A cold product has no edges and an untrained id vector: its features and its category's
    neighbourhoods must still point it at its complements, in both roles."""
    m, cat, cold, n = link_only["moments"], link_only["cat"], link_only["cold"], link_only["n"]
    rng = np.random.default_rng(3)
    by_cat = [np.flatnonzero(cat == c) for c in range(N_CAT)]
    u = np.repeat(cold, 20)
    shift = rng.choice(SHIFTS, u.size)
    complement = np.array([rng.choice(by_cat[c]) for c in (cat[u] + shift) % N_CAT])
    random = rng.integers(0, n, u.size)
    # cold product as the source: towards its complements rather than anywhere
    assert _auc(link_scores(m, u, complement), link_scores(m, u, random)) > 0.68
    # cold product as the destination: from the categories it complements
    before = np.array([rng.choice(by_cat[c]) for c in (cat[u] - shift) % N_CAT])
    assert _auc(link_scores(m, before, u), link_scores(m, random, u)) > 0.68


def test_export_moments_shapes_dtypes_and_determinism(link_only):
    m, n, d = link_only["moments"], link_only["n"], ARCH.embedding_dim
    for key in ("s_mean", "s_var", "t_mean", "t_var"):
        assert m[key].shape == (n, d)
        assert m[key].dtype == np.float32
        assert np.isfinite(m[key]).all()
    assert (m["s_var"] >= 0).all()
    assert (m["t_var"] >= 0).all()
    assert (m["s_var"] > 0).any()
    assert (m["t_var"] > 0).any()
    assert m["head_w"].shape == (d,)
    assert m["head_w"].dtype == np.float32
    assert m["head_b"].shape == (1,)
    assert m["head_b"].dtype == np.float32
    again = export_moments(link_only["model"], link_only["graph"], **EXPORT)
    for key in m:
        np.testing.assert_array_equal(m[key], again[key])
    # another seed draws other Monte-Carlo passes, but the means do not depend on them
    other = export_moments(link_only["model"], link_only["graph"], **dict(EXPORT, seed=1))
    np.testing.assert_array_equal(other["s_mean"], m["s_mean"])
    assert not np.array_equal(other["s_var"], m["s_var"])


def test_mc_dropout_spread_is_the_weights_alone_sampler_adds_neighbourhoods(link_only):
    """Without dropout MC dropout has nothing to vary (full neighbourhoods every pass), while the
    sampler ablation still scatters (resampled neighbourhoods): the two measure different things."""
    import copy

    model = copy.deepcopy(link_only["model"])
    model.dropout = 0.0
    graph = link_only["graph"]
    no_dropout = export_moments(model, graph, **EXPORT, estimator="mc_dropout")
    assert np.abs(no_dropout["s_var"]).max() < 1e-10
    assert np.abs(no_dropout["t_var"]).max() < 1e-10
    sampled = export_moments(model, graph, **EXPORT, estimator="sampler")
    assert sampled["s_var"].mean() > 1e-6
    with_dropout = export_moments(link_only["model"], graph, **EXPORT, estimator="mc_dropout")
    assert with_dropout["s_var"].mean() > 1e-6
    with pytest.raises(ValueError, match="unknown estimator"):
        export_moments(model, graph, **EXPORT, estimator="ensemble")


def test_ensemble_moments_fold_each_members_head_into_its_target_role(link_only):
    import copy

    model, graph = link_only["model"], link_only["graph"]
    twin = copy.deepcopy(model)
    moments = ensemble_moments([model, twin], graph, chunk=EXPORT["chunk"])
    # Identical members: no spread, and the folded head gives the member's own conversion logit.
    assert np.abs(moments["s_var"]).max() == 0
    assert np.abs(moments["t_var"]).max() == 0
    assert (moments["head_w"] == 1).all()
    s, t = embed(model, graph, chunk=EXPORT["chunk"])
    u, v = np.arange(0, 50), np.arange(50, 100)
    want = model.conversion_logit(s[u], t[v]).detach().numpy()
    mean, _var = pair_logit_moments(moments, u, v)
    np.testing.assert_allclose(mean, want, rtol=1e-5, atol=1e-5)
    # A member whose weights moved: the spread appears where they differ.
    with torch.no_grad():
        twin.id_emb.weight[:10] += 0.5
    spread = ensemble_moments([model, twin], graph, chunk=EXPORT["chunk"])
    assert spread["s_var"][:10].mean() > 10 * spread["s_var"][10:].mean()
    with pytest.raises(ValueError, match=">= 2 members"):
        ensemble_moments([model], graph, chunk=EXPORT["chunk"])


def test_exported_means_are_the_deterministic_embeddings(link_only):
    model, graph, m = link_only["model"], link_only["graph"], link_only["moments"]
    s, t = embed(model, graph, chunk=EXPORT["chunk"])
    np.testing.assert_array_equal(m["s_mean"], s.numpy())
    np.testing.assert_array_equal(m["t_mean"], t.numpy())
    s2, t2 = embed(model, graph, chunk=EXPORT["chunk"])
    assert torch.equal(s, s2)
    assert torch.equal(t, t2)
    # stochastic passes (sampled neighbourhoods, dropout) scatter around them
    g = torch.Generator().manual_seed(0)
    s3, _ = embed(model, graph, chunk=EXPORT["chunk"], generator=g, stochastic=True)
    assert not torch.equal(s, s3)
    assert np.corrcoef(s3.numpy().ravel(), s.numpy().ravel())[0, 1] > 0.8


def test_chunking_is_only_a_memory_bound_without_the_cold_start_fallback(link_only):
    model, graph = link_only["model"], replace(link_only["graph"], group=None)
    s, t = embed(model, graph, chunk=8192)
    s_small, t_small = embed(model, graph, chunk=37)
    torch.testing.assert_close(s_small, s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t_small, t, rtol=1e-5, atol=1e-5)


def test_chunking_is_only_a_memory_bound(link_only):
    model, graph = link_only["model"], link_only["graph"]
    s, t = embed(model, graph, chunk=8192)
    s_small, t_small = embed(model, graph, chunk=37)
    torch.testing.assert_close(s_small, s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t_small, t, rtol=1e-5, atol=1e-5)


def test_embedding_layer_by_layer_gives_the_per_seed_encoding(link_only):
    """``embed`` computes every node layer by layer (linear in the graph); the numbers are those of
    encoding each node's full 2-hop neighbourhood on its own."""
    model, graph = link_only["model"], link_only["graph"]
    index = model.index(graph)
    s, t = embed(model, graph, chunk=8192, index=index)
    seeds = torch.tensor([0, 7, 99, 250, 499])
    s_one, t_one = model.encode(index, graph.feature_rows, seeds, None, stochastic=False)
    torch.testing.assert_close(s[seeds], s_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t[seeds], t_one, rtol=1e-5, atol=1e-6)


def test_training_with_neighbour_history_learns_direction_and_is_seeded(link_only):
    """One sampled hop per step plus per-epoch neighbour states learns what sampling both hops does."""
    graph, held, n = link_only["graph"], link_only["held_out"], link_only["n"]
    runs = [
        _train(graph, *_no_conversions(), epochs=LINK_EPOCHS, batch_size=LINK_BATCH, neighbour_history=True)
        for _ in range(2)
    ]
    (model, history), (again, _) = runs
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert history[-1]["link_loss"] < 0.6 * history[0]["link_loss"]
    m = export_moments(model, graph, **EXPORT)
    u, v = held[:, 0], held[:, 1]
    random = np.random.default_rng(2).integers(0, n, u.size)
    assert _auc(link_scores(m, u, v), link_scores(m, v, u)) > 0.9
    assert _auc(link_scores(m, u, v), link_scores(m, u, random)) > 0.8


def test_a_history_step_encodes_one_hop_not_two(link_only, monkeypatch):
    """The cost that makes epochs linear: a step computes input states for the seeds and their
    sampled neighbours only, at most seeds x (1 + 2 x fanout_max) nodes, where sampling both hops
    reaches (nearly) the whole small graph."""
    model, graph = link_only["model"], link_only["graph"]
    index = model.index(graph)
    seeds = torch.arange(0, 500, 50)
    encoded: list[int] = []
    inputs = model.inputs
    monkeypatch.setattr(
        model, "inputs", lambda f, nodes, g, st: encoded.append(nodes.numel()) or inputs(f, nodes, g, st)
    )
    history = [torch.zeros(graph.n_nodes, 2 * ARCH.embedding_dim)]
    generator = torch.Generator().manual_seed(0)
    s, t = model.encode_with_history(index, graph.feature_rows, seeds, history, generator)
    model.encode(index, graph.feature_rows, seeds, generator, stochastic=True)
    one_hop, two_hops = encoded
    assert s.shape == t.shape == (seeds.numel(), ARCH.embedding_dim)
    assert one_hop <= seeds.numel() * (1 + 2 * ARCH.fanout_max)
    assert one_hop < 0.7 * two_hops
    assert history[0][seeds].abs().sum(dim=1).gt(0).all()  # the seeds' fresh states were written back
    assert history[0].abs().sum(dim=1).gt(0).sum() == seeds.numel()


def test_training_is_deterministic_for_a_seed():
    n = 120
    cat, edges, log_price = _store(n, seed=5)
    graph = _graph(n, edges, cat, log_price)
    m1, h1 = _train(graph, *_no_conversions(), seed=3)
    m2, h2 = _train(graph, *_no_conversions(), seed=3)
    m3, _ = _train(graph, *_no_conversions(), seed=4)
    np.testing.assert_equal(h1, h2)  # NaN conv_loss compares equal here
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not torch.equal(m1.id_emb.weight, m3.id_emb.weight)
    # the global torch RNG is neither used nor moved
    state = torch.random.get_rng_state()
    _train(graph, *_no_conversions(), seed=3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_the_learning_rate_ramps_linearly_over_the_warmup_then_holds(monkeypatch):
    """Both optimisers (the layers' Adam, the id table's SparseAdam) step at ``(i + 1) / w`` of the
    set rate for steps ``i < w``, then at the set rate; without a warm-up, at the set rate from the start."""
    n = 60
    cat, edges, log_price = _store(n, seed=2)
    graph = _graph(n, edges, cat, log_price)
    seen: list[tuple[float, float]] = []
    real_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        if isinstance(self, torch.optim.Adam):
            seen.append((self.param_groups[0]["lr"], float("nan")))
        return real_step(self, *args, **kwargs)

    real_sparse = torch.optim.SparseAdam.step

    def sparse_spy(self, *args, **kwargs):
        seen[-1] = (seen[-1][0], self.param_groups[0]["lr"])
        return real_sparse(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    monkeypatch.setattr(torch.optim.SparseAdam, "step", sparse_spy)
    _train(graph, *_no_conversions(), epochs=6, batch_size=16, lr=0.01, warmup_steps=4)
    assert len(seen) > 6  # several steps per epoch, so the warm-up spans part of the first epochs
    expected = [0.01 * min(1.0, (i + 1) / 4) for i in range(len(seen))]
    np.testing.assert_allclose([a for a, _ in seen], expected, rtol=1e-12)
    np.testing.assert_allclose([b for _, b in seen], expected, rtol=1e-12)
    seen.clear()
    _train(graph, *_no_conversions(), epochs=2, batch_size=16, lr=0.01, warmup_steps=0)
    assert seen
    assert all(a == b == 0.01 for a, b in seen)


def test_a_warmup_changes_the_first_steps_and_stays_seeded():
    n = 120
    cat, edges, log_price = _store(n, seed=5)
    graph = _graph(n, edges, cat, log_price)
    plain, _ = _train(graph, *_no_conversions(), seed=3)
    warm, h1 = _train(graph, *_no_conversions(), seed=3, warmup_steps=5)
    again, h2 = _train(graph, *_no_conversions(), seed=3, warmup_steps=5)
    np.testing.assert_equal(h1, h2)
    assert torch.equal(warm.layers[0].weight, again.layers[0].weight)
    assert not torch.equal(warm.layers[0].weight, plain.layers[0].weight)


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
    model, history = _train(graph, *examples, epochs=12)
    assert all(np.isfinite(h["conv_loss"]) and np.isfinite(h["link_loss"]) for h in history)
    assert history[-1]["conv_loss"] < history[0]["conv_loss"]
    moments = export_moments(model, graph, **EXPORT)
    score, unc = score_and_uncertainty(moments, tu, tv)
    constant = np.full(ty.size, y.mean())
    assert _log_loss(score, ty) < _log_loss(constant, ty) - 0.05
    assert ((score > 0) & (score < 1)).all()
    assert (unc >= 0).all()


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
    m_a, h_a = _train(*args, torch.as_tensor(y), torch.as_tensor(w), epochs=2)
    m_b, h_b = _train(*args, torch.as_tensor(flipped), torch.as_tensor(w), epochs=2)
    assert h_a == h_b
    for a, b in zip(m_a.parameters(), m_b.parameters(), strict=True):
        assert torch.equal(a, b)
    # ...whereas giving the flipped subset weight changes the model
    m_c, _ = _train(*args, torch.as_tensor(flipped), torch.ones(y.size), epochs=2)
    assert not torch.equal(m_a.head_w, m_c.head_w)


def _validation_split(n: int, seed: int):
    """A small store split into a training graph and held-out edges."""
    cat, edges, log_price = _store(n, seed=seed)
    perm = np.random.default_rng(seed + 100).permutation(len(edges))
    n_train = int(0.8 * len(edges))
    return _graph(n, edges[perm[:n_train]], cat, log_price), edges[perm[n_train:]]


def test_early_stopping_restores_the_best_checked_weights():
    graph, held = _validation_split(120, seed=11)
    u, v = torch.as_tensor(held[:, 0]), torch.as_tensor(held[:, 1])
    calls = []

    def worse_as_training_goes_on(model, g) -> float:
        """Minus the held-out direction AUC: a score that training drives down, so it peaks early."""
        assert not model.training
        assert g is graph
        calls.append(1)
        s, t = embed(model, g, chunk=64)
        forward, reverse = (s[u] * t[v]).sum(1).numpy(), (s[v] * t[u]).sum(1).numpy()
        return -_auc(forward, reverse)

    epochs, every, patience = 30, 2, 2
    model, history = _train(
        graph,
        *_no_conversions(),
        validate=worse_as_training_goes_on,
        epochs=epochs,
        eval_every=every,
        patience=patience,
    )
    assert len(history) < epochs
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    checked = [h for h in history if "validation" in h]
    assert [h["epoch"] for h in checked] == list(range(every, len(history) + 1, every))
    assert len(calls) == len(checked)
    scores = [h["validation"] for h in checked]
    best = max(scores)
    # it stopped after `patience` checks without a gain, and the model it returns is the best one
    assert scores.index(best) == len(scores) - 1 - patience
    assert all(s <= best for s in scores[-patience:])
    assert not model.training
    assert worse_as_training_goes_on(model, graph) == best
    # the validation callback does not change the training itself: without it, the same epochs
    # end at the last checked weights
    last, _ = _train(graph, *_no_conversions(), epochs=len(history))
    assert worse_as_training_goes_on(last, graph) == scores[-1]
    if scores[-1] < best:
        assert not torch.equal(last.id_emb.weight, model.id_emb.weight)


def test_a_training_paused_between_budgets_ends_where_one_run_ends():
    """Successive halving advances many runs in turns: pausing one (and training another meanwhile)
    changes nothing in it."""
    graph, held = _validation_split(120, seed=11)
    u, v = torch.as_tensor(held[:, 0]), torch.as_tensor(held[:, 1])

    def held_out_direction(model, g) -> float:
        s, t = embed(model, g, chunk=64)
        return _auc((s[u] * t[v]).sum(1).numpy(), (s[v] * t[u]).sum(1).numpy())

    schedule = replace(SCHEDULE, epochs=12, eval_every=2, patience=100)
    whole, history = _train(graph, *_no_conversions(), validate=held_out_direction, epochs=12,
                            eval_every=2, patience=100)  # fmt: skip
    paused = BladeTraining(graph, Conversions(*_no_conversions()), architecture=ARCH, schedule=schedule,
                           validate=held_out_direction)  # fmt: skip
    other = BladeTraining(
        graph, Conversions(*_no_conversions()), architecture=ARCH, schedule=replace(schedule, seed=9)
    )
    assert paused.best == -math.inf
    assert not paused.advance(4)
    other.advance(6)
    assert paused.best == max(h.get("validation", -math.inf) for h in paused.history) > -math.inf
    assert len(paused.history) == 4
    assert paused.advance(100)  # capped by the schedule's epochs: over
    model, paused_history = paused.finish()
    np.testing.assert_equal(paused_history, history)
    for (k, a), b in zip(whole.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not model.training


def test_validation_that_keeps_improving_runs_every_epoch():
    graph, _ = _validation_split(60, seed=12)
    ticks = iter(range(100))
    _model, history = _train(graph, *_no_conversions(), validate=lambda m, g: float(next(ticks)), epochs=4)
    assert [h["validation"] for h in history] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("share", [0.05, 0.95])
def test_link_only_training_works_for_any_supervision_share(share):
    n = 150
    cat, edges, log_price = _store(n, seed=13)
    graph = _graph(n, edges, cat, log_price)
    model, history = _train(graph, *_no_conversions(), supervision_share=share, epochs=4)
    assert all(np.isfinite(h["link_loss"]) and np.isnan(h["conv_loss"]) for h in history)
    s, t = embed(model, graph, chunk=64)
    assert torch.isfinite(s).all()
    assert torch.isfinite(t).all()


def test_a_tiny_graph_scores_at_least_one_edge_per_epoch():
    # 3 edges and a 1% share: most epochs would draw no supervision edge at all
    graph = DirectedGraph(4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.eye(4))
    _, history = _train(graph, *_no_conversions(), supervision_share=0.01, epochs=5)
    assert len(history) == 5
    assert all(np.isfinite(h["link_loss"]) for h in history)


def test_dense_and_sparse_features_are_the_same_graph():
    n = 60
    cat, edges, log_price = _store(n, seed=14)
    sparse = _graph(n, edges, cat, log_price)
    dense = replace(sparse, features=sparse.features.to_dense())
    assert dense.n_features == sparse.n_features == N_CAT + 4
    m_sparse, h_sparse = _train(sparse, *_no_conversions())
    m_dense, h_dense = _train(dense, *_no_conversions())
    np.testing.assert_equal(h_sparse, h_dense)
    for a, b in zip(m_sparse.parameters(), m_dense.parameters(), strict=True):
        assert torch.equal(a, b)
    # ids only (no features) trains as well
    _, history = _train(replace(sparse, features=None), *_no_conversions())
    assert np.isfinite(history[0]["link_loss"])


def test_zero_layers_is_a_model_of_features_and_ids_alone():
    n = 60
    cat, edges, log_price = _store(n, seed=15)
    graph = _graph(n, edges, cat, log_price)
    model, history = _train(graph, *_no_conversions(), architecture=replace(ARCH, n_layers=0), epochs=2)
    assert all(np.isfinite(h["link_loss"]) for h in history)
    s, t = embed(model, graph, chunk=64)
    s_alone, t_alone = embed(model, replace(graph, src=graph.src[:0], dst=graph.dst[:0]), chunk=64)
    assert torch.equal(s, s_alone)
    assert torch.equal(t, t_alone)


def test_without_id_embeddings_the_model_learns_from_features_and_neighbours_alone(link_only):
    """Off, the id table takes no part: scrambling it changes no embedding, and the model still
    learns direction from the features and the neighbourhoods."""
    architecture = replace(ARCH, id_embeddings=False)
    graph, held = link_only["graph"], link_only["held_out"]
    model, history = _train(
        graph, *_no_conversions(), architecture=architecture, epochs=LINK_EPOCHS, batch_size=LINK_BATCH
    )
    assert history[-1]["link_loss"] < 0.8 * history[0]["link_loss"]
    s, t = embed(model, graph, chunk=128)
    with torch.no_grad():
        model.id_emb.weight.normal_(generator=torch.Generator().manual_seed(5))
    s2, t2 = embed(model, graph, chunk=128)
    assert torch.equal(s, s2)
    assert torch.equal(t, t2)
    m = export_moments(model, graph, **EXPORT)
    u, v = held[:, 0], held[:, 1]
    assert _auc(link_scores(m, u, v), link_scores(m, v, u)) > 0.8


def test_without_id_embeddings_a_graph_needs_features():
    n = 60
    cat, edges, log_price = _store(n, seed=16)
    bare = replace(_graph(n, edges, cat, log_price), features=None)
    with pytest.raises(ValueError, match="needs node features"):
        _train(bare, *_no_conversions(), architecture=replace(ARCH, id_embeddings=False))


def test_progress_bar_can_be_shown(capsys):
    n = 60
    cat, edges, log_price = _store(n, seed=10)
    _, history = _train(_graph(n, edges, cat, log_price), *_no_conversions(), progress=True)
    assert len(history) == 1
    assert np.isfinite(history[0]["link_loss"])
    assert "blade epoch" in capsys.readouterr().err


def test_train_blade_rejects_bad_inputs():
    n = 60
    cat, edges, log_price = _store(n, seed=9)
    graph = _graph(n, edges, cat, log_price)
    one = torch.tensor([0])
    with pytest.raises(ValueError, match="same length"):
        _train(graph, one, torch.tensor([1, 2]), torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="conversion pairs must lie in"):
        _train(graph, one, torch.tensor([n]), torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="conversion weights must be finite"):
        _train(graph, one, one, torch.tensor([1.0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match=r"conversion labels must lie in \[0, 1\]"):
        _train(graph, one, one, torch.tensor([1.5]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="nothing to train on"):
        _train(replace(graph, src=graph.src[:0], dst=graph.dst[:0]), *_no_conversions())
    with pytest.raises(ValueError, match="edge endpoints must lie in"):
        DirectedGraph(n, torch.tensor([0]), torch.tensor([n]), graph.features)
    with pytest.raises(ValueError, match=r"features must be \[60, f\]"):
        DirectedGraph(n, torch.tensor([0]), torch.tensor([1]), torch.zeros(n - 1, 3))
    with pytest.raises(ValueError, match=r"features must be \[60, f\]"):
        DirectedGraph(n, torch.tensor([0]), torch.tensor([1]), graph.features.to_dense()[:-1])
    with pytest.raises(ValueError, match="group must have one entry per node"):
        DirectedGraph(n, torch.tensor([0]), torch.tensor([1]), None, group=torch.zeros(n + 1))
    with pytest.raises(ValueError, match="mc_samples must be >= 2"):
        export_moments(_train(graph, *_no_conversions())[0], graph, **dict(EXPORT, mc_samples=1))


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
    with pytest.raises(ValueError, match="node ids must lie in"):
        pair_logit_moments(m, np.array([n]), np.array([0]))


def test_score_is_a_probability_shrunk_towards_half_by_uncertainty():
    m = _random_moments(40, 8, seed=4)
    rng = np.random.default_rng(5)
    src, dst = rng.integers(0, 40, 2000), rng.integers(0, 40, 2000)
    score, unc = score_and_uncertainty(m, src, dst)
    mean, var = pair_logit_moments(m, src, dst)
    assert score.shape == unc.shape == (2000,)
    assert ((score > 0) & (score < 1)).all()
    assert (unc >= 0).all()
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


def test_inverted_dropout_drops_a_share_p_and_keeps_the_expectation():
    x = torch.ones(200, 500, requires_grad=True)
    y = inverted_dropout(x, 0.3, torch.Generator().manual_seed(0), active=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    assert abs(y.mean().item() - 1.0) < 0.02
    y.sum().backward()  # the gradient passes the kept entries only, scaled alike
    assert torch.equal(x.grad, y.detach())
    assert inverted_dropout(x, 0.3, None, active=False) is x
