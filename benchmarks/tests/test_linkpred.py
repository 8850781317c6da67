"""`nextbuy bench linkpred` end to end on a small synthetic directed graph (PPNP-style .npz):
the JSON a user scripts against, the scoring contract (test split only through ``evaluate``,
once per method and seed), BLADE learning link and direction, ``blade_fixed`` reusing BLADE's
config, and the search-space helpers.  Budgets are shrunk with monkeypatch so it runs in seconds."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from nextbuy_lab import linkpred
from nextbuy_lab import linkpred_models as models
from nextbuy_lab import linkpred_split as lp
from nextbuy_lab.linkpred_data import load_graph

KEYS = ("blade", "blade_fixed", "dual_mf", "gcn")
STRUCTURED = ("dual_mf",)  # a baseline given BLADE's pair-structure head (the cheapest here)
SEEDS = 2
N_COMMUNITIES, PER_COMMUNITY, VOCAB = 4, 60, 120


def shrink_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two configs per method and short early-stopped training (``linkpred.BUDGET``: worker
    processes are handed the same)."""
    monkeypatch.setattr(models, "N_CONFIGS", 2)
    monkeypatch.setattr(models, "MAX_EPOCHS", 60)
    monkeypatch.setattr(models, "BLADE_MAX_EPOCHS", 60)
    monkeypatch.setattr(models, "EVAL_EVERY", 5)
    monkeypatch.setattr(models, "PATIENCE", 3)


@pytest.fixture
def small_budget(monkeypatch):
    shrink_budget(monkeypatch)


def community_graph(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Communities of a citation-like DAG: 80% of a node's 1-6 out-edges cite an older node of its
    own community (older ones more often), 20% one of the ten oldest of the next community; so
    edges are one-way.  Bag-of-words rows: 8 words of the community's vocabulary plus 4 random."""
    rng = np.random.default_rng(seed)
    n = N_COMMUNITIES * PER_COMMUNITY
    community = np.repeat(np.arange(N_COMMUNITIES), PER_COMMUNITY)
    src, dst = [], []
    for u in range(n):
        c = community[u]
        older = np.flatnonzero((community == c) & (np.arange(n) < u))
        following = np.flatnonzero(community == (c + 1) % N_COMMUNITIES)[:10]
        for _ in range(int(rng.integers(1, 7))):
            if len(older) and rng.random() < 0.8:
                w = 1.0 / (1.0 + older - older[0])
                v = rng.choice(older, p=w / w.sum())
            else:
                v = rng.choice(following)
            src.append(u)
            dst.append(int(v))
    adj = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    adj.data[:] = 1.0
    rows, cols = [], []
    width = VOCAB // N_COMMUNITIES
    for u in range(n):
        c = community[u]
        own = rng.choice(np.arange(c * width, (c + 1) * width), 8, replace=False)
        words = np.unique(np.r_[own, rng.choice(VOCAB, 4, replace=False)])
        rows += [u] * len(words)
        cols += words.tolist()
    attr = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, VOCAB))
    return adj, attr


def save_ppnp(path: Path, adj: sp.csr_matrix, attr: sp.csr_matrix) -> Path:
    arrays = {}
    for prefix, m in (("adj_matrix", adj), ("attr_matrix", attr)):
        arrays.update({f"{prefix}.data": m.data, f"{prefix}.indices": m.indices})
        arrays.update({f"{prefix}.indptr": m.indptr, f"{prefix}.shape": np.array(m.shape)})
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def graph_npz(tmp_path_factory) -> Path:
    return save_ppnp(tmp_path_factory.mktemp("graph") / "communities.npz", *community_graph())


def test_graph_is_what_the_tests_assume(graph_npz):
    g = load_graph(graph_npz)
    assert g.n_nodes == N_COMMUNITIES * PER_COMMUNITY  # one weakly connected component
    assert g.features is not None
    assert g.features.shape == (g.n_nodes, VOCAB)
    one_way = lp.reverse_free_mask(g.edges, g.edges, g.n_nodes)
    assert one_way.all()


@pytest.fixture(scope="module")
def spied_run(tmp_path_factory, graph_npz):
    """One ``linkpred.run`` (shared by the tests below) with spies: every ``evaluate`` call, every
    ``tune``/``refit`` call, and every score function guarded so that scoring a test pair outside
    ``evaluate`` is recorded."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        shrink_budget(monkeypatch)
        return _spied_run(tmp_path_factory.mktemp("run"), graph_npz, monkeypatch)


def _spied_run(tmp_path: Path, graph_npz: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    calls = {"evaluate": 0, "tune": [], "refit": [], "leaks": 0, "splits": []}
    inside = {"evaluate": False}

    def guard(score, split):
        test_pairs = lp.edge_keys(np.vstack([split.pos_test, split.neg_test]), split.n_nodes)

        def guarded(src, dst):
            if not inside["evaluate"]:
                calls["leaks"] += int(lp.has_edge(test_pairs, src, dst, split.n_nodes).sum())
            return score(src, dst)

        return guarded

    def guarded_fit(fitted, split):
        embedding = None if fitted.embedding is None else guard(fitted.embedding, split)
        return dataclasses.replace(fitted, score=guard(fitted.score, split), embedding=embedding)

    make_split, evaluate = lp.make_split, linkpred.evaluate
    tune, refit, adamic_adar = models.tune, models.refit, models.adamic_adar

    def spy_make_split(*args, **kwargs):
        calls["splits"].append(make_split(*args, **kwargs))
        return calls["splits"][-1]

    def spy_evaluate(score, split, full_edges):
        # one of the splits made (one per seed), its test pairs intact, its validation pool enlarged
        made = [m for m in calls["splits"] if np.array_equal(split.pos_test, m.pos_test)]
        assert len(made) == 1
        assert np.array_equal(split.neg_test, made[0].neg_test)
        assert len(split.neg_val) == len(made[0].neg_val) + models.VALIDATION_POOL
        calls["evaluate"] += 1
        inside["evaluate"] = True
        try:
            return evaluate(score, split, full_edges)
        finally:
            inside["evaluate"] = False

    def spy_tune(key, split, features, seed):
        fitted = tune(key, split, features, seed)
        calls["tune"].append((key, seed, dict(fitted.config)))
        return guarded_fit(fitted, split)

    def spy_refit(key, split, features, config, seed):
        calls["refit"].append((key, seed, dict(config)))
        return guarded_fit(refit(key, split, features, config, seed), split)

    monkeypatch.setattr(lp, "make_split", spy_make_split)
    monkeypatch.setattr(linkpred, "evaluate", spy_evaluate)
    monkeypatch.setattr(models, "tune", spy_tune)
    monkeypatch.setattr(models, "refit", spy_refit)
    monkeypatch.setattr(models, "adamic_adar", lambda split: guarded_fit(adamic_adar(split), split))
    pair_structure = models.pair_structure
    monkeypatch.setattr(models, "pair_structure", lambda *a: guarded_fit(pair_structure(*a), a[0]))
    monkeypatch.setattr(linkpred, "STRUCTURED_BASELINES", STRUCTURED)
    out, printed = tmp_path / "bench-linkpred.json", io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = linkpred.run(out, graph=graph_npz, split=None, seeds=SEEDS, keys=KEYS)
    return {"out": out, "returned": returned, "calls": calls, "printed": printed.getvalue()}


def test_json_has_every_method_and_metric(spied_run):
    figures = json.loads(spied_run["out"].read_text())
    blades = ("blade_embedding", "blade_fixed_embedding")  # BLADE without its pair-structure head
    heads = ("pair_structure", *(f"{k}+ps" for k in STRUCTURED))  # the head alone, and on a baseline
    expected = {"adamic_adar", *KEYS, *(f"{k}+aa" for k in KEYS), *blades, *heads}
    assert set(figures) == expected
    for key, row in figures.items():
        assert set(row) == {*linkpred.METRICS, "std", "seeds"}, key
        assert set(row["std"]) == set(linkpred.METRICS), key
        assert row["seeds"] == SEEDS
        for m in linkpred.METRICS:
            assert row[m] is not None, (key, m)
            assert row["std"][m] is not None, (key, m)
            assert row["std"][m] >= 0.0
            if m in ("epoch_s", "train_s"):
                assert row[m] >= 0.0
            else:
                assert 0.0 <= row[m] <= 1.0, (key, m, row[m])
    assert figures["adamic_adar"]["epoch_s"] == 0.0
    # what run returns is what it wrote
    assert json.loads(json.dumps(spied_run["returned"])) == figures


def test_undirected_scores_have_direction_auc_one_half(spied_run):
    figures = json.loads(spied_run["out"].read_text())
    for key in ("adamic_adar", "gcn", "gcn+aa"):
        assert figures[key]["direction_auc"] == 0.5, key
        assert figures[key]["std"]["direction_auc"] == 0.0, key


def test_blade_learns_links_and_their_direction(spied_run):
    figures = json.loads(spied_run["out"].read_text())
    blade = figures["blade"]
    assert blade["auc"] > 0.65, blade
    assert blade["hits@20"] > 0.2, blade
    assert blade["direction_auc"] > 0.6, blade  # all edges of the graph are one-way
    assert figures["dual_mf"]["direction_auc"] > 0.6  # source/target roles without a GNN too


def test_test_split_is_scored_only_by_evaluate_once_per_method_and_seed(spied_run):
    calls = spied_run["calls"]
    assert len(calls["splits"]) == SEEDS  # no fixed split: one random split per seed
    # per seed: Adamic-Adar and the head alone, then each method and its +aa fusion, BLADE's two
    # without the head and the structured baselines with it
    assert calls["evaluate"] == SEEDS * (2 + 2 * len(KEYS) + 2 + len(STRUCTURED))
    assert calls["leaks"] == 0  # fusion weights etc. are chosen on validation pairs only


def test_tuned_once_then_refit_and_blade_fixed_takes_blades_config(spied_run):
    calls = spied_run["calls"]
    tuned = {key: (seed, config) for key, seed, config in calls["tune"]}
    assert [key for key, _, _ in calls["tune"]] == [k for k in KEYS if k != "blade_fixed"]
    assert {seed for seed, _ in tuned.values()} == {0}  # tuning uses the first seed only
    refits = sorted((key, seed) for key, seed, _ in calls["refit"])
    expected = sorted([("blade_fixed", 0)] + [(k, s) for s in range(1, SEEDS) for k in KEYS])
    assert refits == expected
    for key, _, config in calls["refit"]:
        source = "blade" if key == "blade_fixed" else key
        assert config == tuned[source][1], key
    printed = spied_run["printed"]
    assert "blade: chosen on validation" in printed
    assert "blade_fixed: chosen" not in printed


def test_blade_space_draws_distinct_configs_starting_with_the_default():
    space = models.blade_space()
    assert len(space) == models.N_CONFIGS
    assert space[0] == {**models.BLADE_DEFAULT, "id_embeddings": True}
    assert len({tuple(sorted(c.items())) for c in space}) == len(space)
    for cfg in space[1:]:
        assert set(cfg) == set(models.BLADE_SPACE) | {"id_embeddings"}
        assert all(cfg[k] in values for k, values in models.BLADE_SPACE.items())
    # every drawn config is raced with and without id embeddings: the graph answers that question
    without_ids = [{k: v for k, v in cfg.items() if k != "id_embeddings"} for cfg in space]
    for cfg in without_ids:
        ids = {c["id_embeddings"] for c, rest in zip(space, without_ids, strict=True) if rest == cfg}
        assert ids == {True, False}
    assert models.blade_space() == space  # drawn once, with a fixed seed
    configs = models.search_space()
    assert len(configs) == models.N_CONFIGS
    assert len(set(configs)) == len(configs)
    assert configs[0] == models.Config()


@pytest.mark.parametrize("key", ["blade", "dual_mf"])
def test_refit_accepts_a_chosen_config_with_its_epochs(key, graph_npz, small_budget):
    g = load_graph(graph_npz)
    split = lp.make_split(g.edges, g.n_nodes, seed=0)
    base = dict(models.BLADE_DEFAULT) if key == "blade" else dataclasses.asdict(models.Config())
    fitted = models.refit(key, split, g.features, {**base, "epochs": 3}, seed=1)
    assert {k: v for k, v in fitted.config.items() if k != "epochs"} == base
    assert 1 <= fitted.config["epochs"] <= 60  # its own early-stopped count, not the 3 passed in
    scores = fitted.score(*split.pos_test.T)
    assert scores.shape == (len(split.pos_test),)
    assert np.isfinite(scores).all()
    assert fitted.train_s >= fitted.epoch_s >= 0.0


def test_paired_gaps_against_blade_are_written_beside_the_json(spied_run):
    figures = json.loads(spied_run["out"].read_text())
    gaps = json.loads(spied_run["out"].with_suffix(".paired.json").read_text())
    assert set(gaps) == set(linkpred.PAIRED)
    for metric, per_method in gaps.items():
        assert set(per_method) == set(figures) - {"blade"}
        for key, gap in per_method.items():
            low, high = gap["ci95"]
            assert low <= gap["mean"] <= high, (metric, key)
            # the mean of per-seed differences is the difference of the means
            assert gap["mean"] == pytest.approx(figures["blade"][metric] - figures[key][metric], abs=1e-9)
    assert "paired Hits@20 gap" in spied_run["printed"]


def test_each_seeds_rows_are_written_beside_the_json_and_average_to_it(spied_run):
    figures = json.loads(spied_run["out"].read_text())
    written = json.loads(spied_run["out"].with_suffix(".per_seed.json").read_text())
    per_seed = written["seeds"]
    assert len(per_seed) == SEEDS
    # the kernel set the figures came from, since rows from other kernels do not pair
    assert written["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    for key, row in figures.items():
        for metric in linkpred.METRICS:
            mean = np.mean([seed_rows[key][metric] for seed_rows in per_seed])
            assert row[metric] == pytest.approx(mean, abs=1e-9), (key, metric)


def test_validation_pool_adds_unlabelled_non_edges_and_asks_for_the_tests_quantile():
    split = lp.make_split(_ring_edges(200), 200, seed=0)
    pooled = models.with_validation_pool(split, size=500)
    assert len(pooled.neg_val) == len(split.neg_val) + 500
    assert np.array_equal(pooled.neg_val[: len(split.neg_val)], split.neg_val)
    labelled = np.vstack([split.observed, split.pos_val, split.neg_val, split.pos_test, split.neg_test])
    extra = pooled.neg_val[len(split.neg_val) :]
    assert not lp.has_edge(lp.edge_keys(labelled, 200), *extra.T, 200).any()
    assert len(np.unique(lp.edge_keys(extra, 200))) == 500
    assert np.array_equal(models.with_validation_pool(split, size=500).neg_val, pooled.neg_val)  # one draw
    for part in ("observed", "pos_val", "pos_test", "neg_test"):
        assert np.array_equal(getattr(pooled, part), getattr(split, part))
    # K follows the pool: against 10x the test's negatives, Hits@200 is the test's Hits@20
    neg_test = len(split.neg_test)
    neg = np.arange(10 * neg_test, dtype=float)
    pos = np.array([neg[-200] + 0.5, neg[-201] + 0.5])  # above the 200th highest; above the 201st only
    assert models.validation_hits(pos, neg, split) == 0.5


def _ring_edges(n: int) -> np.ndarray:
    """A directed ring with chords: enough edges for a split of ``n`` nodes."""
    u = np.arange(n)
    return np.vstack([np.c_[u, (u + 1) % n], np.c_[u, (u + 7) % n]])


def test_pair_structure_head_is_fitted_on_the_validation_pool_and_weighs_an_informative_score():
    split = models.with_validation_pool(lp.make_split(_ring_edges(200), 200, seed=0), size=2_000)
    val_keys = lp.edge_keys(np.vstack([split.pos_val, split.neg_val]), 200)
    positives = lp.edge_keys(np.vstack([split.pos_val, split.pos_test]), 200)
    seen = []

    def informative(src, dst):  # knows the held-out positives, as a good embedding would
        seen.append(lp.edge_keys(np.c_[src, dst], 200))
        return lp.has_edge(positives, src, dst, 200).astype(float)

    head = models.stacked_score(split, None, informative)
    assert all(np.isin(keys, val_keys).all() for keys in seen)  # fitted on validation pairs only
    pos, neg = head(*split.pos_test.T), head(*split.neg_test.T)
    assert pos.min() > neg.max()  # the score it was given separates test pairs it never saw
    # without a model: the structure alone (a ring's chords make 2-paths), still a ranking
    alone = models.pair_structure(split, None).score
    assert lp.auc_ap(alone(*split.pos_test.T), alone(*split.neg_test.T))[0] > 0.6


def _random_graph_split() -> lp.LinkSplit:
    """A split of a random 200-node graph (its structure says little) with a validation pool."""
    rng = np.random.default_rng(0)
    edges = np.unique(rng.integers(0, 200, (1_200, 2)), axis=0)
    split = lp.make_split(edges[edges[:, 0] != edges[:, 1]], 200, seed=0)
    return models.with_validation_pool(split, size=2_000)


def test_head_validation_rewards_a_score_that_adds_to_the_structure_on_pairs_the_head_did_not_see():
    split = _random_graph_split()
    judge = models.head_validation(split, None)
    n_pos, n_neg = len(split.pos_val), len(split.neg_val)
    noise = np.random.default_rng(1)
    oracle = judge(np.ones(n_pos), np.zeros(n_neg))
    useless = judge(noise.normal(size=n_pos), noise.normal(size=n_neg))
    assert oracle == 1.0 > useless  # every held-out positive above every negative, the head unseen
    assert judge(np.ones(n_pos), np.zeros(n_neg)) == oracle  # fixed halvings: a deterministic judge


def test_head_validation_averaged_over_halvings_depends_less_on_the_draw_of_halvings():
    split = _random_graph_split()
    noise = np.random.default_rng(2)  # a weakly informative score: the halving matters
    pos, neg = noise.normal(0.7, 1.0, len(split.pos_val)), noise.normal(size=len(split.neg_val))

    def spread(halvings: int) -> float:
        judges = [models.head_validation(split, None, seed, halvings) for seed in range(8)]
        return float(np.std([judge(pos, neg) for judge in judges]))

    assert spread(8) < 0.6 * spread(1)  # ~1/sqrt(8) in theory
    with pytest.raises(ValueError, match="halvings"):
        models.head_validation(split, None, halvings=0)


def test_validation_pool_of_a_small_graph_takes_half_its_unlabelled_pairs():
    split = lp.make_split(_ring_edges(30), 30, seed=0)
    labelled = np.vstack([split.observed, split.pos_val, split.neg_val, split.pos_test, split.neg_test])
    free = 30 * 29 - len(np.unique(lp.edge_keys(labelled, 30)))
    pooled = models.with_validation_pool(split, size=10_000)
    assert len(pooled.neg_val) == len(split.neg_val) + free // 2


def test_workers_in_processes_score_what_this_process_scores(tmp_path, graph_npz, small_budget):
    """``workers=2``: tasks run in spawned processes, under this process's budget; seed 1 refit
    here with the config the run chose scores what its worker scored."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        figures = linkpred.run(
            tmp_path / "b.json", graph=graph_npz, split=None, seeds=2, keys=("dual_mf",), workers=2
        )
    assert figures["dual_mf"]["seeds"] == 2
    assert {"dual_mf", "dual_mf+aa", "adamic_adar"} <= set(figures)
    lines = printed.getvalue().splitlines()
    config = ast.literal_eval(
        next(x for x in lines if x.startswith("dual_mf: chosen")).split("validation ", 1)[1]
    )
    worker_hits = float(re.search(r"seed 1 dual_mf: ([0-9.]+)", printed.getvalue()).group(1))
    graph = load_graph(graph_npz)
    split = models.with_validation_pool(lp.make_split(graph.edges, graph.n_nodes, 1))
    rows, _ = linkpred._method_rows(graph, split, 1, "dual_mf", config)
    assert rows["dual_mf"]["hits@20"] == pytest.approx(worker_hits, abs=0.02)


class _Curve:
    """A fake run whose best validation after ``e`` epochs is ``curve(e)``; it records its budgets."""

    def __init__(self, curve, cap: int = 100) -> None:
        self.curve, self.cap, self.epochs, self.budgets = curve, cap, 0, []

    def advance(self, until=None) -> bool:
        self.budgets.append(until)
        self.epochs = self.cap if until is None else min(until, self.cap)
        return self.epochs >= self.cap

    @property
    def best(self) -> float:
        return self.curve(self.epochs)


def test_successive_halving_keeps_the_better_half_at_each_rung(monkeypatch):
    monkeypatch.setattr(models, "RUNGS", (10, 30))
    monkeypatch.setattr(models, "HALVING", 2)
    # run 0 starts slow and ends best, run 5 starts best and ends mid-table: the rungs judge what
    # they see, and the survivors race to the end
    curves = [lambda e, i=i: i / 10 + e / 100 for i in range(8)]
    curves[0] = lambda e: 0.0 if e <= 10 else 5.0
    curves[5] = lambda e: 1.0 if e <= 30 else 0.2
    runs = [_Curve(c) for c in curves]
    winner = models.successive_halving(runs)
    # rung 10: the best 4 of 8 are 5, 7, 6, 4; rung 30: 5 and 7 go on; at the end 7 beats 5
    assert winner == 7
    assert [r.budgets for r in runs] == [
        [10], [10], [10], [10], [10, 30], [10, 30, None], [10, 30], [10, 30, None]
    ]  # fmt: skip


def test_successive_halving_keeps_the_better_third_with_the_benchs_eta(monkeypatch):
    monkeypatch.setattr(models, "RUNGS", (10, 30))
    assert models.HALVING == 3
    curves = [lambda e, i=i: i / 10 + e / 100 for i in range(8)]
    curves[5] = lambda e: 2.0 if e <= 30 else 0.2  # best at both rungs, then falls behind
    runs = [_Curve(c) for c in curves]
    # rung 10: the best 3 of 8 are 5, 7, 6; rung 30: 5 alone trains on and wins
    assert models.successive_halving(runs) == 5
    assert [r.budgets for r in runs] == [[10]] * 5 + [[10, 30, None], [10, 30], [10, 30]]


def test_successive_halving_breaks_ties_towards_the_earlier_config(monkeypatch):
    monkeypatch.setattr(models, "RUNGS", (10,))
    monkeypatch.setattr(models, "HALVING", 2)
    runs = [_Curve(lambda e: 0.5) for _ in range(3)]
    assert models.successive_halving(runs) == 0
    assert [r.budgets for r in runs] == [[10, None], [10, None], [10]]


def test_a_baseline_run_paused_between_budgets_scores_as_one_run(graph_npz, small_budget):
    """Dropout draws from torch's global stream: each run keeps its own, so advancing another run
    in between changes nothing."""
    g = load_graph(graph_npz)
    split = lp.make_split(g.edges, g.n_nodes, seed=0)
    cfg = models.Config(dropout=0.5, hidden=16, decoder="mlp")
    whole, best = models.fit_one("gcn", split, g.features, cfg, seed=3)
    paused = models.BaselineRun("gcn", split, g.features, cfg, seed=3)
    other = models.BaselineRun("gcn", split, g.features, dataclasses.replace(cfg, lr=0.005), seed=4)
    assert not paused.advance(10)
    other.advance(20)
    paused.advance()
    fitted = paused.finish()
    assert paused.best == best
    assert fitted.config == whole.config
    assert np.array_equal(fitted.score(*split.pos_test.T), whole.score(*split.pos_test.T))


def test_workers_get_tunings_first_then_the_longest_refit():
    fit_s = {"blade": 50.0, "dirgnn": 180.0, "sage": 20.0}
    tasks = [(1, "sage", {}), (0, "gcn", None), (2, "dirgnn", {}), (3, "blade_fixed", {}), (0, "sage", None)]
    order = sorted(tasks, key=lambda t: linkpred._dispatch_order(t, fit_s), reverse=True)
    # the tunings keep their order (a stable sort); the ablation costs what BLADE's fit cost
    assert [(seed, key) for seed, key, _ in order] == [
        (0, "gcn"), (0, "sage"), (2, "dirgnn"), (3, "blade_fixed"), (1, "sage")
    ]  # fmt: skip


def test_averaged_scores_are_the_mean_of_each_members_standardised_score():
    split = lp.make_split(random_edges(), 40, seed=0)
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 40))
    members = [lambda s, d: table[s, d], lambda s, d: 100.0 * table[d, s] + 7.0]  # unlike scales
    mean = models.averaged(members, split)
    src, dst = split.pos_test.T
    z = [(f(src, dst) - f(*split.neg_val.T).mean()) / f(*split.neg_val.T).std() for f in members]
    np.testing.assert_allclose(mean(src, dst), (z[0] + z[1]) / 2)
    # a member's raw scale does not matter: rescaling it leaves the mean as it was
    rescaled = models.averaged([members[0], lambda s, d: 0.01 * members[1](s, d) - 3.0], split)
    np.testing.assert_allclose(rescaled(src, dst), mean(src, dst))


def random_edges() -> np.ndarray:
    """A random directed graph on 40 nodes with 200 edges (no self-loops)."""
    rng = np.random.default_rng(1)
    pairs = {(int(u), int(v)) for u, v in rng.integers(0, 40, size=(400, 2)) if u != v}
    return np.array(sorted(pairs)[:200], dtype=np.int64)


@pytest.mark.parametrize("key", ["blade", "dual_mf"])
def test_a_seed_ensemble_trains_its_members_with_other_seeds_and_scores_their_mean(
    key, graph_npz, small_budget, monkeypatch
):
    g = load_graph(graph_npz)
    split = models.with_validation_pool(lp.make_split(g.edges, g.n_nodes, seed=0))
    base = dict(models.BLADE_DEFAULT) if key == "blade" else dataclasses.asdict(models.Config())
    first = models.refit(key, split, g.features, base, seed=0)
    fits, made, fit_without_head = [], [], models._fit_without_head

    def spy(key, split, features, config, seed):
        fits.append(seed)
        made.append(fit_without_head(key, split, features, config, seed))
        return made[-1]

    monkeypatch.setattr(models, "_fit_without_head", spy)

    assert models.ensemble(key, first, split, g.features, 0, members=1) is first
    ens = models.ensemble(key, first, split, g.features, seed=0, members=3)
    assert fits == [models.MEMBER_SEED_STRIDE, 2 * models.MEMBER_SEED_STRIDE]  # other seeds, not 1 or 2
    assert ens.train_s >= first.train_s + sum(f.train_s for f in made)  # the members' sum (+ the head)
    assert ens.config == first.config  # refits of other seeds take the chosen config as it was
    raw = [first.embedding if first.embedding is not None else first.score, *(f.score for f in made)]
    mean = models.averaged(raw, split)
    src, dst = split.pos_test.T
    if key == "blade":  # the pair-structure head is fitted once, on the members' mean
        assert ens.embedding is not None
        np.testing.assert_allclose(ens.embedding(src, dst), mean(src, dst))
        assert not np.allclose(ens.score(src, dst), mean(src, dst))
    else:
        np.testing.assert_allclose(ens.score(src, dst), mean(src, dst))
    with pytest.raises(ValueError, match="members"):
        models.ensemble(key, first, split, g.features, 0, members=0)


def test_run_with_members_ensembles_every_trained_method_and_says_so(
    tmp_path, graph_npz, small_budget, monkeypatch
):
    asked, ensemble = [], models.ensemble

    def spy(key, first, split, features, seed, members):
        asked.append((key, seed, members))
        return ensemble(key, first, split, features, seed, members)

    monkeypatch.setattr(models, "ensemble", spy)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        figures = linkpred.run(tmp_path / "b.json", graph=graph_npz, split=None, seeds=2, keys=("dual_mf",),
                               members=2)  # fmt: skip
    assert sorted(asked) == [("dual_mf", 0, 2), ("dual_mf", 1, 2)]  # every seed's fit, tuned or refit
    assert "2-member seed ensembles" in printed.getvalue()
    assert figures["dual_mf"]["seeds"] == 2
    assert json.loads((tmp_path / "b.per_seed.json").read_text())["members"] == 2
