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

from nextbuy.config import read_params, section_config, with_changes
from nextbuy.mlops import io

ESTIMATORS = ("ensemble", "deep_ensemble", "mc_dropout", "sampler")
ORACLE = "oracle_error"  # reference: the true |logit error| of the ensemble's score as its uncertainty
# ``unguarded``: the joint fit without its out-of-fold check (``bucket`` is what the stage serves)
POLICIES = ("single", "bucket", "mist", "unguarded")
TARGET_LIFTS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)  # targets = these x the fit rows' positive rate
MAX_TARGET = 0.99  # a store that converts often caps its higher targets here (flagged infeasible if so)


def precision_targets(base_rate: float, lifts) -> list[float]:
    """``lifts`` × the positive rate, capped at :data:`MAX_TARGET` (a precision target is below 1)."""
    return [min(base_rate * lift, MAX_TARGET) for lift in lifts]


def _t_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean ± t-based 95% half-width over the finite values; None (JSON null) with fewer than 2."""
    from scipy import stats

    values = values[np.isfinite(values)]
    if values.size < 2:
        return None, None
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return float(values.mean() - half), float(values.mean() + half)


def estimator_moments(data, weighted, train_cfg, family: str, seed: int) -> dict[str, dict]:
    """One trained model per seed; the moments of each estimator derived from it."""
    from nextbuy.domain.graph import blade
    from nextbuy.stages import train

    cfg = with_changes(train_cfg, seed=seed, uncertainty="mc_dropout")
    architecture, schedule, export = train.blade_arguments(cfg)
    graph = train.build_graph(data.products, data.edges, data.features)
    model, rows, _ = train.train_rounds(
        graph, weighted, cfg, architecture, schedule, delay_family=family, progress=False
    )
    mc_dropout = blade.export_moments(model, graph, **export, estimator="mc_dropout")
    members = train.ensemble_members(model, graph, rows, cfg, architecture, schedule, progress=False)
    independent = train.independent_members(
        model, graph, weighted, cfg, architecture, schedule, delay_family=family, progress=False
    )
    return {
        "ensemble": blade.ensemble_moments(members, graph, chunk=cfg.export_chunk),
        "deep_ensemble": blade.member_moments(independent, graph, chunk=cfg.export_chunk),
        "mc_dropout": mc_dropout,
        "sampler": blade.export_moments(model, graph, **export, estimator="sampler"),
    }


def policy_decisions(fit: dict, n_buckets: int, test: dict, targets, thresholds_cfg) -> list[dict]:
    """Per target: the ``POLICIES`` fitted on the ``fit`` arrays (score, bucket,
    prob_calibrated, label) and their decisions on ``test`` (score, bucket, prob_calibrated);
    feasible when the joint fit and the single threshold both reach the target; ``kept`` when
    the out-of-fold check kept the per-bucket thresholds."""
    from nextbuy.domain.decisions import cross_fitted_bucket_thresholds, fit_global_threshold

    support = thresholds_cfg.min_bucket_positives
    out = []
    for target in targets:
        joint = cross_fitted_bucket_thresholds(
            fit["score"], fit["bucket"], fit["label"], n_buckets, target, thresholds_cfg.n_candidates,
            support, thresholds_cfg.cross_fit_folds, thresholds_cfg.seed,
        )  # fmt: skip
        mist = fit_global_threshold(
            fit["prob_calibrated"], fit["label"], target, thresholds_cfg.n_candidates, support
        )
        check = joint.cross_fit  # None: no check ran, the joint fit is served as it is
        unguarded = joint.thresholds if check is None else check.per_bucket
        decisions = {
            "single": test["score"] >= joint.single.threshold,
            "bucket": joint.thresholds.decide(test["score"], test["bucket"]),
            "mist": test["prob_calibrated"] >= mist.threshold,
            "unguarded": unguarded.decide(test["score"], test["bucket"]),
        }
        out.append({"target": float(target), "feasible": bool(joint.feasible and joint.single.feasible),
                    "kept": check is None or check.kept_per_bucket, "decisions": decisions})  # fmt: skip
    return out


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

    calibrate_cfg = section_config(params, "calibrate")
    thresholds_cfg = section_config(params, "thresholds")
    estimators = estimator_moments(
        data,
        weighted,
        section_config(params, "train"),
        section_config(params, "label_delay").delay_family,
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


def aggregate(per_seed: list[dict[str, dict]], lifts, lift_key: str = "target_lift") -> dict:
    """Per estimator and target (``lifts``, named ``lift_key``): means over seeds, the precision
    CIs and the CI of the per-seed recall gain bucket/single − 1; the uncertainty coefficient
    over seeds; the first seed's uncertainty by history."""
    figures: dict = {"coefficient": {}, "by_history": {}}
    for name in per_seed[0]:
        rows = []
        for i, lift in enumerate(lifts):
            seeds = [run[name]["rows"][i] for run in per_seed]
            row = {lift_key: float(lift), "target": float(np.mean([r["target"] for r in seeds]))}
            row["feasible"] = all(r["feasible"] for r in seeds)
            for policy in POLICIES:
                for metric in ("recall", "precision"):
                    values = np.array([r[f"{policy}_{metric}"] for r in seeds])
                    row[f"{policy}_{metric}"] = float(values.mean())
                lo, hi = _t_interval(np.array([r[f"{policy}_precision"] for r in seeds]))
                row[f"{policy}_precision_ci"] = [lo, hi]
            # share of seeds whose out-of-fold check kept the per-bucket thresholds
            row["kept"] = float(np.mean([r["kept"] for r in seeds]))
            single = np.array([r["single_recall"] for r in seeds])
            for policy, prefix in (("bucket", "gain"), ("unguarded", "unguarded_gain")):
                other = np.array([r[f"{policy}_recall"] for r in seeds])
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain = np.where(single > 0, other / single - 1.0, np.nan)
                row[prefix] = float(np.nanmean(gain)) if np.isfinite(gain).any() else None
                row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = _t_interval(gain)
            rows.append(row)
        figures[name] = rows
        coefs = np.array([run[name]["coefficient"]["coef"] or np.nan for run in per_seed], dtype=float)
        lo, hi = _t_interval(coefs)
        mean = float(np.mean(coefs[np.isfinite(coefs)])) if np.isfinite(coefs).any() else None
        figures["coefficient"][name] = {"mean": mean, "ci95_over_seeds": [lo, hi]}
        figures["by_history"][name] = per_seed[0][name]["by_history"]
        if "error_rho" in per_seed[0][name]:
            rho = np.array([run[name]["error_rho"] for run in per_seed], dtype=float)
            figures.setdefault("error_rho", {})[name] = {
                "mean": float(np.nanmean(rho)),
                "ci95_over_seeds": list(_t_interval(rho)),
            }
    return figures


def run(
    out: Path,
    seeds: int = 5,
    params_file: str = "params.yaml",
    graph: Path | None = None,
    split: Path | None = None,
) -> dict:
    """The simulated store of ``params_file``; or, with ``graph``, its link-prediction test
    pairs cross-fitted (:mod:`nextbuy.bench.thresholds_graph`)."""
    if graph is not None:
        from nextbuy.bench.thresholds_graph import run_graph

        figures = run_graph(Path(graph), None if split is None else Path(split), seeds, params_file)
        figures["seeds"] = int(seeds)
        _print(figures, int(seeds))
        io.write_json(figures, out)
        return figures
    from nextbuy.bench.delay import future_traffic
    from nextbuy.stages import ingest, label_delay

    started = time.perf_counter()
    params = read_params(params_file)
    ingest_cfg = section_config(params, "ingest")
    data = ingest.ingest(ingest_cfg)
    if data.truth_impressions is None:
        raise ValueError("bench thresholds needs a simulated store (its truth judges the policies)")
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, section_config(params, "label_delay"), data.products, data.edges
    )
    test = future_traffic(data, ingest_cfg)
    base_seed = section_config(params, "train").seed
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
