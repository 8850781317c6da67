"""`nextbuy bench thresholds --graph PATH [--split DIR]`: per-bucket thresholds on a directed graph.

The same question as on the simulated store (:mod:`nextbuy_lab.thresholds`), asked of link
prediction: do thresholds per uncertainty bucket recall more test links than one threshold at
the same precision, out of sample?

Per seed, BLADE (the pipeline's model, link loss only, ``bench linkpred``'s default config
``BLADE_DEFAULT``, early-stopped on validation Hits@20) is trained on the split's observed
graph, and each uncertainty estimator is derived from it:

* ``ensemble``: ``members`` models, each continued ``MEMBER_EPOCHS`` link epochs from the
  trained one on a Poisson bootstrap of the observed edges with its own seed (as the
  pipeline's members: one starting point, so per-node moments), embedded on the whole graph;
* ``deep_ensemble``: the trained model and ``members - 1`` more trained from scratch on the
  whole observed graph, each with its own seed (a classic deep ensemble: independent
  initialisations, so the members' logits are averaged per pair, ``deep_ensemble.member_moments``);
* ``mc_dropout`` and ``sampler``: ``mc_samples`` stochastic passes (``blade.export_moments``).

A pair's link logit is ``s_u . t_v`` (a unit head); score ``sigmoid(mean / sqrt(1 + pi var / 8))``
and uncertainty ``sqrt(var)`` as the serving bundle computes them.

Cross-fitting over halves of the test pairs (positives and the split's negatives, each halved
at random per seed): the per-bucket calibration (params ``calibrate``) and the three policies
(params ``thresholds``) are fitted on one half and decide the other, then the other way round.
Recall and precision are over the pooled decisions of both judged halves, so every test pair
is judged once, by policies that never saw it. A target is feasible when both fits reach it.
Targets run from the fit half's positive rate r towards 1: ``r + (1 - r) f`` for f in
``TARGET_FRACTIONS``, the same rule for any graph.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from nextbuy.config import CalibrateConfig, ThresholdsConfig, TrainConfig, read_params, section_config
from nextbuy_lab import deep_ensemble
from nextbuy_lab import linkpred_models as models
from nextbuy_lab import linkpred_split as lp
from nextbuy_lab.linkpred_data import load_graph, load_split
from nextbuy_lab.threshold_policies import POLICIES, aggregate, policy_decisions

TARGET_FRACTIONS = (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95)  # of the way from the positive rate to 1
MEMBER_EPOCHS = 20  # link epochs each ensemble member continues from the trained model


def unit_head(moments: dict) -> dict:
    """``moments`` scored as a link model scores: logit ``s . t`` (head all ones, no bias)."""
    d = moments["s_mean"].shape[1]
    return {**moments, "head_w": np.ones(d, dtype=np.float32), "head_b": np.zeros(1, dtype=np.float32)}


def bootstrap(split: lp.LinkSplit, seed: int) -> lp.LinkSplit:
    """``split`` whose observed graph keeps the edges a Poisson(1) resample draws at least once."""
    keep = np.random.default_rng(seed).poisson(1.0, len(split.observed)) > 0
    return dataclasses.replace(split, observed=split.observed[keep])


def _with_unit_head(member):
    """``member`` scored as a link model: a link model's conversion head is untrained, and
    ``blade.ensemble_moments`` / ``member_moments`` fold heads into ``t``."""
    import torch

    with torch.no_grad():
        member.head_w.fill_(1.0)
        member.head_b.zero_()
    return member


def _members(model, split, features, seed: int, count: int):
    """Ensemble members, one at a time (a generator), each with a unit head."""
    for k in range(count):
        member_seed = seed * 7919 + k + 1
        yield _with_unit_head(models.link_blade(
            bootstrap(split, member_seed), features, member_seed, models.BLADE_DEFAULT,
            epochs=MEMBER_EPOCHS, initial=model, early_stopping=False,
        )[0])  # fmt: skip


def _independent_members(model, split, features, seed: int, count: int):
    """A copy of ``model`` and ``count - 1`` link models trained from scratch with their own seeds,
    one at a time, each with a unit head."""
    import copy

    yield _with_unit_head(copy.deepcopy(model))
    for k in range(1, count):
        yield _with_unit_head(
            models.link_blade(split, features, seed * 7919 + k + 1, models.BLADE_DEFAULT)[0]
        )


def link_estimators(split: lp.LinkSplit, features, seed: int, train_cfg) -> dict[str, dict]:
    """One trained link model; the per-node moments of each estimator derived from it."""
    from nextbuy.domain.graph import blade

    model, graph, _, _ = models.link_blade(split, features, seed, models.BLADE_DEFAULT)
    passes = {"mc_samples": train_cfg.mc_samples, "chunk": train_cfg.export_chunk, "seed": seed}
    members = _members(model, split, features, seed, train_cfg.ensemble_members)
    independent = _independent_members(model, split, features, seed, train_cfg.ensemble_members)
    return {
        "ensemble": blade.ensemble_moments(members, graph, chunk=train_cfg.export_chunk),
        "deep_ensemble": deep_ensemble.member_moments(independent, graph, chunk=train_cfg.export_chunk),
        "mc_dropout": unit_head(blade.export_moments(model, graph, **passes, estimator="mc_dropout")),
        "sampler": unit_head(blade.export_moments(model, graph, **passes, estimator="sampler")),
    }


def halves(label: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask of half the positives and half the negatives, drawn at random."""
    rng = np.random.default_rng([seed, 1])
    mask = np.zeros(label.size, dtype=bool)
    for value in (0.0, 1.0):
        rows = rng.permutation(np.flatnonzero(label == value))
        mask[rows[: rows.size // 2]] = True
    return mask


def cross_fit(score, uncertainty, label, first, calibrate_cfg, thresholds_cfg) -> list[dict]:
    """Per target: each policy's recall and precision over both judged halves (fit on one,
    decide the other, then swap), and whether both fits reached the target."""
    from nextbuy.domain.decisions import precision_recall
    from nextbuy.domain.uncertainty import assign_buckets, fit_bucket_calibration

    rate = float(label[first].mean())
    targets = [rate + (1.0 - rate) * f for f in TARGET_FRACTIONS]
    pooled = [{"feasible": True, "kept": [], **{p: [] for p in POLICIES}, "label": []} for _ in targets]
    for fit in (first, ~first):
        judge = ~fit
        calibration = fit_bucket_calibration(
            score[fit], uncertainty[fit], label[fit], calibrate_cfg.n_buckets, calibrate_cfg.min_bucket_size
        )
        arrays = {
            "score": score,
            "bucket": assign_buckets(uncertainty, calibration.edges),
            "prob_calibrated": calibration.predict(score, uncertainty),
            "label": label,
        }
        fit_arrays = {k: v[fit] for k, v in arrays.items()}
        test_arrays = {k: v[judge] for k, v in arrays.items()}
        for acc, row in zip(
            pooled,
            policy_decisions(fit_arrays, calibration.n_buckets, test_arrays, targets, thresholds_cfg),
            strict=True,
        ):
            acc["feasible"] &= row["feasible"]
            acc["kept"].append(row["kept"])
            for policy in POLICIES:
                acc[policy].append(row["decisions"][policy])
            acc["label"].append(label[judge])
    rows = []
    for target, acc in zip(targets, pooled, strict=True):
        truth = np.concatenate(acc["label"])
        row = {"target": float(target), "feasible": bool(acc["feasible"])}
        row["kept"] = float(np.mean(acc["kept"]))  # share of halves whose check kept per-bucket
        for policy in POLICIES:
            quality = precision_recall(np.concatenate(acc[policy]), truth)
            row[f"{policy}_recall"], row[f"{policy}_precision"] = quality["recall"], quality["precision"]
        rows.append(row)
    return rows


def by_in_degree(dst: np.ndarray, uncertainty: np.ndarray, observed: np.ndarray, n_nodes: int) -> dict:
    """Mean uncertainty of test pairs by their target's in-degree in the observed graph."""
    from nextbuy.domain.uncertainty import IN_DEGREE_BANDS, in_degree_band_labels

    degree = np.bincount(observed[:, 1], minlength=n_nodes)[dst]
    band = np.searchsorted(np.asarray(IN_DEGREE_BANDS), degree, side="right") - 1
    labels = in_degree_band_labels(IN_DEGREE_BANDS)
    means = {
        name: float(uncertainty[band == k].mean()) if (band == k).any() else None
        for k, name in enumerate(labels)
    }
    return {
        "by_in_degree": means,
        "rows_by_in_degree": {n: int((band == k).sum()) for k, n in enumerate(labels)},
    }


def one_seed(split: lp.LinkSplit, features, params: dict, seed: int) -> dict[str, dict]:
    from nextbuy.domain.graph.scoring import score_and_uncertainty
    from nextbuy.domain.uncertainty import uncertainty_coefficient

    pairs = np.vstack([split.pos_test, split.neg_test])
    label = np.r_[np.ones(len(split.pos_test)), np.zeros(len(split.neg_test))]
    first = halves(label, seed)
    calibrate_cfg, thresholds_cfg = (
        section_config(params, CalibrateConfig),
        section_config(params, ThresholdsConfig),
    )
    out = {}
    for name, moments in link_estimators(split, features, seed, section_config(params, TrainConfig)).items():
        score, uncertainty = score_and_uncertainty(moments, pairs[:, 0], pairs[:, 1])
        out[name] = {
            "rows": cross_fit(score, uncertainty, label, first, calibrate_cfg, thresholds_cfg),
            "coefficient": uncertainty_coefficient(score, uncertainty, label),
            "by_history": by_in_degree(pairs[:, 1], uncertainty, split.observed, split.n_nodes),
        }
    return out


def run_graph(graph: Path, split: Path | None, seeds: int, params_file: str = "params.yaml") -> dict:
    """Every seed on ``graph`` (its ``split``, else a seeded 80/5/15 split of its own per seed)."""
    started = time.perf_counter()
    params = read_params(params_file)
    g = load_graph(graph)
    fixed = load_split(split, g.n_nodes) if split is not None else None
    per_seed, test_pairs = [], []
    for seed in range(int(seeds)):
        # early stopping selects on the same validation pool as bench linkpred's
        this = models.with_validation_pool(
            fixed if fixed is not None else lp.make_split(g.edges, g.n_nodes, seed)
        )
        per_seed.append(one_seed(this, g.features, params, seed))
        test_pairs.append(len(this.pos_test) + len(this.neg_test))
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    figures = aggregate(per_seed, TARGET_FRACTIONS, lift_key="target_fraction")
    figures["graph"], figures["split"] = str(graph), None if split is None else str(split)
    figures["test_pairs"] = test_pairs
    figures["members"], figures["member_epochs"] = (
        section_config(params, TrainConfig).ensemble_members,
        MEMBER_EPOCHS,
    )
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures
