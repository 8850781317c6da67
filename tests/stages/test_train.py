"""train stage core: deterministic, importance weighting uses the delay-corrected weights, early
stopping holds out a seeded share of the training rows, and the model never sees the truth."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from nextbuy.config import IngestConfig, LabelDelayConfig, TrainConfig
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain.delay import DelayFamily
from nextbuy.domain.graph.blade import Architecture, TrainingSchedule
from nextbuy.mlops import io
from nextbuy.stages import ingest, label_delay, train
from tests.helpers import config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core box spinning OpenMP workers
    make fit ~10x slower.  fit also switches torch to deterministic algorithms: switch back after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_same_inputs_same_embeddings(tiny_params):
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, _ = label_delay.weigh(
        data.impressions,
        data.snapshot,
        LabelDelayConfig.model_validate(tiny_params["label_delay"]),
        data.products,
        data.edges,
    )
    cfg = TrainConfig.model_validate(tiny_params["train"])
    _, a, history = train.fit(
        train.build_graph(data.products, data.edges), weighted, cfg, delay_family="lognormal", progress=False
    )
    _, b, again = train.fit(
        train.build_graph(data.products, data.edges), weighted, cfg, delay_family="lognormal", progress=False
    )
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_equal(history, again)
    # early stopping may end each round (the first, then cfg.em_rounds EM steps) before cfg.epochs
    assert 1 <= len(history) <= cfg.epochs * (cfg.em_rounds + 1)
    assert np.isfinite(history[-1]["conv_loss"])
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    if cfg.validation_share > 0:  # held-out rows drive early stopping
        assert all(np.isfinite(h["validation"]) for h in history if h["epoch"] % cfg.eval_every == 0)
    assert a["s_mean"].shape == (len(data.products), cfg.embedding_dim)


@pytest.mark.parametrize("estimator", ["ensemble", "mc_dropout", "sampler"])
def test_every_uncertainty_estimator_exports_moments(tiny_params, estimator):
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, LabelDelayConfig.model_validate(tiny_params["label_delay"])
    )
    cfg = TrainConfig.model_validate({**tiny_params["train"], "uncertainty": estimator, "epochs": 1})
    _, moments, _ = train.fit(
        train.build_graph(data.products, data.edges), weighted, cfg, delay_family="lognormal", progress=False
    )
    for key in ("s_mean", "s_var", "t_mean", "t_var"):
        assert moments[key].shape == (len(data.products), cfg.embedding_dim)
        assert np.isfinite(moments[key]).all()
    assert (moments["s_var"] > 0).mean() > 0.5
    assert (moments["t_var"] > 0).mean() > 0.5
    if estimator == "ensemble":  # members' heads are folded into their target vectors
        assert (moments["head_w"] == 1).all()


def test_weighting_choice_selects_the_weight_column():
    rows = pd.DataFrame({f"weight_{m}": [float(i), 1.0] for i, m in enumerate(WEIGHTING_METHODS)})
    for i, method in enumerate(WEIGHTING_METHODS):
        np.testing.assert_array_equal(train.conversion_weights(rows, method), [float(i), 1.0])


def test_the_model_and_its_schedule_carry_every_model_knob_of_the_train_section():
    cfg = config(
        "train",
        embedding_dim=24,
        n_layers=3,
        fanout_rule="fixed",
        fanout_min=3,
        fanout_max=17,
        dropout=0.1,
        cold_start_fallback=False,
        neighbour_history=False,
        epochs=7,
        batch_size=99,
        lr=0.02,
        warmup_steps=3,
        weight_decay=0.01,
        id_weight_decay=0.02,
        link_loss_weight=0.3,
        n_negatives=2,
        reverse_penalty=0.4,
        supervision_share=0.25,
        eval_every=2,
        patience=5,
        mc_samples=5,
        export_chunk=99,
        seed=11,
    )
    architecture, schedule = Architecture.from_config(cfg), TrainingSchedule.from_config(cfg)
    for name, value in {**asdict(architecture), **asdict(schedule)}.items():
        assert value == getattr(cfg, name), name
    used = set(asdict(architecture)) | set(asdict(schedule)) | {"mc_samples", "export_chunk"}
    # The rest pick the training data (in train_rounds) and the uncertainty estimator (in fit).
    data_and_estimator = {"weighting", "em_rounds", "shuffle_labels", "validation_share"}
    estimator = {"uncertainty", "ensemble_members", "ensemble_epochs"}
    processes = {"distributed", "distributed_backend"}  # how many processes train it (in run)
    assert set(TrainConfig.model_fields) - used == data_and_estimator | estimator | processes


def _weighted(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "row": np.arange(n),
            "split": rng.choice(["train", "calib", "test"], n, p=[0.6, 0.25, 0.15]),
            "source_id": rng.integers(0, 50, n),
            "shown_id": rng.integers(0, 50, n),
            "label": (rng.random(n) < 0.2).astype(float),
            "p_flip": rng.uniform(0.0, 0.5, n),
            **{f"weight_{m}": np.ones(n) for m in WEIGHTING_METHODS},
            "weight_importance_ipw": rng.uniform(0.5, 2.0, n),
        }
    )
    label, p_flip = frame["label"], frame["p_flip"].where(frame["label"] == 0, 0.0)  # as label_delay writes
    soft = label + (1 - label) * p_flip
    targets = {f"target_{m}": soft if m.startswith("importance") and m != "importance_ipw" else label
               for m in WEIGHTING_METHODS}  # fmt: skip
    return frame.assign(p_flip=p_flip, **targets)


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_training_rows_hold_out_a_seeded_share_of_the_training_rows(share):
    weighted = _weighted()
    is_train = weighted["split"] == "train"
    fit, held = train.training_rows(weighted, config("train", validation_share=share, seed=3))
    # a partition of the training rows, nothing from other splits
    assert set(fit["row"]).isdisjoint(held["row"])
    assert sorted([*fit["row"], *held["row"]]) == weighted.loc[is_train, "row"].tolist()
    assert len(held) / is_train.sum() == pytest.approx(share, abs=0.03)
    # the same seed draws the same rows; another seed other rows
    fit2, held2 = train.training_rows(weighted, config("train", validation_share=share, seed=3))
    pd.testing.assert_frame_equal(fit, fit2)
    pd.testing.assert_frame_equal(held, held2)
    _, other = train.training_rows(weighted, config("train", validation_share=share, seed=4))
    assert set(other["row"]) != set(held["row"])
    # rows are kept whole (targets and weights stay with their pairs); the label is the target
    whole = weighted.loc[fit.index]
    pd.testing.assert_frame_equal(fit, whole.assign(label=whole["target_importance"]))


def test_training_rows_without_a_validation_share_keep_every_training_row():
    weighted = _weighted()
    fit, held = train.training_rows(weighted, config("train", validation_share=0.0))
    assert held.empty
    whole = weighted[weighted["split"] == "train"]
    pd.testing.assert_frame_equal(fit, whole.assign(label=whole["target_importance"]))
    assert train.conversion_validation(held, "importance", chunk=64) is None


def test_shuffled_labels_are_permuted_with_their_weights_but_not_their_pairs():
    weighted = _weighted()
    cfg = config("train", shuffle_labels=True, validation_share=0.2, seed=5)
    fit, held = train.training_rows(weighted, cfg)
    rows = pd.concat([fit, held]).sort_values("row")
    original = weighted.loc[rows.index]
    pd.testing.assert_frame_equal(
        rows[["source_id", "shown_id", "split"]], original[["source_id", "shown_id", "split"]]
    )
    for col in ("target_importance_ipw", "weight_importance_ipw", "target_importance"):
        assert sorted(rows[col]) == sorted(original[col])
    assert sorted(rows["label"]) == sorted(original["target_importance"])  # what importance trains on
    assert not np.array_equal(rows["label"].to_numpy(), original["target_importance"].to_numpy())
    # a label keeps its own weights and targets when permuted
    kept = ["target_importance_ipw", "weight_importance_ipw", "target_importance", "p_flip"]
    assert sorted(map(tuple, rows[kept].to_numpy())) == sorted(map(tuple, original[kept].to_numpy()))
    again = train.training_rows(weighted, cfg)
    pd.testing.assert_frame_equal(fit, again[0])


def test_each_method_trains_toward_its_own_target():
    weighted = _weighted()
    for method in ("importance", "naive", "importance_ipw"):
        fit, held = train.training_rows(weighted, config("train", weighting=method, seed=3))
        rows = pd.concat([fit, held])
        np.testing.assert_array_equal(rows["label"], weighted.loc[rows.index, f"target_{method}"])
        np.testing.assert_array_equal(
            train.conversion_weights(rows, method), weighted.loc[rows.index, f"weight_{method}"]
        )
    soft = pd.concat(train.training_rows(weighted, config("train", weighting="importance", seed=3)))
    assert ((soft["label"] > 0) & (soft["label"] < 1)).any()  # a negative that may flip: soft
    # the gate drill permutes the targets with their rows: the soft labels are the same multiset
    drill = config("train", weighting="importance", shuffle_labels=True, seed=3)
    shuffled = pd.concat(train.training_rows(weighted, drill))
    assert sorted(shuffled["label"]) == pytest.approx(
        sorted(weighted.loc[shuffled.index, "target_importance"])
    )


def _products(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    products = pd.DataFrame(
        {
            "product_id": np.arange(n),
            "category": rng.integers(0, 5, n),
            "price": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(1, 100, n)),
        }
    )
    edges = pd.DataFrame({"src": rng.integers(0, n, 120), "dst": rng.integers(0, n, 120)})
    return products, edges


def test_build_graph_sees_only_ids_categories_prices_and_edges():
    products, edges = _products()
    graph = train.build_graph(products, edges)  # nothing but product_id / category / price
    rng = np.random.default_rng(1)
    leaky = products.assign(
        product_key=[f"p{i}" for i in rng.permutation(len(products))],
        true_complement=rng.integers(0, 5, len(products)),
        true_quality=rng.normal(size=len(products)),
    )[["true_quality", "price", "product_key", "category", "true_complement", "product_id"]]
    other = train.build_graph(leaky, edges)
    assert torch.equal(graph.features.to_dense(), other.features.to_dense())
    assert torch.equal(graph.group, other.group)
    assert torch.equal(graph.src, other.src)
    assert torch.equal(graph.dst, other.dst)
    assert graph.n_nodes == other.n_nodes == len(products)
    # what it does see: the category one-hots (also the cold-start groups) and the edges
    assert graph.n_features == 5 + 4
    assert graph.group.tolist() == products["category"].tolist()
    assert graph.src.tolist() == edges["src"].tolist()
    assert graph.dst.tolist() == edges["dst"].tolist()
    x = graph.features.to_dense()
    assert x[torch.arange(len(products)), graph.group].eq(1.0).all()


def test_build_graph_appends_the_row_normalised_source_features():
    import scipy.sparse as sp

    products, edges = _products()
    store = train.build_graph(products, edges)
    words = sp.random(len(products), 6, density=0.3, format="csr", random_state=0, dtype=np.float32)
    graph = train.build_graph(products, edges, extra_features=words)
    assert graph.n_features == store.n_features + 6
    x = graph.features.to_dense()
    assert torch.equal(x[:, : store.n_features], store.features.to_dense())
    extra = x[:, store.n_features :]
    has_words = torch.as_tensor(words.getnnz(axis=1) > 0)
    torch.testing.assert_close(extra.sum(dim=1)[has_words], torch.ones(int(has_words.sum())))
    # no columns: the store's features alone; the wrong number of rows: refused
    empty = train.build_graph(products, edges, extra_features=sp.csr_matrix((len(products), 0)))
    assert torch.equal(empty.features.to_dense(), store.features.to_dense())
    with pytest.raises(io.DataError, match="feature row"):
        train.build_graph(products, edges, extra_features=words[:-1])


def test_conversion_validation_is_minus_the_weighted_log_loss_of_the_conversion_head():
    from nextbuy.domain.graph.blade import BladeModel, embed

    products, edges = _products()
    graph = train.build_graph(products, edges)
    architecture = Architecture.from_config(config("train", embedding_dim=8, n_layers=1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BladeModel.for_graph(graph, architecture).eval()
    rows = _weighted(200, seed=2).assign(
        source_id=lambda f: f["source_id"] % 40, shown_id=lambda f: f["shown_id"] % 40
    )
    validate = train.conversion_validation(rows, "importance", chunk=16)
    s, t = embed(model, graph, chunk=16)
    logit = (
        model.conversion_logit(s[rows["source_id"].to_numpy()], t[rows["shown_id"].to_numpy()])
        .detach()
        .numpy()
    )
    p = 1 / (1 + np.exp(-logit.astype(np.float64)))
    y, w = rows["label"].to_numpy(), rows["weight_importance"].to_numpy()
    expected = (w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum()
    assert validate(model, graph) == pytest.approx(expected, rel=1e-4)
    # zero-weight rows do not count; no weight at all: no validation
    extra = rows.assign(weight_importance=0.0, label=1.0 - rows["label"])
    both = train.conversion_validation(pd.concat([rows, extra]), "importance", chunk=16)
    assert both(model, graph) == pytest.approx(expected, rel=1e-4)
    assert train.conversion_validation(extra, "importance", chunk=16) is None


@pytest.fixture(scope="module")
def tiny_weighted():
    from tests.conftest import TINY_PARAMS

    data = ingest.ingest(IngestConfig.model_validate(TINY_PARAMS["ingest"]))
    weighted, models = label_delay.weigh(
        data.impressions, data.snapshot, LabelDelayConfig.model_validate(TINY_PARAMS["label_delay"]),
        data.products, data.edges,
    )  # fmt: skip
    return data, weighted, models["importance"].family


@pytest.mark.parametrize(("weighting", "em_rounds"), [("importance", 1), ("importance", 0), ("naive", 1)])
def test_every_method_trains_the_same_rounds_and_the_importance_ones_refit_their_targets(
    tiny_weighted, tiny_params, monkeypatch, weighting, em_rounds
):
    """A round after the first continues from the trained weights (a warm restart, which helps by
    itself); before it, only the methods whose delay model sees pair features take the EM step."""
    data, weighted, family = tiny_weighted
    steps = []
    em_targets = train.em_targets
    monkeypatch.setattr(train, "em_targets", lambda *a: steps.append(a[2]) or em_targets(*a))
    cfg = TrainConfig.model_validate(
        {**tiny_params["train"], "weighting": weighting, "em_rounds": em_rounds, "uncertainty": "mc_dropout"}
    )
    _, _, history = train.fit(
        train.build_graph(data.products, data.edges), weighted, cfg, delay_family=family, progress=False
    )
    assert {h["em_round"] for h in history} == set(range(em_rounds + 1))
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert steps == ([weighting] * em_rounds if weighting == "importance" else [])


def test_an_em_step_recomputes_only_the_methods_training_targets(tiny_weighted):
    """The delay model refitted with a score: the train split's targets of that method change,
    observed conversions stay 1, every other column and split is left as label_delay wrote it."""
    _, weighted, family = tiny_weighted
    train_rows = (weighted["split"] == "train").to_numpy()
    score = np.random.default_rng(0).normal(0.0, 1.0, int(train_rows.sum()))
    stepped = train.em_targets(weighted, score, "importance", DelayFamily(family))
    changed = stepped["target_importance"].to_numpy() != weighted["target_importance"].to_numpy()
    assert changed[train_rows].any()
    assert not changed[~train_rows].any()
    positive = weighted["label"].to_numpy() == 1
    assert (stepped["target_importance"].to_numpy()[positive] == 1.0).all()
    pd.testing.assert_frame_equal(
        stepped.drop(columns="target_importance"), weighted.drop(columns="target_importance")
    )


def test_the_progress_bar_names_each_training_phase():
    assert train.phase(False, "EM round 1/2") is False  # off stays off
    assert train.phase(True, "EM round 2/2") == "EM round 2/2"
    assert train.phase("member 3/4", "EM round 1/2") == "member 3/4 · EM round 1/2"
