"""The serving model: embedding moments + calibration + per-bucket thresholds,
as plain numpy so scoring costs little more than the dot products.

``ServingBundle`` is the pure scorer (pairs and top-K); ``NextbuyModel`` wraps
it as an MLflow pyfunc.

Cold start: an unknown product id (never seen in training, or negative) is not
an error. It is scored with the population prior of its role — the mean
embedding, with the spread of all products added to its variance — which gives
a popularity-level score with a high uncertainty (so it lands in the most
uncertain bucket and its strictest threshold), and ``cold_start`` is True.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.uncertainty import BucketCalibration, assign_buckets

INPUT_COLUMNS = ("source_id", "candidate_id")
PAIR_COLUMNS = ("score", "uncertainty", "bucket", "prob_calibrated", "decision", "cold_start")
TOPK_COLUMNS = ("source_id", "rank", "candidate_id", *PAIR_COLUMNS)
MAX_REQUEST_ROWS = 100_000  # REST guard: larger batches belong to `nextbuy batch-topk`
# Cells (sources x candidates) scored at once in top-K: bounds memory (~40 B a cell).
TOPK_CHUNK_CELLS = 1 << 22


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
    def from_arrays(
        cls, moments: dict[str, np.ndarray], calibration: BucketCalibration, thresholds: Thresholds
    ) -> ServingBundle:
        m = dict(moments)
        m["s_mean"], m["s_var"] = _with_prior(m["s_mean"], m["s_var"])
        m["t_mean"], m["t_var"] = _with_prior(m["t_mean"], m["t_var"])
        return cls(m, calibration, thresholds)

    @classmethod
    def load(
        cls, moments_path: str | Path, calibration_path: str | Path, thresholds_path: str | Path
    ) -> ServingBundle:
        with np.load(moments_path) as data:
            moments = {k: data[k] for k in data.files}
        calibration = BucketCalibration.from_dict(json.loads(Path(calibration_path).read_text()))
        thresholds = Thresholds.from_dict(json.loads(Path(thresholds_path).read_text())["per_bucket"])
        return cls.from_arrays(moments, calibration, thresholds)

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ServingBundle:
        """Load from a downloaded MLflow model directory (artifacts/ inside)."""
        artifacts = Path(path) / "artifacts"
        return cls.load(
            artifacts / "moments.npz", artifacts / "calibration.json", artifacts / "thresholds.json"
        )

    def _index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = (ids >= 0) & (ids < self.n_products)
        return np.where(known, ids, self.n_products), ~known

    def _decide(self, score: np.ndarray, uncertainty: np.ndarray):
        bucket = assign_buckets(uncertainty, self.calibration.edges)
        prob = self.calibration.predict_in_bucket(score, bucket)
        return bucket, prob, self.thresholds.decide(score, bucket)

    def score(self, source_id: np.ndarray, candidate_id: np.ndarray) -> pd.DataFrame:
        src, src_cold = self._index(np.asarray(source_id, dtype=np.int64))
        dst, dst_cold = self._index(np.asarray(candidate_id, dtype=np.int64))
        score, uncertainty = score_and_uncertainty(self.moments, src, dst)
        bucket, prob, decision = self._decide(score, uncertainty)
        return pd.DataFrame(
            {
                "score": score,
                "uncertainty": uncertainty,
                "bucket": bucket.astype(np.int64),
                "prob_calibrated": prob,
                "decision": decision,
                "cold_start": src_cold | dst_cold,
            }
        )

    def _all_candidates(self, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score and uncertainty of sources x every known product, as matrix products."""
        m = self.moments
        n = self.n_products
        w = m["head_w"].astype(np.float32)
        w2 = w * w
        s_mu, s_var = m["s_mean"][src], m["s_var"][src]
        t_mu, t_var = m["t_mean"][:n], m["t_var"][:n]
        mean = (s_mu * w) @ t_mu.T + np.float32(m["head_b"].reshape(-1)[0])
        # var = sum_i w_i^2 (s̄_i^2 σ²t_i + σ²s_i (t̄_i^2 + σ²t_i)), same as pair_logit_moments.
        var = (s_mu * s_mu * w2) @ t_var.T + (s_var * w2) @ (t_mu * t_mu + t_var).T
        np.maximum(var, 0.0, out=var)
        z = mean / np.sqrt(1.0 + np.float32(np.pi / 8.0) * var)
        score = 0.5 * (1.0 + np.tanh(0.5 * z))
        return score, np.sqrt(var)

    def top_k(self, source_id: np.ndarray, k: int, exclude_self: bool = True) -> pd.DataFrame:
        """Top-k candidates per source among all known products: accepted first,
        then by calibrated probability (score breaks ties between isotonic steps).

        Exact, and cheap: within one bucket that ranking key rises strictly with
        score (per-bucket threshold and isotonic calibration are monotone), so the
        overall top-k lies among each bucket's top-k by score; only those
        n_buckets * k candidates per source are calibrated and decided.
        """
        sources = np.asarray(source_id, dtype=np.int64)
        n = self.n_products
        k = int(min(k, n - 1 if exclude_self else n))
        if k <= 0 or sources.size == 0:
            return self.top_k(np.zeros(1, dtype=np.int64), max(k, 1), exclude_self=False).iloc[:0]
        idx, cold = self._index(sources)
        n_buckets = len(self.calibration.edges) + 1
        rows_per_chunk = max(1, TOPK_CHUNK_CELLS // n)
        parts = []
        for a in range(0, sources.size, rows_per_chunk):
            src = idx[a : a + rows_per_chunk]
            rows = np.arange(src.size)[:, None]
            score, uncertainty = self._all_candidates(src)
            if exclude_self:
                known = src < n
                score[np.flatnonzero(known), src[known]] = -np.inf
            bucket = assign_buckets(uncertainty.ravel(), self.calibration.edges).reshape(score.shape)
            per_bucket = [
                np.argpartition(-np.where(bucket == b, score, -np.inf), k - 1, axis=1)[:, :k]
                for b in range(n_buckets)
            ]
            cand = np.concatenate(per_bucket, axis=1)
            c_score, c_unc, c_bucket = score[rows, cand], uncertainty[rows, cand], bucket[rows, cand]
            valid = np.isfinite(c_score) & (c_bucket == np.repeat(np.arange(n_buckets), k)[None, :])
            c_prob = self.calibration.predict_in_bucket(c_score, c_bucket)
            c_decision = self.thresholds.decide(c_score, c_bucket)
            key = np.where(valid, c_decision * 4.0 + c_prob * 2.0 + c_score * 1e-6, -np.inf)
            order = np.argsort(-key, axis=1, kind="stable")[:, :k]

            def pick(m: np.ndarray, order: np.ndarray = order) -> np.ndarray:
                return np.take_along_axis(m, order, axis=1).ravel()

            parts.append(
                pd.DataFrame(
                    {
                        "source_id": np.repeat(sources[a : a + rows_per_chunk], k),
                        "rank": np.tile(np.arange(1, k + 1), src.size),
                        "candidate_id": pick(cand).astype(np.int64),
                        "score": pick(c_score).astype(np.float64),
                        "uncertainty": pick(c_unc).astype(np.float64),
                        "bucket": pick(c_bucket).astype(np.int64),
                        "prob_calibrated": pick(c_prob),
                        "decision": pick(c_decision),
                        "cold_start": np.repeat(cold[a : a + rows_per_chunk], k),
                    }
                )
            )
        return pd.concat(parts, ignore_index=True)


def validate_request(
    frame: pd.DataFrame, max_rows: int = MAX_REQUEST_ROWS, need_candidates: bool = True
) -> pd.DataFrame:
    """Refuse malformed requests with a message that says what to send (HTTP 400 when served)."""
    wanted = INPUT_COLUMNS if need_candidates else INPUT_COLUMNS[:1]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise MlflowException.invalid_parameter_value(
            f"missing column(s) {missing}; send columns {list(wanted)} with integer product ids"
        )
    if len(frame) == 0:
        raise MlflowException.invalid_parameter_value("empty request: send at least one row")
    if len(frame) > max_rows:
        raise MlflowException.invalid_parameter_value(
            f"{len(frame)} rows in one request; the limit is {max_rows} "
            "(use `nextbuy batch-topk` for bulk scoring)"
        )
    out = {}
    for col in wanted:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values != np.floor(values))
        if bad.any():
            raise MlflowException.invalid_parameter_value(
                f"column '{col}' must hold integer product ids; "
                f"first bad values: {frame.loc[bad, col].head(5).tolist()}"
            )
        out[col] = values.to_numpy(dtype=np.int64)
    return pd.DataFrame(out)


class NextbuyModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc.

    Pairs: rows of (source_id, candidate_id) -> score, uncertainty, bucket,
    prob_calibrated, decision, cold_start.
    Recommendations: params {"top_k": K} with rows of source_id -> the K best
    candidates per source (accepted first, by calibrated probability).
    """

    def load_context(self, context) -> None:
        a = context.artifacts
        self.bundle = ServingBundle.load(a["moments"], a["calibration"], a["thresholds"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k") or 0)
        request = validate_request(pd.DataFrame(model_input), need_candidates=top_k <= 0)
        if top_k > 0:
            return self.bundle.top_k(request["source_id"].drop_duplicates().to_numpy(), top_k)
        return self.bundle.score(request["source_id"].to_numpy(), request["candidate_id"].to_numpy())
