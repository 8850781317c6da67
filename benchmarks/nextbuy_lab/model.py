"""`nextbuy bench model`: the conversion model against the simulator's truth.

The simulated store of params.yaml goes through the pipeline's own ingest and
label_delay cores; each method learns from the same training impressions with the
same (importance) weights and is scored once on the test period's impressions
against their *eventual* labels, which only the simulator knows (this benchmark
may read the truth; no pipeline stage does):

* ``blade``: the train stage's ``fit`` as configured in params.yaml;
* ``blade_fixed``: the same with ``fanout_rule: fixed`` (the sampling ablation);
* ``dual_mf``: the same training without a GNN or features (``n_layers: 0``,
  id embeddings only: matrix factorisation with source/target roles);
* ``category_lr``: logistic regression on source-category x shown-category
  one-hots, its regularisation chosen on the same held-out training rows that
  early-stop the trained models, with as many EM steps as the GNN takes (the
  delay model refitted with its own score: ``train.em_targets``);
* ``oracle``: the simulator's true conversion probability (the ceiling);
* ``oracle_no_pair_noise``: the same without its fixed per-pair noise, the ceiling of any
  model that learns products rather than each pair by heart (a pair's noise shows only in
  that pair's own few impressions);
* ``oracle_pair_history``: ``oracle_no_pair_noise`` plus the Bayes posterior of each pair's
  noise given that pair's own impressions before the snapshot, labelled with their *eventual*
  outcome (more than any stage sees): the ceiling of a model that knew every product exactly
  and also learned each pair by heart from the store's history.

Seeds vary the training seed (the store is fixed); figures are means with ``std``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from nextbuy.config import (
    IngestConfig,
    LabelDelayConfig,
    TrainConfig,
    read_params,
    section_config,
    with_changes,
)
from nextbuy.domain.delay import DelayFamily
from nextbuy.mlops import io
from nextbuy_lab import paired

KEYS = (
    "blade",
    "blade_fixed",
    "dual_mf",
    "category_lr",
    "oracle",
    "oracle_no_pair_noise",
    "oracle_pair_history",
)
METRICS = ("auc", "nll", "pr_auc")
LR_C = (0.01, 0.1, 1.0, 10.0)  # category_lr's inverse regularisation, chosen on validation
NOISE_GRID = np.linspace(-4.0, 4.0, 161)  # the pair noise's posterior, in prior std units


def scores_of(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    prob = np.clip(prob, 1e-6, 1 - 1e-6)
    return {
        "auc": float(roc_auc_score(label, prob)),
        "nll": float(log_loss(label, prob, labels=[0, 1])),
        "pr_auc": float(average_precision_score(label, prob)),
    }


def _pair_onehots(products: pd.DataFrame, rows: pd.DataFrame):
    import scipy.sparse as sp

    cat = products["category"].to_numpy(np.int64)
    n_cat = int(cat.max()) + 2  # last: unknown
    cu = np.where(cat[rows["source_id"].to_numpy()] >= 0, cat[rows["source_id"].to_numpy()], n_cat - 1)
    cv = np.where(cat[rows["shown_id"].to_numpy()] >= 0, cat[rows["shown_id"].to_numpy()], n_cat - 1)
    col = cu * n_cat + cv
    return sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), col)), shape=(len(rows), n_cat * n_cat))


def as_hard_labels(x, target: np.ndarray, weight: np.ndarray):
    """Soft targets as scikit-learn takes them: each row twice, labelled 1 with weight
    ``weight * target`` and 0 with ``weight * (1 - target)`` (the same log loss)."""
    import scipy.sparse as sp

    target = np.asarray(target, dtype=np.float64)
    y = np.concatenate([np.ones(len(target)), np.zeros(len(target))])
    return sp.vstack([x, x], format="csr"), y, np.concatenate([weight * target, weight * (1.0 - target)])


def fitted_category_lr(products, fit_rows, held_rows, weights, seed: int):
    """The category-pair logistic regression (scikit-learn), C chosen on ``held_rows``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    x_fit, y_fit, w_fit = as_hard_labels(
        _pair_onehots(products, fit_rows), fit_rows["label"].to_numpy(), weights(fit_rows)
    )
    x_held, y_held, w_held = as_hard_labels(
        _pair_onehots(products, held_rows), held_rows["label"].to_numpy(), weights(held_rows)
    )

    def fitted(c: float):
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
            x_fit, y_fit, sample_weight=w_fit
        )

    models = [fitted(c) for c in LR_C]
    return min(models, key=lambda m: log_loss(y_held, m.predict_proba(x_held)[:, 1], sample_weight=w_held))


def category_lr(products, fit_rows, held_rows, test_rows, weights, seed: int) -> np.ndarray:
    """Test probabilities of :func:`fitted_category_lr`."""
    model = fitted_category_lr(products, fit_rows, held_rows, weights, seed)
    return model.predict_proba(_pair_onehots(products, test_rows))[:, 1]


def category_lr_with_em(products, weighted, test_rows, cfg, family: str) -> np.ndarray:
    """:func:`category_lr` trained as the GNN is: on ``cfg.weighting``'s targets, then as many EM
    steps as the GNN takes (``train.em_targets``, with the regression's own logit as the delay
    model's score), so that both learn from equally good soft targets."""
    from nextbuy.domain import delay
    from nextbuy.stages import train

    weights = lambda r: train.conversion_weights(r, cfg.weighting)  # noqa: E731
    model = fitted_category_lr(products, *train.training_rows(weighted, cfg), weights, cfg.seed)
    for _ in range(cfg.em_rounds if delay.rescores(cfg.weighting) else 0):
        score = model.decision_function(_pair_onehots(products, weighted[weighted["split"] == "train"]))
        weighted = train.em_targets(weighted, score, cfg.weighting, DelayFamily(family))
        model = fitted_category_lr(products, *train.training_rows(weighted, cfg), weights, cfg.seed)
    return model.predict_proba(_pair_onehots(products, test_rows))[:, 1]


def _one_seed(data, weighted, test_rows, train_cfg, family: str, seed: int) -> dict[str, dict]:
    from dataclasses import replace

    from nextbuy.domain.graph.blade import Architecture
    from nextbuy.domain.graph.scoring import score_and_uncertainty
    from nextbuy.stages import train

    label = test_rows["label_eventual"].to_numpy()
    src, dst = test_rows["source_id"].to_numpy(), test_rows["shown_id"].to_numpy()
    cfg = with_changes(train_cfg, seed=seed)
    architecture = Architecture.from_config(cfg)
    graph = train.build_graph(data.products, data.edges)
    variants = {
        "blade": (graph, architecture),
        "blade_fixed": (graph, replace(architecture, fanout_rule="fixed")),
        "dual_mf": (replace(graph, features=None), replace(architecture, n_layers=0)),
    }
    rows = {}
    for key, (g, arch) in variants.items():
        started = time.perf_counter()
        _, moments, history = train.fit(
            g, weighted, cfg, delay_family=family, progress=False, architecture=arch
        )
        prob, _ = score_and_uncertainty(moments, src, dst)
        rows[key] = {
            **scores_of(label, prob),
            "train_s": time.perf_counter() - started,
            "epochs": len(history),
        }
        print(f"seed {seed} {key}: auc {rows[key]['auc']:.4f} ({len(history)} epochs)", flush=True)
    rows["category_lr"] = scores_of(
        label, category_lr_with_em(data.products, weighted, test_rows, cfg, family)
    )
    rows["oracle"] = scores_of(label, test_rows["p_convert"].to_numpy())
    rows["oracle_no_pair_noise"] = scores_of(label, test_rows["p_no_pair_noise"].to_numpy())
    rows["oracle_pair_history"] = scores_of(label, test_rows["p_pair_history"].to_numpy())
    return rows


def _aggregate(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    out = {}
    for key in KEYS:
        values = {m: np.array([row[key][m] for row in per_seed]) for m in METRICS}
        out[key] = {m: float(v.mean()) for m, v in values.items()}
        out[key]["std"] = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
        out[key]["seeds"] = len(per_seed)
    return out


def paired_gaps(per_seed: list[dict[str, dict]], base: str = "blade") -> dict[str, dict]:
    """AUC of ``base`` minus each other method, per seed: mean and a t-based 95% CI."""
    return paired.paired_gaps(per_seed, base, "auc", KEYS)


def scored_test_rows(data, weighted: pd.DataFrame, simulator) -> pd.DataFrame:
    """The test period's impressions with their eventual label, true probability, that
    probability without the per-pair noise (``p_no_pair_noise``, from the store's ``simulator``
    config) and with the pair noise's posterior from the pair's earlier impressions
    (``p_pair_history``); see the module's reference rows. Truth: bench only."""
    from scipy.special import logit

    from nextbuy.data.simulator import PAIR_NOISE, conversion_probability

    truth = data.truth_impressions[["impression_id", "label_eventual", "p_convert"]]
    labelled = weighted.merge(truth, on="impression_id", how="left", validate="1:1")
    missing = labelled["label_eventual"].isna()
    if missing.any():
        first = labelled.loc[missing, "impression_id"].head(5).tolist()
        raise ValueError(f"{int(missing.sum())} impressions have no ground truth (first: {first})")
    is_test = (labelled["split"] == "test").to_numpy()
    src, dst = labelled["source_id"].to_numpy(), labelled["shown_id"].to_numpy()
    smooth = conversion_probability(data.truth_products, simulator, src, dst, pair_noise=False)
    smooth_logit = logit(smooth)
    rows = labelled[is_test].reset_index(drop=True)
    rows["p_no_pair_noise"] = smooth[is_test]
    rows["p_pair_history"] = pair_posterior_probability(
        smooth_logit[is_test],
        (src[is_test], dst[is_test]),
        (src[~is_test], dst[~is_test]),
        labelled.loc[~is_test, "label_eventual"].to_numpy(np.float64),
        PAIR_NOISE,
    )
    return rows


def pair_posterior_probability(
    smooth_logit: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    past_pairs: tuple[np.ndarray, np.ndarray],
    past_labels: np.ndarray,
    noise_std: float,
) -> np.ndarray:
    """P(convert) of each (source, shown) pair whose log-odds are ``smooth_logit`` plus a fixed
    N(0, noise_std²) draw of its own, averaged over that draw's posterior given the pair's
    ``past_labels`` (Bernoulli at the same log-odds; a grid over ±4 std). A pair with no past
    rows keeps the prior. Memory: rows of ``pairs`` x grid."""
    from scipy.special import expit, log_expit

    shown, converted = _pair_history(_pair_key(*pairs), _pair_key(*past_pairs), past_labels)
    noise = NOISE_GRID * noise_std
    logits = smooth_logit[:, None] + noise
    log_post = (
        -0.5 * NOISE_GRID**2
        + converted[:, None] * log_expit(logits)
        + (shown - converted)[:, None] * log_expit(-logits)
    )
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    return (post * expit(logits)).sum(axis=1)


def _pair_history(key: np.ndarray, past_key: np.ndarray, past_labels: np.ndarray):
    """For each of ``key``'s pairs: its past impressions and conversions (0, 0 if never shown)."""
    keys, inverse = np.unique(past_key, return_inverse=True)
    counts = np.stack(
        [
            np.bincount(inverse, minlength=len(keys)),
            np.bincount(inverse, weights=past_labels, minlength=len(keys)),
        ]
    )
    at = np.searchsorted(keys, key)
    seen = at < len(keys)
    seen[seen] = keys[at[seen]] == key[seen]
    out = np.zeros((2, len(key)))
    out[:, seen] = counts[:, at[seen]]
    return out[0], out[1]


def _pair_key(source: np.ndarray, shown: np.ndarray) -> np.ndarray:
    return (source.astype(np.int64) << 32) | shown.astype(np.int64)


def run(out: Path, seeds: int = 5, params_file: str = "params.yaml") -> dict:
    from nextbuy.stages import ingest, label_delay

    params = read_params(params_file)
    started = time.perf_counter()
    ingest_cfg = section_config(params, IngestConfig)
    data = ingest.ingest(ingest_cfg)
    if data.truth_impressions is None:
        raise ValueError("bench model needs a simulated store (its truth scores the models)")
    delay_cfg = section_config(params, LabelDelayConfig)
    weighted, _ = label_delay.weigh(data.impressions, data.snapshot, delay_cfg, data.products, data.edges)
    rows = scored_test_rows(data, weighted, ingest_cfg.simulator)
    train_cfg = section_config(params, TrainConfig)
    per_seed = [
        _one_seed(data, weighted, rows, train_cfg, delay_cfg.delay_family, train_cfg.seed + s)
        for s in range(int(seeds))
    ]
    figures = _aggregate(per_seed)
    figures["paired_auc_gap_vs_blade"] = paired_gaps(per_seed)
    figures["test_impressions"] = len(rows)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    _print(figures, int(seeds))
    io.write_json(figures, out)
    return figures


def _print(figures: dict, seeds: int) -> None:
    table = Table(title=f"bench model: test-period conversions vs eventual labels, {seeds} seed(s)")
    table.add_column("method")
    for m in METRICS:
        table.add_column(m, justify="right")
    table.add_column("AUC gap blade − method [95% CI]", justify="right")
    gaps = figures["paired_auc_gap_vs_blade"]
    for key in KEYS:
        row = figures[key]
        gap = gaps.get(key)
        gap_text = f"{gap['mean']:+.4f} [{gap['ci95'][0]:+.4f}, {gap['ci95'][1]:+.4f}]" if gap else ""
        table.add_row(key, *[f"{row[m]:.4f}±{row['std'][m]:.4f}" for m in METRICS], gap_text)
    Console(width=140).print(table)
