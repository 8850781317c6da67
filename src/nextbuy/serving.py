"""The serving model: embeddings moments + calibration + per-bucket thresholds,
as plain numpy so scoring costs little more than the dot products.

``ServingBundle`` is the pure scorer; ``NextbuyModel`` wraps it as an MLflow
pyfunc. Unknown product ids (cold start) are never an error: they are scored
with the population prior of their role (mean embedding, with the spread of all
products as variance), which yields a high uncertainty, and flagged in the
``cold_start`` column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from nextbuy.decisions import Thresholds
from nextbuy.graph.scoring import score_and_uncertainty
from nextbuy.uncertainty import BucketCalibration, assign_buckets

INPUT_COLUMNS = ("source_id", "candidate_id")
OUTPUT_COLUMNS = ("score", "uncertainty", "bucket", "prob_calibrated", "decision", "cold_start")


def _with_prior(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append one extra row: the role's population prior (law of total variance)."""
    prior_mean = mean.mean(axis=0, keepdims=True)
    prior_var = var.mean(axis=0, keepdims=True) + mean.var(axis=0, keepdims=True)
    return np.vstack([mean, prior_mean]).astype(np.float32), np.vstack([var, prior_var]).astype(np.float32)


@dataclass(frozen=True)
class ServingBundle:
    moments: dict[str, np.ndarray]  # s/t mean and var carry a last "prior" row for unknown ids
    calibration: BucketCalibration
    thresholds: Thresholds

    @property
    def n_products(self) -> int:
        return self.moments["s_mean"].shape[0] - 1

    @classmethod
    def from_arrays(cls, moments: dict[str, np.ndarray], calibration: BucketCalibration,
                    thresholds: Thresholds) -> "ServingBundle":
        m = dict(moments)
        m["s_mean"], m["s_var"] = _with_prior(m["s_mean"], m["s_var"])
        m["t_mean"], m["t_var"] = _with_prior(m["t_mean"], m["t_var"])
        return cls(m, calibration, thresholds)

    @classmethod
    def load(cls, moments_path: str | Path, calibration_path: str | Path, thresholds_path: str | Path) -> "ServingBundle":
        with np.load(moments_path) as data:
            moments = {k: data[k] for k in data.files}
        calibration = BucketCalibration.from_dict(json.loads(Path(calibration_path).read_text()))
        thresholds = Thresholds.from_dict(json.loads(Path(thresholds_path).read_text())["per_bucket"])
        return cls.from_arrays(moments, calibration, thresholds)

    def _index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = (ids >= 0) & (ids < self.n_products)
        return np.where(known, ids, self.n_products), ~known

    def score(self, source_id: np.ndarray, candidate_id: np.ndarray) -> pd.DataFrame:
        src, src_cold = self._index(np.asarray(source_id, dtype=np.int64))
        dst, dst_cold = self._index(np.asarray(candidate_id, dtype=np.int64))
        score, uncertainty = score_and_uncertainty(self.moments, src, dst)
        bucket = assign_buckets(uncertainty, self.calibration.edges)
        return pd.DataFrame({
            "score": score.astype(np.float64),
            "uncertainty": uncertainty.astype(np.float64),
            "bucket": bucket.astype(np.int64),
            "prob_calibrated": self.calibration.predict(score, uncertainty).astype(np.float64),
            "decision": self.thresholds.decide(score, bucket),
            "cold_start": src_cold | dst_cold,
        })


def validate_request(frame: pd.DataFrame) -> pd.DataFrame:
    """Refuse malformed requests with a message that says what to send."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; send columns {list(INPUT_COLUMNS)}")
    out = {}
    for col in INPUT_COLUMNS:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values != np.floor(values))
        if bad.any():
            raise ValueError(f"column '{col}' must hold integer product ids; bad rows: "
                             f"{frame.loc[bad, col].head(5).tolist()}")
        out[col] = values.to_numpy(dtype=np.int64)
    return pd.DataFrame(out)


class NextbuyModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: (source_id, candidate_id) -> score, uncertainty, bucket, prob, decision."""

    def load_context(self, context) -> None:
        a = context.artifacts
        self.bundle = ServingBundle.load(a["moments"], a["calibration"], a["thresholds"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        request = validate_request(pd.DataFrame(model_input))
        return self.bundle.score(request["source_id"].to_numpy(), request["candidate_id"].to_numpy())
