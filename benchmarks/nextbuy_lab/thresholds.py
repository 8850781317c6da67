"""`nextbuy bench thresholds`: do per-bucket thresholds win out of sample, per uncertainty estimator?

The simulated store of params.yaml goes through the pipeline's own ingest,
label_delay, train and calibrate cores. Per training seed one model is trained,
and each uncertainty estimator is derived from that same model (``ensemble``:
bootstrap members fine-tuned from it; ``deep_ensemble``: it and members trained
from scratch, each on its own seed and bootstrap; ``mc_dropout`` and ``sampler``:
stochastic passes of it), so the estimators share one model (``deep_ensemble``'s
score also averages the other members). For each
estimator and precision target, three policies are fitted on the calibration
split's matured rows (what the thresholds stage fits on):

* ``single``: one score threshold;
* ``bucket``: one threshold per uncertainty bucket, fitted jointly (the DP);
* ``mist``: the per-bucket calibration, then one threshold on the calibrated
  probability.

They are judged out of sample on traffic of the days *after* the snapshot
against its eventual labels (the simulator's truth: this benchmark reads it, no
stage does). Per row: mean recall and achieved precision of each policy over
seeds, whether the target was feasible on the fit rows in every seed, and the
t-based 95% CI of the per-seed relative recall gain bucket/single − 1. Targets
are multiples of the fit rows' positive rate, so no store-specific number is
baked in (capped at :data:`MAX_TARGET` where a store converts so often that a
multiple would reach 1). Also per estimator: the logistic coefficient of uncertainty at equal
score on the test traffic (negative: uncertain pairs convert less than their
score says), mean uncertainty by the shown product's history, and ``error_rho``: the rank
correlation of the uncertainty with the size of the score's true logit error on the test
traffic (how well it marks what the model does not know).

``oracle_error`` is a reference, not an estimator: the ensemble's score with the true size of
its logit error as the uncertainty, through the same buckets, calibration and policies. It is
the most any uncertainty that measures the size of the error could give these policies.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from nextbuy.config import (
    CalibrateConfig,
    IngestConfig,
    LabelDelayConfig,
    ThresholdsConfig,
    TrainConfig,
    read_params,
    section_config,
    with_changes,
)
from nextbuy.domain.delay import DelayFamily
from nextbuy.mlops import io
from nextbuy_lab import deep_ensemble
from nextbuy_lab.threshold_policies import POLICIES, aggregate, policy_decisions

ESTIMATORS = ("ensemble", "deep_ensemble", "mc_dropout", "sampler")
ORACLE = "oracle_error"  # reference: the true |logit error| of the ensemble's score as its uncertainty
TARGET_LIFTS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)  # targets = these x the fit rows' positive rate
MAX_TARGET = 0.99  # a store that converts often caps its higher targets here (flagged infeasible if so)


def precision_targets(base_rate: float, lifts) -> list[float]:
    """``lifts`` × the positive rate, capped at :data:`MAX_TARGET` (a precision target is below 1)."""
    return [min(base_rate * lift, MAX_TARGET) for lift in lifts]


def estimator_moments(data, weighted, train_cfg, family: str, seed: int) -> dict[str, dict]:
    """One trained model per seed; the moments of each estimator derived from it."""
    from nextbuy.domain.graph import blade
    from nextbuy.stages import train

    cfg = with_changes(train_cfg, seed=seed, uncertainty="mc_dropout")
    architecture = blade.Architecture.from_config(cfg)
    graph = train.build_graph(data.products, data.edges, data.features)
    model, rows, _ = train.train_rounds(
        graph, weighted, cfg, architecture=architecture, delay_family=DelayFamily(family), progress=False
    )
    mc_dropout = train.moments_of(model, None, graph, cfg)  # cfg's estimator: mc_dropout
    members = train.ensemble_members(model, graph, rows, cfg, progress=False)
    independent = deep_ensemble.independent_members(
        model, graph, weighted, cfg, architecture, delay_family=family, progress=False
    )
    return {
        "ensemble": blade.ensemble_moments(members, graph, chunk=cfg.export_chunk),
        "deep_ensemble": deep_ensemble.member_moments(independent, graph, chunk=cfg.export_chunk),
        "mc_dropout": mc_dropout,
        "sampler": train.moments_of(model, None, graph, with_changes(cfg, uncertainty="sampler")),
    }


def _policy_rows(scored, calibration, test, targets, thresholds_cfg) -> list[dict]:
    """Per target: the three policies fitted on the matured calib rows, judged on ``test``."""
    from nextbuy.domain.decisions import precision_recall
    from nextbuy.domain.evaluation import fit_rows

    fit = scored[fit_rows(scored)]
    fit_arrays = {k: fit[k].to_numpy() for k in ("score", "bucket", "prob_calibrated", "label")}
    n_buckets = len(calibration.edges) + 1
    out = []
    for fitted in policy_decisions(fit_arrays, n_buckets, test, targets, thresholds_cfg):
        row = {"target": fitted["target"], "feasible": fitted["feasible"], "kept": fitted["kept"]}
        for name, decide in fitted["decisions"].items():
            quality = precision_recall(decide, test["label"])
            row[f"{name}_recall"], row[f"{name}_precision"] = quality["recall"], quality["precision"]
        out.append(row)
    return out


def logit_error(score: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """Size of the score's error against the true conversion probability, in log-odds."""
    from scipy.special import logit

    clip = 1e-6
    return np.abs(logit(np.clip(score, clip, 1 - clip)) - logit(np.clip(p_true, clip, 1 - clip)))


def _test_arrays(score, uncertainty, calibration, test: pd.DataFrame) -> dict[str, np.ndarray]:
    from nextbuy.domain.uncertainty import assign_buckets

    return {
        "score": score,
        "uncertainty": uncertainty,
        "bucket": assign_buckets(uncertainty, calibration.edges),
        "prob_calibrated": calibration.predict(score, uncertainty),
        "label": test["label_eventual"].to_numpy().astype(float),
    }


def _estimator_figures(data, test, scored, calibration, arrays, lifts, thresholds_cfg) -> dict:
    from scipy.stats import spearmanr

    from nextbuy.domain.evaluation import fit_rows
    from nextbuy.domain.uncertainty import uncertainty_by_history, uncertainty_coefficient

    base_rate = float(scored.loc[fit_rows(scored), "label"].mean())
    error = logit_error(arrays["score"], test["p_convert"].to_numpy())
    targets = precision_targets(base_rate, lifts)
    return {
        "rows": _policy_rows(scored, calibration, arrays, targets, thresholds_cfg),
        "coefficient": uncertainty_coefficient(arrays["score"], arrays["uncertainty"], arrays["label"]),
        "error_rho": float(spearmanr(arrays["uncertainty"], error)[0]),
        "by_history": uncertainty_by_history(
            test["shown_id"].to_numpy(), arrays["uncertainty"], data.edges, data.impressions, data.snapshot
        ),
    }


def _oracle_figures(
    data, weighted, test, holdout_score, test_score, calibrate_cfg, thresholds_cfg, lifts
) -> dict:
    """:data:`ORACLE`: the ensemble's scores (``holdout_score`` on :func:`calibrate.holdout_rows`,
    ``test_score`` on ``test``), the true size of their logit error as uncertainty."""
    from nextbuy.stages import calibrate

    rows = calibrate.holdout_rows(weighted)
    truth = data.truth_impressions.set_index("impression_id")["p_convert"]
    error = logit_error(holdout_score, truth.reindex(rows["impression_id"]).to_numpy())
    scored, calibration = calibrate.calibrate_holdout(rows, holdout_score, error, calibrate_cfg)
    test_error = logit_error(test_score, test["p_convert"].to_numpy())
    arrays = _test_arrays(test_score, test_error, calibration, test)
    return _estimator_figures(data, test, scored, calibration, arrays, lifts, thresholds_cfg)


def _one_seed(data, weighted, test, params, seed: int, lifts) -> dict[str, dict]:
    from nextbuy.domain.graph.scoring import score_and_uncertainty
    from nextbuy.stages import calibrate

    calibrate_cfg = section_config(params, CalibrateConfig)
    thresholds_cfg = section_config(params, ThresholdsConfig)
    estimators = estimator_moments(
        data,
        weighted,
        section_config(params, TrainConfig),
        section_config(params, LabelDelayConfig).delay_family,
        seed,
    )
    out = {}
    for name, moments in estimators.items():
        scored, calibration = calibrate.score_holdout(weighted, moments, calibrate_cfg)
        score, uncertainty = score_and_uncertainty(
            moments, test["source_id"].to_numpy(), test["shown_id"].to_numpy()
        )
        arrays = _test_arrays(score, uncertainty, calibration, test)
        out[name] = _estimator_figures(data, test, scored, calibration, arrays, lifts, thresholds_cfg)
        if name == "ensemble":  # the reference reuses its scores
            ensemble_scores = scored["score"].to_numpy(), score
    out[ORACLE] = _oracle_figures(
        data, weighted, test, *ensemble_scores, calibrate_cfg, thresholds_cfg, lifts
    )
    for name in out:
        best = max((r for r in out[name]["rows"] if r["feasible"]), key=lambda r: r["target"], default=None)
        if best:
            print(
                f"seed {seed} {name}: target {best['target']:.3f} recall single {best['single_recall']:.3f} "
                f"bucket {best['bucket_recall']:.3f} mist {best['mist_recall']:.3f}",
                flush=True,
            )
    return out


def run(
    out: Path,
    seeds: int = 5,
    params_file: str = "params.yaml",
    graph: Path | None = None,
    split: Path | None = None,
) -> dict:
    """The simulated store of ``params_file``; or, with ``graph``, its link-prediction test
    pairs cross-fitted (:mod:`nextbuy_lab.thresholds_graph`)."""
    if graph is not None:
        from nextbuy_lab.thresholds_graph import run_graph

        figures = run_graph(Path(graph), None if split is None else Path(split), seeds, params_file)
        figures["seeds"] = int(seeds)
        _print(figures, int(seeds))
        io.write_json(figures, out)
        return figures
    from nextbuy.stages import ingest, label_delay
    from nextbuy_lab.delay import future_traffic

    started = time.perf_counter()
    params = read_params(params_file)
    ingest_cfg = section_config(params, IngestConfig)
    data = ingest.ingest(ingest_cfg)
    if data.truth_impressions is None:
        raise ValueError("bench thresholds needs a simulated store (its truth judges the policies)")
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, section_config(params, LabelDelayConfig), data.products, data.edges
    )
    test = future_traffic(data, ingest_cfg)
    base_seed = section_config(params, TrainConfig).seed
    per_seed = [
        _one_seed(data, weighted, test, params, base_seed + s, TARGET_LIFTS) for s in range(int(seeds))
    ]
    figures = aggregate(per_seed, TARGET_LIFTS)
    figures["seeds"] = int(seeds)
    figures["test_impressions"] = len(test)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    _print(figures, int(seeds))
    io.write_json(figures, out)
    return figures


def _signed(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, "+" + spec)


def _print(figures: dict, seeds: int) -> None:
    for name, coef in figures["coefficient"].items():
        rho = figures.get("error_rho", {}).get(name)
        tracks = "" if rho is None else f"; rank correlation with the true |logit error| {rho['mean']:+.3f}"
        table = Table(
            title=f"bench thresholds, {name}: {seeds} seed(s), out of sample; uncertainty coefficient "
            f"at equal score {_signed(coef['mean'], '.3f')} "
            f"[{', '.join(_signed(x, '.3f') for x in coef['ci95_over_seeds'])}]{tracks}"
        )
        names = " / ".join(POLICIES)
        columns = ("target", "feasible", "kept", f"recall {names}", f"precision {names}")
        for column in (*columns, "gain bucket/single − 1 [95% CI]", "unguarded/single − 1 [95% CI]"):
            table.add_column(column, justify="right")
        for row in figures[name]:
            table.add_row(
                f"{row['target']:.3f}",
                "yes" if row["feasible"] else "no",
                f"{row['kept']:.0%}",
                " / ".join(f"{row[f'{p}_recall']:.3f}" for p in POLICIES),
                " / ".join(f"{row[f'{p}_precision']:.3f}" for p in POLICIES),
                *(f"{_signed(row[k], '.1%')} [{_signed(row[f'{k}_ci_low'], '.1%')}, "
                  f"{_signed(row[f'{k}_ci_high'], '.1%')}]" for k in ("gain", "unguarded_gain")),
            )  # fmt: skip
        Console(width=170).print(table)
