"""Uncertainty buckets and per-bucket calibration.

At equal score, high-uncertainty predictions convert less often, so one
score→probability map for everything is miscalibrated in every bucket. We
cut uncertainty at quantiles into a few buckets and fit one isotonic map per
bucket. The fitted maps are stored as isotonic knots so serving evaluates
them with ``np.interp`` (no scikit-learn needed at serving time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression


def bucket_edges(uncertainty: np.ndarray, n_buckets: int) -> np.ndarray:
    """Inner bucket edges at uncertainty quantiles, strictly increasing.

    Edges are data values so that with ``assign_buckets``
    (bucket k = [edge_{k-1}, edge_k)) no bucket is empty on the fitting data;
    tied quantiles are merged, so heavily tied data gets fewer buckets.
    """
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if n_buckets < 1:
        raise ValueError("n_buckets must be >= 1")
    if u.size == 0 or n_buckets == 1:
        return np.empty(0, dtype=np.float64)
    if not np.all(np.isfinite(u)):
        raise ValueError("uncertainty must be finite")
    # Edge for quantile q: the smallest data value with at least a share q of
    # the rows strictly below it. With ties this moves the cut to the next
    # distinct value (a mass of ties at the minimum still gets its own bucket)
    # instead of collapsing it, and the minimum itself can never be an edge.
    values, n_below = np.unique(np.sort(u), return_index=True)
    q = np.arange(1, n_buckets) / n_buckets
    j = np.searchsorted(n_below, q * u.size - 1e-9, side="left")
    return np.unique(values[j[j < values.size]])


def assign_buckets(uncertainty: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index per row; 0 = least uncertain, len(edges) = most."""
    u = np.asarray(uncertainty, dtype=np.float64)
    return np.searchsorted(np.asarray(edges, dtype=np.float64), u, side="right").astype(np.int64)


@dataclass(frozen=True, eq=False)  # eq=False: array fields make field-wise == ambiguous
class BucketCalibration:
    """Per-uncertainty-bucket isotonic calibration, stored as knots."""

    edges: np.ndarray
    knots_x: list[np.ndarray]
    knots_y: list[np.ndarray]
    # Which buckets fell back to the global fit (too small / one class); for reports.
    used_global: tuple[bool, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", np.asarray(self.edges, dtype=np.float64).ravel())
        object.__setattr__(self, "knots_x", [np.asarray(x, dtype=np.float64) for x in self.knots_x])
        object.__setattr__(self, "knots_y", [np.asarray(y, dtype=np.float64) for y in self.knots_y])
        object.__setattr__(self, "used_global", tuple(bool(b) for b in self.used_global))
        if len(self.knots_x) != self.n_buckets or len(self.knots_y) != self.n_buckets:
            raise ValueError("need one knot set per bucket (len(edges) + 1)")
        if any(x.shape != y.shape or x.size == 0 for x, y in zip(self.knots_x, self.knots_y, strict=False)):
            raise ValueError("knots_x and knots_y must be non-empty and of equal length per bucket")

    @property
    def n_buckets(self) -> int:
        return self.edges.size + 1

    def bucket(self, uncertainty: np.ndarray) -> np.ndarray:
        return assign_buckets(uncertainty, self.edges)

    def predict(self, score: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
        """Calibrated probability; np.interp clips outside the knots like out_of_bounds='clip'."""
        return self.predict_in_bucket(score, self.bucket(uncertainty))

    def predict_in_bucket(self, score: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Calibrated probability when the bucket of each row is already known."""
        s = np.asarray(score, dtype=np.float64)
        b = np.asarray(bucket)
        out = np.empty_like(s)
        for k in range(self.n_buckets):  # loop over buckets, not rows
            m = b == k
            out[m] = np.interp(s[m], self.knots_x[k], self.knots_y[k])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "knots_x": [x.tolist() for x in self.knots_x],
            "knots_y": [y.tolist() for y in self.knots_y],
            "used_global": list(self.used_global),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BucketCalibration:
        return cls(
            edges=np.asarray(d["edges"], dtype=np.float64),
            knots_x=[np.asarray(x) for x in d["knots_x"]],
            knots_y=[np.asarray(y) for y in d["knots_y"]],
            used_global=tuple(d.get("used_global", ())),
        )


def _isotonic_knots(
    score: np.ndarray, label: np.ndarray, weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    iso.fit(score, label, sample_weight=weight)
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def fit_bucket_calibration(
    score: np.ndarray,
    uncertainty: np.ndarray,
    label: np.ndarray,
    n_buckets: int,
    min_bucket_size: int,
    sample_weight: np.ndarray | None = None,
) -> BucketCalibration:
    """One isotonic map per uncertainty bucket.

    A bucket with fewer than ``min_bucket_size`` rows, or whose labels are all
    equal (an isotonic fit would then predict exactly 0 or 1 everywhere), uses
    the global fit instead. ``label`` may be fractional (expected eventual labels).
    """
    s = np.asarray(score, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if not (s.shape == u.shape == y.shape) or s.ndim != 1 or s.size == 0:
        raise ValueError("score, uncertainty, label must be non-empty 1-d arrays of equal length")
    if w is not None and w.shape != s.shape:
        raise ValueError("sample_weight must match score")

    edges = bucket_edges(u, n_buckets)
    b = assign_buckets(u, edges)
    gx, gy = _isotonic_knots(s, y, w)
    knots_x, knots_y, used_global = [], [], []
    for k in range(edges.size + 1):
        m = b == k
        yk = y[m]
        fallback = bool(m.sum() < max(min_bucket_size, 1) or yk.min() == yk.max())
        kx, ky = (gx, gy) if fallback else _isotonic_knots(s[m], yk, None if w is None else w[m])
        knots_x.append(kx)
        knots_y.append(ky)
        used_global.append(fallback)
    return BucketCalibration(edges=edges, knots_x=knots_x, knots_y=knots_y, used_global=tuple(used_global))


def _bin_index(prob: np.ndarray, n_bins: int) -> np.ndarray:
    # Equal-width bins on [0, 1]; prob == 1 goes to the last bin.
    return np.clip(np.floor(prob * n_bins), 0, n_bins - 1).astype(np.int64)


def reliability_table(
    prob: np.ndarray,
    label: np.ndarray,
    n_bins: int = 10,
    bucket: np.ndarray | None = None,
) -> pd.DataFrame:
    """Reliability-diagram rows (non-empty bins only), optionally per bucket.

    Columns: [bucket,] bin, mean_predicted, observed_rate, count.
    """
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    df = pd.DataFrame({"bin": _bin_index(p, n_bins), "p": p, "y": y})
    keys = ["bin"]
    if bucket is not None:
        df.insert(0, "bucket", np.asarray(bucket, dtype=np.int64))
        keys = ["bucket", "bin"]
    out = (
        df.groupby(keys, sort=True)
        .agg(mean_predicted=("p", "mean"), observed_rate=("y", "mean"), count=("y", "size"))
        .reset_index()
    )
    out["count"] = out["count"].astype(np.int64)
    return out


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |mean predicted - observed rate| over equal-width bins."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    if p.size == 0:
        return 0.0
    idx = _bin_index(p, n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    # |sum_p - sum_y| / n == sum_bins (count/n) * |mean_p - mean_y|
    return float(np.abs(sum_p - sum_y).sum() / p.size)
