"""`nextbuy bench delay`: does delayed-feedback correction matter, and which method recovers it?

The simulated store of params.yaml goes through the pipeline's own ingest and
label_delay cores. The same conversion model (the train stage's ``fit``) is then
trained once per weighting method on the same training impressions — every day up
to the snapshot, the freshest included — and scored on traffic of the days *after*
the snapshot against its eventual labels, which only the simulator knows (this
benchmark reads the truth; no stage does):

* ``naive``, ``wait``, ``importance``, ``importance_no_engagement``,
  ``importance_no_features``, ``importance_ipw``: ``train.weighting`` as the pipeline
  offers it (see ``nextbuy.domain.delay``);
* ``oracle``: the same rows with their *eventual* labels (the ceiling).

Seeds vary the training seed (the store and the test traffic are fixed), so
methods are compared pairwise per seed. RI = (method − naive) / (oracle − naive)
from the seed means (NLL: lower is better, so the signs flip); ``gap_auc`` is the
mean per-seed oracle − naive AUC gap and ``gap_auc_std`` its std over seeds.
``--sweep`` repeats the comparison in other regimes (short and long delays, a
store without launches, an older snapshot, delays that follow price closely) to show
where each method wins. ``flip_scores`` judges the delay models themselves: how well each
one's flip probability predicts which training negatives did convert later; the estimated
against the true flip probability is also written beside the JSON for ``dvc plots show``
(:func:`flip_plot_path`).
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
    merge,
    read_params,
    section_config,
    with_changes,
)
from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.mlops import io
from nextbuy_lab import paired

KEYS = (*WEIGHTING_METHODS, "oracle")
ALWAYS = ("naive", "importance", "oracle")  # RI needs naive and oracle; the paired gaps importance
METRICS = ("auc", "nll", "pr_auc", "ece")
TEST_DAYS = 7  # days of post-snapshot traffic the methods are scored on
TEST_IMPRESSIONS = 40_000  # large: the test draw's noise is shared by all methods, keep it small
TEST_SEED = 4242  # the post-snapshot traffic's seed (fixed: every method sees the same rows)
# Regimes of --sweep: params overrides of the default store.
REGIMES = {
    "short_delay": {"ingest": {"simulator": {"delay_median_hours": 12}}},
    "long_delay": {"ingest": {"simulator": {"delay_median_hours": 336}}},
    "no_launches": {"ingest": {"simulator": {"launch_rate": 0.0}}},
    "snapshot_history_28d": {"ingest": {"simulator": {"history_days": 28}}},
    # Delays that follow price closely: where the delay model's pair features have something to add.
    "price_driven_delay": {"ingest": {"simulator": {"delay_price_elasticity": 1.0}}},
}
FLIP_ESTIMATES = ("importance", "importance_no_engagement", "importance_no_features")
FLIP_SCOPES = ("negatives", "carted_negatives")  # all training negatives; the carted ones


def scores_of(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """``bench model``'s AUC, NLL and PR-AUC, plus the expected calibration error."""
    from nextbuy.domain.uncertainty import expected_calibration_error
    from nextbuy_lab.model import scores_of as model_scores

    return {
        **model_scores(label, prob),
        "ece": float(expected_calibration_error(np.clip(prob, 1e-6, 1 - 1e-6), label)),
    }


def oracle_rows(weighted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The weighted rows with every label replaced by its eventual value (``naive`` then
    trains on the truth)."""
    eventual = truth.set_index("impression_id")["label_eventual"].reindex(weighted["impression_id"])
    if eventual.isna().any():
        raise ValueError(f"{int(eventual.isna().sum())} impressions have no ground truth")
    label = eventual.to_numpy().astype(np.int8)
    return weighted.assign(label=label, target_naive=label.astype(np.float64))


def future_traffic(data, ingest_cfg) -> pd.DataFrame:
    """TEST_DAYS of traffic after the snapshot, with eventual labels (observed long after) and
    the true conversion probability (``p_convert``)."""
    from nextbuy.data.simulator import Window, simulate_traffic, store_world

    simulator = ingest_cfg.simulator
    world = store_world(data.products, data.truth_products, data.edges, data.snapshot, simulator.history_days)
    end = world.snapshot + pd.Timedelta(days=TEST_DAYS)
    traffic = simulate_traffic(
        world, simulator, TEST_SEED, TEST_IMPRESSIONS, Window(world.snapshot, end, end), id_offset=10**12
    )
    rows = traffic.impressions[["impression_id", "source_id", "shown_id"]]
    truth = traffic.truth[["impression_id", "label_eventual", "p_convert"]]
    return rows.merge(truth, on="impression_id", validate="1:1")


def flip_check(data, weighted: pd.DataFrame, eventual: pd.Series) -> pd.DataFrame:
    """The delay model's flip probability of the training negatives against how many did flip,
    by engagement x days since shown (the label_delay stage plots the estimate alone)."""
    from nextbuy.domain import delay as delay_model

    train = (weighted["split"] == "train").to_numpy()
    signals = delay_model.observed_signals(data.impressions, data.snapshot)[train]
    return delay_model.flip_table(signals, weighted["p_flip"].to_numpy()[train], eventual.to_numpy())


def flip_scores(weighted: pd.DataFrame, eventual: pd.Series) -> dict[str, dict[str, dict]]:
    """How well each delay model predicts which training negatives flip: NLL and AUC of its flip
    probability (``target_<method>`` of an observed negative) against the eventual label, over all
    training negatives and over the carted ones (where nearly every flip happens). Direct evidence
    of what a signal group adds to the estimator, free of the conversion model's training noise."""
    from sklearn.metrics import log_loss, roc_auc_score

    train = (weighted["split"] == "train").to_numpy()
    rows = weighted[train]
    negative = (rows["label"] == 0).to_numpy()
    flipped = eventual.to_numpy()[negative].astype(np.int8)
    carted = (rows["carted"] == 1).to_numpy()[negative]
    out = {}
    for method in FLIP_ESTIMATES:
        p_flip = np.clip(rows[f"target_{method}"].to_numpy()[negative], 1e-9, 1 - 1e-9)
        out[method] = {}
        for scope, mask in zip(FLIP_SCOPES, (np.ones_like(carted), carted), strict=True):
            y, p = flipped[mask], p_flip[mask]
            both = 0 < y.sum() < len(y)
            out[method][scope] = {
                "nll": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
                "auc": float(roc_auc_score(y, p)) if both else None,
                "estimated_flips": float(p.sum()),
                "flips": int(y.sum()),
                "count": len(y),
            }
    return out


def selected(methods: tuple[str, ...] | None) -> tuple[str, ...]:
    """``methods`` (default: every key) plus :data:`ALWAYS`, in :data:`KEYS` order."""
    if methods is None:
        return KEYS
    unknown = sorted(set(methods) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {list(KEYS)}")
    return tuple(k for k in KEYS if k in set(methods) | set(ALWAYS))


def _one_seed(
    data, weighted, oracle, test, train_cfg, family: str, seed: int, keys: tuple[str, ...]
) -> dict[str, dict]:
    from scipy.special import expit

    from nextbuy.domain.graph.scoring import pair_logit_moments
    from nextbuy.stages import train

    src, dst = test["source_id"].to_numpy(), test["shown_id"].to_numpy()
    label = test["label_eventual"].to_numpy()
    runs = {m: (weighted, m) for m in WEIGHTING_METHODS} | {"oracle": (oracle, "naive")}
    runs = {key: runs[key] for key in keys}
    rows = {}
    graph = train.build_graph(data.products, data.edges, data.features)
    for key, (rows_in, weighting) in runs.items():
        # The model's own probability (mean logit): the weighting is what differs. The uncertainty
        # estimator (calibrate's business, `bench thresholds`) is fixed to the cheapest.
        cfg = with_changes(train_cfg, seed=seed, weighting=weighting, uncertainty="mc_dropout")
        _, moments, history = train.fit(graph, rows_in, cfg, delay_family=family, progress=False)
        prob = expit(pair_logit_moments(moments, src, dst)[0].astype(np.float64))
        rows[key] = {**scores_of(label, prob), "epochs": len(history)}
        print(f"seed {seed} {key}: auc {rows[key]['auc']:.4f} nll {rows[key]['nll']:.4f}", flush=True)
    return rows


def _aggregate(per_seed: list[dict[str, dict]]) -> dict:
    out: dict = {}
    keys = tuple(per_seed[0])
    for key in keys:
        values = {m: np.array([row[key][m] for row in per_seed]) for m in METRICS}
        out[key] = {m: float(v.mean()) for m, v in values.items()}
        out[key]["std"] = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
        out[key]["seeds"] = len(per_seed)
    gap_auc = out["oracle"]["auc"] - out["naive"]["auc"]
    gap_nll = out["naive"]["nll"] - out["oracle"]["nll"]
    methods = [k for k in keys if k != "oracle"]
    out["ri_auc"] = {k: (out[k]["auc"] - out["naive"]["auc"]) / gap_auc if gap_auc else None for k in methods}
    out["ri_nll"] = {k: (out["naive"]["nll"] - out[k]["nll"]) / gap_nll if gap_nll else None for k in methods}
    per_seed_gap = np.array([row["oracle"]["auc"] - row["naive"]["auc"] for row in per_seed])
    out["gap_auc"] = float(per_seed_gap.mean())
    out["gap_auc_std"] = float(per_seed_gap.std(ddof=1)) if len(per_seed_gap) > 1 else 0.0
    out["paired_vs_importance"] = {
        metric: paired.paired_gaps(per_seed, "importance", metric, keys) for metric in ("auc", "nll")
    }
    return out


def regime(params: dict, seeds: int, keys: tuple[str, ...] = KEYS) -> dict:
    """Every method on one store (``params``), ``seeds`` training seeds."""
    from nextbuy.stages import ingest, label_delay

    ingest_cfg = section_config(params, IngestConfig)
    data = ingest.ingest(ingest_cfg)
    if data.truth_impressions is None:
        raise ValueError("bench delay needs a simulated store (its truth scores the methods)")
    delay_cfg = section_config(params, LabelDelayConfig)
    weighted, _ = label_delay.weigh(data.impressions, data.snapshot, delay_cfg, data.products, data.edges)
    train_rows = weighted["split"] == "train"
    truth = data.truth_impressions
    eventual = truth.set_index("impression_id")["label_eventual"].reindex(
        weighted["impression_id"][train_rows]
    )
    test = future_traffic(data, ingest_cfg)
    train_cfg = section_config(params, TrainConfig)
    per_seed = [
        _one_seed(
            data,
            weighted,
            oracle_rows(weighted, truth),
            test,
            train_cfg,
            delay_cfg.delay_family,
            train_cfg.seed + s,
            keys,
        )
        for s in range(int(seeds))
    ]
    figures = _aggregate(per_seed)
    figures["flip_by_engagement"] = flip_check(data, weighted, eventual).to_dict(orient="records")
    figures["flip_scores"] = flip_scores(weighted, eventual)
    observed = weighted.loc[train_rows, "label"]
    figures["data"] = {
        "train_impressions": int(train_rows.sum()),
        "train_positives_observed": int(observed.sum()),
        "train_positives_eventual": int(eventual.sum()),
        "share_of_positives_unseen": float(1 - observed.sum() / max(eventual.sum(), 1)),
        "test_impressions": len(test),
        "test_positives": int(test["label_eventual"].sum()),
    }
    return figures


def sweep_regimes(names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The :data:`REGIMES` named (default: all), checked."""
    if names is None:
        return tuple(REGIMES)
    unknown = sorted(set(names) - set(REGIMES))
    if unknown:
        raise ValueError(f"unknown regime(s) {unknown}; expected some of {list(REGIMES)}")
    return tuple(name for name in REGIMES if name in names)


def run(
    out: Path,
    seeds: int = 5,
    sweep: bool = False,
    params_file: str = "params.yaml",
    methods: tuple[str, ...] | None = None,
    regimes: tuple[str, ...] | None = None,
    default_store: bool = True,
) -> dict:
    """``methods``: the weighting methods to compare (default all; naive, importance and oracle
    always run). ``sweep`` adds the ``regimes`` (default: every one of :data:`REGIMES`);
    ``default_store=False`` skips the default store (the JSON then holds the sweep alone)."""
    started = time.perf_counter()
    params = read_params(params_file)
    keys = selected(methods)
    figures: dict = {}
    if default_store:
        figures = regime(params, seeds, keys)
        _print(figures, seeds, "default store")
    if sweep:
        figures["sweep"] = {}
        for name in sweep_regimes(regimes):
            figures["sweep"][name] = regime(merge(params, REGIMES[name]), seeds, keys)
            _print(figures["sweep"][name], seeds, name)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    io.write_json(figures, out)
    if default_store:
        io.write_csv(flip_plot_rows(figures["flip_by_engagement"]), flip_plot_path(out))
    return figures


def flip_plot_path(out: Path) -> Path:
    """Where ``run`` writes the default store's flip plot data: beside the JSON."""
    out = Path(out)
    return out.with_name(f"{out.stem}.flip.csv")


def flip_plot_rows(flip_by_engagement: list[dict]) -> pd.DataFrame:
    """The estimated and the true flip probability by engagement x days since shown, long, for
    ``dvc plots show F.flip.csv -t lines_by_engagement -x elapsed_days -y flip``: one line per
    engagement level and estimate (its ``engagement`` column, e.g. "carted: true"). The label_delay stage
    plots the estimate alone: only a benchmark may read the truth."""
    table = pd.DataFrame(flip_by_engagement)
    long = table.melt(
        id_vars=["engagement", "elapsed_days", "count"],
        value_vars=["estimated_flip", "true_flip"],
        var_name="estimate",
        value_name="flip",
    )
    series = long["engagement"] + ": " + long["estimate"].str.removesuffix("_flip")
    return (
        long.assign(engagement=series)[["engagement", "elapsed_days", "flip", "count"]]
        .sort_values(["engagement", "elapsed_days"])
        .reset_index(drop=True)
    )


def _print(figures: dict, seeds: int, title: str) -> None:
    data = figures["data"]
    table = Table(
        title=f"bench delay, {title}: {seeds} seed(s); {data['share_of_positives_unseen']:.1%} of training "
        f"positives unseen at the snapshot; oracle − naive AUC {figures['gap_auc']:+.4f} "
        f"(std {figures['gap_auc_std']:.4f})"
    )
    table.add_column("method")
    for m in METRICS:
        table.add_column(m, justify="right")
    table.add_column("RI-AUC", justify="right")
    table.add_column("RI-NLL", justify="right")
    table.add_column("NLL importance − method [95% CI]", justify="right")
    gaps = figures["paired_vs_importance"]["nll"]
    for key in (k for k in KEYS if k in figures):
        row = figures[key]
        ri_auc, ri_nll = figures["ri_auc"].get(key), figures["ri_nll"].get(key)
        gap = gaps.get(key)
        table.add_row(
            key,
            *[f"{row[m]:.4f}±{row['std'][m]:.4f}" for m in METRICS],
            f"{ri_auc:.2f}" if ri_auc is not None else "",
            f"{ri_nll:.2f}" if ri_nll is not None else "",
            f"{gap['mean']:+.4f} [{gap['ci95'][0]:+.4f}, {gap['ci95'][1]:+.4f}]" if gap else "",
        )
    console = Console(width=170)
    console.print(table)
    console.print(_flip_table(figures["flip_scores"], title))


def _flip_table(scores: dict, title: str) -> Table:
    table = Table(title=f"delay models' flip probability of the training negatives, {title}")
    table.add_column("estimate")
    for scope in FLIP_SCOPES:
        for column in ("NLL", "AUC", "estimated / actual flips"):
            table.add_column(f"{scope.replace('_', ' ')} {column}", justify="right")
    for method, by_scope in scores.items():
        cells = []
        for row in (by_scope[scope] for scope in FLIP_SCOPES):
            cells += [
                f"{row['nll']:.4f}" if row["nll"] is not None else "",
                f"{row['auc']:.4f}" if row["auc"] is not None else "",
                f"{row['estimated_flips']:.0f} / {row['flips']}",
            ]
        table.add_row(method, *cells)
    return table
