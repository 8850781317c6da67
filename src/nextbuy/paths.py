"""Where each stage's artifacts live, relative to the project root.

Every DVC out in dvc.yaml is a path here, and every path here is a DVC out, lies
inside one, or holds them (tests/test_dvc_yaml.py checks both ways)."""

from __future__ import annotations

from pathlib import Path

# A store's own input files: ingest and traffic depend on the whole folder (dvc.yaml).
INPUTS = Path("inputs")
INGESTED = Path("data/ingested")
PRODUCTS = INGESTED / "products.parquet"
EDGES = INGESTED / "edges.parquet"
IMPRESSIONS = INGESTED / "impressions.parquet"
REPLAY_POLICY = INGESTED / "replay_policy.parquet"  # replayed exposures' slot and propensity
# The calibration split's next purchases u -> v from the orders: the served ranking is judged on them.
NEXT_PURCHASES = INGESTED / "next_purchases.parquet"
# The source's own node features (sparse, rows = products in product_id order; (n, 0) if none).
FEATURES = INGESTED / "features.npz"
INGEST_META = INGESTED / "meta.json"

# Simulator ground truth: read by evaluation code only, never by a training stage.
TRUTH = Path("data/truth")
TRUTH_IMPRESSIONS = TRUTH / "impressions.parquet"
TRUTH_PRODUCTS = TRUTH / "products.parquet"

WEIGHTED = Path("data/weighted")
WEIGHTED_IMPRESSIONS = WEIGHTED / "impressions.parquet"
DELAY_MODEL = WEIGHTED / "delay_model.json"

GNN = Path("models/gnn")
GNN_STATE = GNN / "model.pt"
GNN_MOMENTS = GNN / "moments.npz"
GNN_META = GNN / "meta.json"

CALIBRATION = Path("models/calibration")
SCORED = CALIBRATION / "scored.parquet"
CALIBRATION_MODEL = CALIBRATION / "calibration.json"
SERVED_RANKING = CALIBRATION / "served_ranking.json"  # the served top-K order and why
COUNT_TABLES = CALIBRATION / "counts.npz"  # co-purchase counts and popularity, served with the model

THRESHOLDS = Path("models/thresholds")
THRESHOLDS_MODEL = THRESHOLDS / "thresholds.json"

DEPLOY = Path("models/deploy")
BLESSING = DEPLOY / "blessing.json"

TRAFFIC = Path("data/traffic")
TRAFFIC_IMPRESSIONS = TRAFFIC / "impressions.parquet"
TRAFFIC_META = TRAFFIC / "meta.json"
# Ground truth of simulated traffic: evaluation (benchmarks) only.
TRAFFIC_TRUTH = Path("data/traffic_truth")
TRAFFIC_TRUTH_IMPRESSIONS = TRAFFIC_TRUTH / "impressions.parquet"

MONITORING = Path("monitoring")
MONITOR_WINDOWS = MONITORING / "windows.parquet"
MONITOR_ALERTS = MONITORING / "alerts.json"

METRICS = Path("metrics")
PLOTS = Path("plots")


def metrics_file(stage: str) -> Path:
    return METRICS / f"{stage}.json"


def plots_dir(stage: str) -> Path:
    return PLOTS / stage
