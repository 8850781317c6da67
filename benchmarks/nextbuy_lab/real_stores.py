"""`nextbuy bench real-ranking`, `real-delay`, `real-thresholds` and `real-monitor`: the
techniques measured on a real store's purchases (presets/<store>.yaml: Online Retail, The
Complete Journey), not on the simulator.

Both read the store through the pipeline's own ingest at the preset's snapshot S (exposures
replayed from its orders, ``nextbuy.domain.replay``: every figure here is on replayed
exposures) and again at the log's end, whose labels have matured: what the store really
bought next is the oracle, and no simulator is involved.

**Ranking** (:func:`ranking`): the store's next purchases after S, the co-purchase pairs u -> v
(rule 2 of ``domain.events``) completed within ``HORIZON_DAYS`` after S, one per customer and
pair, at most ``MAX_TEST_PAIRS`` drawn with a fixed seed. Each method ranks every product but u
for source u; Hits@10/20, NDCG@10 and MRR of v, and direction (the share of test pairs whose
u -> v scores above v -> u, ties half). Methods, fitted on what was known at S only:

* ``popularity``: order lines per product;
* ``co_purchase``: pairs u -> v counted (item-to-item), popularity breaking ties;
* ``mf``: a rank-``MF_RANK`` truncated SVD of the log-counted co-purchase matrix (seeded);
* ``lightgcn``: LightGCN on the co-purchase graph (``nextbuy_lab.lightgcn``: BPR, early-stopped
  on held-out pairs, one fit per seed), the GNN baseline;
* ``blade``: the pipeline's model (``train.fit`` on the label_delay stage's weighted rows),
  ranked by its mean logit, one fit per seed;
* ``served``: what the pipeline serves with that model: the calibrate stage's out-of-fold
  choice (``nextbuy.domain.served_ranking``, on the calibration split's next purchases before
  S) between the model's served order (accepted first, then calibrated probability, with the
  thresholds stage's per-bucket thresholds) and a count ranking (popularity, or co-purchase
  counts smoothed by the popularity prior chosen there).

Each method's gap to the best baseline of each figure is reported paired over seeds and paired
over the test pairs (each pair's metric averaged over seeds: the noise of drawing the test
purchases, which seeds cannot show, the count baselines being deterministic); "below the best
baseline beyond its CI" is judged on the latter, on any of Hits@10, Hits@20, NDCG@10 and MRR.

**Delay** (:func:`delay`): ``bench delay``'s comparison with the real oracle. The conversion
model trains on the exposures up to S with each weighting (labels censored at S) and on the
same rows with their labels matured at the log's end (``oracle``); all are scored on the
exposures after S whose attribution window closed before the log's end (fully matured labels).
RI = (method - naive) / (oracle - naive).

**Thresholds** (:func:`thresholds`): ``bench thresholds``' policies (one threshold, per-bucket
thresholds as served, guarded out of fold, and unguarded) fitted on the calibration rows as the
pipeline fits them, judged on those matured exposures after S.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.config import (
    CalibrateConfig,
    DeployConfig,
    IngestConfig,
    LabelDelayConfig,
    ThresholdsConfig,
    TrainConfig,
    section_config,
    with_changes,
)
from nextbuy.domain.served_ranking import RankingChoice
from nextbuy.mlops import io
from nextbuy_lab import lightgcn, paired

ROOT_PRESETS = Path("presets")
HORIZON_DAYS = 30
MAX_TEST_PAIRS = 20_000
TEST_SEED = 7
MF_RANK = 32
RANKING_KEYS = ("popularity", "co_purchase", "mf", "lightgcn", "blade", "served")
BASELINES = ("popularity", "co_purchase", "mf", "lightgcn")
DELAY_KEYS = ("naive", "wait", "importance", "importance_ipw", "oracle")
BENCH_TRAIN = {"epochs": 6, "patience": 2, "ensemble_members": 2, "ensemble_epochs": 1, "em_rounds": 0}


def store_params(store: str, params_file: str = "params.yaml") -> dict:
    """params.yaml with presets/<store>.yaml applied, and the bench's training budget."""
    from nextbuy.config import merge
    from nextbuy.presets import params_with

    params = params_with(ROOT_PRESETS / f"{store}.yaml", params_file)
    return merge(params, {"train": BENCH_TRAIN})


def window(params: dict) -> float:
    """The store's attribution window in days: the delay model is truncated there, as the
    pipeline's label_delay stage truncates it (ingest's meta)."""
    return section_config(params, IngestConfig).events.attribution_days


def at_snapshot_and_end(params: dict):
    """The store ingested at the preset's snapshot and at the log's end (labels matured)."""
    from nextbuy.stages import ingest

    cfg = section_config(params, IngestConfig)
    now = ingest.ingest(cfg)
    later = ingest.ingest(with_changes(cfg, snapshot=None))
    if not now.products.equals(later.products):
        raise ValueError("the products of one export differ between its snapshots")
    return now, later


def orders_of(params: dict):
    """The store's order lines as the pipeline reads them (every line, to the log's end)."""
    from nextbuy.data.sources import read_event_logs

    cfg = section_config(params, IngestConfig)
    ev = cfg.events
    logs = read_event_logs(
        str(ev.orders_path), None, None, cfg.catalogue_path, None, cfg.max_event_gap_days, ev
    )
    return logs.orders


def test_pairs(params: dict, orders: pd.DataFrame, snapshot: pd.Timestamp) -> pd.DataFrame:
    """The next purchases after the snapshot: (u, v) pairs of rule 2 with both orders within
    HORIZON_DAYS after it, one per customer and pair, at most MAX_TEST_PAIRS."""
    from nextbuy.domain import events

    after = (orders["ordered_at"] > snapshot) & (
        orders["ordered_at"] <= snapshot + pd.Timedelta(days=HORIZON_DAYS)
    )
    pairs = events.next_purchases(orders[after], section_config(params, IngestConfig).events)
    pairs = pairs.drop_duplicates(["customer", "source_id", "next_id"])
    if len(pairs) > MAX_TEST_PAIRS:
        pairs = pairs.sample(MAX_TEST_PAIRS, random_state=TEST_SEED)
    return pairs.rename(columns={"source_id": "u", "next_id": "v"})[["u", "v"]].reset_index(drop=True)


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {
        "hits@10": float((ranks <= 10).mean()),
        "hits@20": float((ranks <= 20).mean()),
        "ndcg@10": float(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0).mean()),
        "mrr": float((1 / ranks).mean()),
    }


def per_pair(ranks: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` of each test pair from its rank (the mean is :func:`ranking_metrics`')."""
    if metric.startswith("hits@"):
        return (ranks <= int(metric.split("@")[1])).astype(np.float64)
    if metric == "ndcg@10":
        return np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0)
    return 1 / ranks


def pair_gap(ranks: list[np.ndarray], base: list[np.ndarray], metric: str) -> dict:
    """Mean and 95% CI of ``metric`` minus ``base``'s over the test pairs, each pair's metric
    averaged over the seeds."""
    gap = np.mean([per_pair(r, metric) for r in ranks], axis=0) - np.mean(
        [per_pair(r, metric) for r in base], axis=0
    )
    half = 1.96 * gap.std(ddof=1) / np.sqrt(len(gap))
    return {"mean": float(gap.mean()), "ci95": [float(gap.mean() - half), float(gap.mean() + half)]}


def direction(score_pair, u: np.ndarray, v: np.ndarray) -> float:
    """Share of test pairs scored u -> v above v -> u (ties half)."""
    forward, backward = score_pair(u, v), score_pair(v, u)
    return float(((forward > backward) + 0.5 * (forward == backward)).mean())


def _rankers(now, orders: pd.DataFrame, params: dict, seed: int) -> tuple[dict, RankingChoice]:
    """Each method as (rows scorer, pair scorer), and which ranking the pipeline serves."""
    from scipy.special import expit
    from sklearn.utils.extmath import randomized_svd

    from nextbuy.domain import retrieval, served_ranking
    from nextbuy.domain.graph.scoring import all_targets_logit_moments, pair_logit_moments, serving_score
    from nextbuy.domain.uncertainty import assign_buckets
    from nextbuy.stages import calibrate, ingest, label_delay, thresholds, train

    n = len(now.products)
    edges = now.edges
    tables = served_ranking.CountTables.from_edges(
        edges["src"].to_numpy(), edges["dst"].to_numpy(), edges["weight"].to_numpy(), n
    )
    out = {
        ranker: (
            lambda su, ranker=ranker: tables.scores(ranker, su),
            lambda a, b, ranker=ranker: tables.pair_scores(ranker, a, b),
        )
        for ranker in ("popularity", "co_purchase")
    }
    counts = sp.csr_matrix((tables.counts, tables.indices, tables.indptr), shape=(n, n))
    left, sigma, right = randomized_svd(counts.log1p(), MF_RANK, random_state=seed)
    us, vt = left * sigma, right
    out["mf"] = (lambda su: us[su] @ vt, lambda a, b: (us[a] * vt[:, b].T).sum(axis=1))
    embedding = lightgcn.fit(edges["src"].to_numpy(), edges["dst"].to_numpy(), n, seed)
    out["lightgcn"] = (
        lambda su: embedding[su] @ embedding.T,
        lambda a, b: (embedding[a] * embedding[b]).sum(axis=1),
    )
    delay_cfg = section_config(params, LabelDelayConfig)
    weighted, _ = label_delay.weigh(
        now.impressions, now.snapshot, delay_cfg, now.products, now.edges, window(params)
    )
    cfg = with_changes(section_config(params, TrainConfig), seed=seed, uncertainty="mc_dropout")
    graph = train.build_graph(now.products, now.edges, now.features)
    _, moments, _ = train.fit(graph, weighted, cfg, delay_family=delay_cfg.delay_family, progress=False)

    w = np.asarray(moments["head_w"], dtype=np.float32).reshape(-1)
    targets = moments["t_mean"][:n].T

    def blade_rows(su: np.ndarray) -> np.ndarray:  # the mean logit, as pair_logit_moments
        return (moments["s_mean"][su] * w) @ targets

    out["blade"] = (blade_rows, lambda a, b: expit(pair_logit_moments(moments, a, b)[0]))

    # What the pipeline serves: calibrate's choice on the calibration split's next purchases,
    # then its order (the model's served key: accepted first, then calibrated probability).
    calibrate_cfg = section_config(params, CalibrateConfig)
    scored, calibration = calibrate.score_holdout(weighted, moments, calibrate_cfg)
    policy, _ = thresholds.fit(scored, calibration.n_buckets, section_config(params, ThresholdsConfig))
    ingest_cfg = section_config(params, IngestConfig)
    held_out = ingest.held_out_purchases(now.products, orders, now.snapshot, ingest_cfg)
    choice, _ = calibrate.choose_ranking(
        held_out, weighted, moments, calibration, edges, calibrate_cfg.served_ranking
    )

    served_tables = tables.with_prior(choice.prior)

    def served_rows(su: np.ndarray) -> np.ndarray:
        if choice.served != "model":
            return served_tables.scores(choice.served, su)
        score, uncertainty = serving_score(*all_targets_logit_moments(moments, su, n))
        bucket = assign_buckets(uncertainty, calibration.edges)
        return retrieval.ranking_key(score, bucket, calibration, policy)[2]

    def served_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if choice.served == "model":
            return out["blade"][1](a, b)
        return served_tables.pair_scores(choice.served, a, b)

    out["served"] = (served_rows, served_pair)
    return out, choice


def ranking(store: str, seeds: int, params_file: str = "params.yaml") -> dict:
    from nextbuy.domain.served_ranking import ranks_by

    params = store_params(store, params_file)
    now, _ = at_snapshot_and_end(params)
    orders = orders_of(params)
    pairs = test_pairs(params, orders, now.snapshot)
    u, v = pairs["u"].to_numpy(np.int64), pairs["v"].to_numpy(np.int64)
    n = len(now.products)
    per_seed, served, priors = [], [], []
    ranks_of: dict[str, list[np.ndarray]] = {key: [] for key in RANKING_KEYS}
    for s in range(seeds):
        rankers, chosen = _rankers(now, orders, params, seed=s)
        served.append(chosen.served)
        priors.append(chosen.prior)
        row = {}
        for key, (rows, pair) in rankers.items():
            ranks = ranks_by(lambda su, _, rows=rows: rows(su), u, v, n)
            ranks_of[key].append(ranks)
            row[key] = ranking_metrics(ranks) | {"direction": direction(pair, u, v)}
            print(f"seed {s} {key}: {row[key]}", flush=True)
        per_seed.append(row)
    metrics = ("hits@10", "hits@20", "ndcg@10", "mrr", "direction")
    figures: dict = {"methods": {}}
    for key in RANKING_KEYS:
        values = {m: np.array([row[key][m] for row in per_seed]) for m in metrics}
        figures["methods"][key] = {
            m: {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0}
            for m, x in values.items()
        }
    best = max(BASELINES, key=lambda k: figures["methods"][k]["hits@20"]["mean"])
    figures["best_baseline"] = best
    figures["served_ranking_per_seed"] = served
    figures["served_prior_per_seed"] = priors
    ranked = ("hits@10", "hits@20", "ndcg@10", "mrr")
    # The best baseline of each figure (they need not agree: popularity may lead on the top
    # ranks and counts at 20); a method is below when it is below any of them beyond the CI.
    best_of = {m: max(BASELINES, key=lambda k, m=m: figures["methods"][k][m]["mean"]) for m in ranked}
    figures["best_baseline_of"] = best_of
    for method in ("blade", "served"):
        figures[f"paired_{method}_minus"] = {
            m: paired.paired_gaps(per_seed, method, m, BASELINES) for m in metrics
        }
        # Over the test pairs (each pair's metric averaged over seeds): the noise of drawing
        # these next purchases, which seeds do not show (the count baselines are deterministic).
        figures[f"pairs_{method}_minus_best"] = {
            m: {"baseline": best_of[m]} | pair_gap(ranks_of[method], ranks_of[best_of[m]], m) for m in ranked
        }
        below = [m for m in ranked if figures[f"pairs_{method}_minus_best"][m]["ci95"][1] < 0]
        figures[f"{method}_below_best_baseline_on"] = below
        figures[f"{method}_below_best_baseline_beyond_ci"] = bool(below)
    figures["data"] = {
        "store": store,
        "snapshot": str(now.snapshot),
        "products": n,
        "test_pairs": len(pairs),
        "horizon_days": HORIZON_DAYS,
        "exposures": "replayed",
    }
    return figures


def delay(store: str, seeds: int, params_file: str = "params.yaml") -> dict:
    from nextbuy.stages import label_delay
    from nextbuy_lab.delay import _aggregate, _one_seed, oracle_rows

    params = store_params(store, params_file)
    now, later = at_snapshot_and_end(params)
    delay_cfg = section_config(params, LabelDelayConfig)
    weighted, _ = label_delay.weigh(
        now.impressions, now.snapshot, delay_cfg, now.products, now.edges, window(params)
    )
    converted = later.impressions["converted_at"].notna().astype(np.int8)
    truth = later.impressions.assign(label_eventual=converted)[["impression_id", "label_eventual"]]
    test = matured_after(params, now, later)
    train_cfg = section_config(params, TrainConfig)
    per_seed = [
        _one_seed(
            now,
            weighted,
            oracle_rows(weighted, truth),
            test,
            train_cfg,
            delay_cfg.delay_family,
            train_cfg.seed + s,
            DELAY_KEYS,
        )
        for s in range(seeds)
    ]
    figures = _aggregate(per_seed)
    train_rows = weighted["split"] == "train"
    eventual = truth.set_index("impression_id")["label_eventual"]
    eventual = eventual.reindex(weighted["impression_id"][train_rows])
    observed = weighted.loc[train_rows, "label"]
    figures["paired_importance_minus_naive"] = {
        m: paired.paired_gaps(per_seed, "importance", m, ("naive",))["naive"] for m in ("auc", "nll")
    }
    figures["data"] = {
        "store": store,
        "snapshot": str(now.snapshot),
        "train_impressions": int(train_rows.sum()),
        "train_positives_observed": int(observed.sum()),
        "train_positives_matured": int(eventual.sum()),
        "share_of_positives_unseen_at_snapshot": float(1 - observed.sum() / max(eventual.sum(), 1)),
        "test_impressions": len(test),
        "test_positives": int(test["label_eventual"].sum()),
        "exposures": "replayed",
    }
    return figures


def matured_after(params: dict, now, later) -> pd.DataFrame:
    """The exposures after the snapshot whose attribution window closed before the log's end,
    with their labels as the log's end knows them (``label_eventual``)."""
    matured = later.impressions.assign(
        label_eventual=later.impressions["converted_at"].notna().astype(np.int8)
    )
    window = pd.Timedelta(days=section_config(params, IngestConfig).events.attribution_days)
    end = matured[["shown_at", "converted_at"]].max().max()
    after = (matured["shown_at"] > now.snapshot) & (matured["shown_at"] <= end - window)
    return matured.loc[after, ["impression_id", "source_id", "shown_id", "label_eventual"]]


def thresholds(store: str, seeds: int, params_file: str = "params.yaml") -> dict:
    """Per-bucket thresholds against one threshold, fitted as the pipeline fits them (the
    calibrate and thresholds stages' cores on the matured calibration rows), judged on the
    exposures after the snapshot with their matured labels; ``bench thresholds``' policies and
    targets (multiples of the fit rows' positive rate)."""
    from nextbuy.domain.evaluation import fit_rows
    from nextbuy.domain.graph.scoring import score_and_uncertainty
    from nextbuy.domain.uncertainty import uncertainty_by_history, uncertainty_coefficient
    from nextbuy.stages import calibrate, label_delay, train
    from nextbuy_lab.threshold_policies import aggregate
    from nextbuy_lab.thresholds import TARGET_LIFTS, _policy_rows, _test_arrays, precision_targets

    params = store_params(store, params_file)
    now, later = at_snapshot_and_end(params)
    test = matured_after(params, now, later)
    delay_cfg = section_config(params, LabelDelayConfig)
    weighted, _ = label_delay.weigh(
        now.impressions, now.snapshot, delay_cfg, now.products, now.edges, window(params)
    )
    calibrate_cfg = section_config(params, CalibrateConfig)
    thresholds_cfg = section_config(params, ThresholdsConfig)
    graph = train.build_graph(now.products, now.edges, now.features)
    per_seed = []
    for s in range(seeds):
        cfg = with_changes(section_config(params, TrainConfig), seed=s)
        _, moments, _ = train.fit(graph, weighted, cfg, delay_family=delay_cfg.delay_family, progress=False)
        scored, calibration = calibrate.score_holdout(weighted, moments, calibrate_cfg)
        score, uncertainty = score_and_uncertainty(
            moments, test["source_id"].to_numpy(), test["shown_id"].to_numpy()
        )
        arrays = _test_arrays(score, uncertainty, calibration, test)
        base_rate = float(scored.loc[fit_rows(scored), "label"].mean())
        per_seed.append(
            {
                cfg.uncertainty: {
                    "rows": _policy_rows(
                        scored,
                        calibration,
                        arrays,
                        precision_targets(base_rate, TARGET_LIFTS),
                        thresholds_cfg,
                    ),
                    "coefficient": uncertainty_coefficient(
                        arrays["score"], arrays["uncertainty"], arrays["label"]
                    ),
                    "by_history": uncertainty_by_history(
                        test["shown_id"].to_numpy(),
                        arrays["uncertainty"],
                        now.edges,
                        now.impressions,
                        now.snapshot,
                    ),
                }
            }
        )
        print(f"seed {s}: {per_seed[-1][cfg.uncertainty]['rows'][:2]}", flush=True)
    figures = aggregate(per_seed, TARGET_LIFTS)
    rows = next(v for k, v in figures.items() if isinstance(v, list))
    served_below = [
        r for r in rows if r["feasible"] and r["gain_ci_high"] is not None and r["gain_ci_high"] < 0
    ]
    figures["served_below_single_beyond_ci"] = bool(served_below)
    figures["data"] = {
        "store": store,
        "snapshot": str(now.snapshot),
        "test_impressions": len(test),
        "test_positives": int(test["label_eventual"].sum()),
        "exposures": "replayed",
    }
    return figures


def monitor(store: str, seeds: int, params_file: str = "params.yaml") -> dict:
    """What the monitor saw in the store's real months after the snapshot, month by month: the
    windows of the preset's pipeline run in this workspace (``make run-preset
    PRESET=presets/<store>.yaml`` first; refused when the workspace's monitor watched another
    model). Per month: exposures, predicted positivity, the delay-corrected estimate and the
    naive one (volume-weighted over windows and buckets), and the alerts each would raise."""
    from nextbuy import paths

    params = store_params(store, params_file)
    model = section_config(params, DeployConfig).model_name
    metrics = io.read_json(paths.metrics_file("monitor"))
    if metrics.get("model_name") != model or not metrics.get("monitored"):
        raise ValueError(
            f"the workspace's monitor watched {metrics.get('model_name')!r}, not {model!r}: "
            f"run make run-preset PRESET=presets/{store}.yaml first"
        )
    windows = pd.read_parquet(paths.MONITOR_WINDOWS)
    windows["month"] = windows["window_start"].dt.strftime("%Y-%m")
    rows = []
    for month, part in windows.groupby("month", sort=True):
        weight = part["volume"].to_numpy(np.float64)
        columns = ("predicted", "estimated", "naive")
        means = {c: float(np.average(part[c].fillna(0), weights=weight)) for c in columns}
        rows.append(
            {
                "month": month,
                "windows": int(part["window"].nunique()),
                "exposures": int(weight.sum()),
                **means,
                "alerts": int(part["alert"].sum()),
                "naive_alerts": int(part["naive_alert"].sum()),
            }
        )
    return {
        "months": rows,
        "alerts": int(metrics["alerts"]),
        "naive_alerts": int(metrics["naive_alerts"]),
        "first_alert": metrics.get("first_alert"),
        "model_version": metrics.get("champion_version"),
        "data": {
            "store": store,
            "snapshot": str(section_config(params, IngestConfig).snapshot),
            "exposures": "replayed",
        },
    }


BENCHES = {"ranking": ranking, "delay": delay, "thresholds": thresholds, "monitor": monitor}


def run(kind: str, out: Path, store: str, seeds: int, params_file: str = "params.yaml") -> dict:
    started = time.time()
    figures = BENCHES[kind](store, seeds, params_file)
    if kind != "monitor":  # the monitor's figures are one pipeline run's, no training seeds
        figures["seeds"] = seeds
    figures["bench_seconds"] = round(time.time() - started, 1)
    io.write_json(figures, out)
    return figures
