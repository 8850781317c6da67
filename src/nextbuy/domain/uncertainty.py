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
from scipy.special import expit


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
    # Imported here: serving applies fitted knots and never fits, so scikit-learn stays out of
    # every process that only loads a model (the REST workers, batch-topk, Spark's executors).
    from sklearn.isotonic import IsotonicRegression

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


# --- What the uncertainty measures ------------------------------------------------------------------
#
# The claim behind per-bucket calibration ("Leveraging Uncertainty Estimates To Improve Classifier
# Performance", ICLR 2024): at the same score, more uncertain predictions convert less often. And
# estimation uncertainty should be largest where the graph holds little history (low in-degree,
# recently launched products). The functions below measure both on scored pairs.

# Fewer rows than this, constant labels or a constant uncertainty: no coefficient (None).
MIN_COEF_ROWS = 30
# A product first seen (first co-purchase edge or first impression, as either product of the pair)
# within this many days before the snapshot counts as new. A reporting constant, not a pipeline knob.
NEW_PRODUCT_DAYS = 7.0
# Lower bounds of the in-degree bands of the shown product: "0", "1-2", "3-9", "10-49", "50+".
IN_DEGREE_BANDS = (0, 1, 3, 10, 50)
_LOGIT_CLIP = 1e-6
_MAX_NEWTON_STEPS = 100
_MAX_ABS_COEF = 50.0  # beyond this the fit is separating, not estimating


def _logistic_newton(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Maximum-likelihood logistic regression of fractional labels ``y`` in [0, 1] on ``x``
    (Newton steps with step halving); the coefficients and their covariance (inverse Fisher
    information), or None when it does not converge (separation, collinear columns)."""

    def loglik(beta: np.ndarray) -> float:
        eta = x @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    beta = np.zeros(x.shape[1])
    beta[0] = np.log(y.mean() / (1.0 - y.mean()))  # column 0 is the intercept
    current = loglik(beta)
    for _ in range(_MAX_NEWTON_STEPS):
        p = expit(x @ beta)
        info = x.T @ (x * (p * (1.0 - p))[:, None])
        try:
            step = np.linalg.solve(info, x.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        for _ in range(30):  # halve the step until the likelihood does not fall
            candidate = loglik(beta + step)
            if candidate >= current - 1e-12:
                break
            step = step / 2.0
        beta, current = beta + step, candidate
        if not np.all(np.isfinite(beta)) or np.abs(beta).max() > _MAX_ABS_COEF:
            return None
        if np.abs(step).max() < 1e-10:
            break
    else:
        return None
    p = expit(x @ beta)
    info = x.T @ (x * (p * (1.0 - p))[:, None])
    if np.linalg.cond(info) > 1e12:
        return None
    return beta, np.linalg.inv(info)


def uncertainty_coefficient(score: np.ndarray, uncertainty: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """How much uncertainty moves conversion at equal score.

    Logistic regression of ``label`` (may be fractional: delay-corrected expected eventual
    labels) on ``[1, logit(score), standardised uncertainty]``. Returns the uncertainty
    coefficient (change in log-odds per standard deviation of uncertainty), its standard error
    from the inverse Fisher information, a normal 95% interval, and the rows used. Negative
    means more uncertain pairs convert less than their score says. ``coef``, ``se`` and
    ``ci95`` are None with fewer than ``MIN_COEF_ROWS`` rows, constant labels or uncertainty,
    or a fit that does not converge.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    y = np.asarray(label, dtype=np.float64).ravel()
    if not (s.shape == u.shape == y.shape):
        raise ValueError("score, uncertainty, label must have equal length")
    keep = np.isfinite(s) & np.isfinite(u) & np.isfinite(y)
    s, u, y = s[keep], u[keep], np.clip(y[keep], 0.0, 1.0)
    none: dict[str, Any] = {"coef": None, "se": None, "ci95": None, "rows": int(s.size)}
    if s.size < MIN_COEF_ROWS or u.std() <= 1e-12 * max(1.0, np.abs(u).max()) or y.min() == y.max():
        return none
    z = (u - u.mean()) / u.std()
    logit_score = np.log(np.clip(s, _LOGIT_CLIP, 1 - _LOGIT_CLIP)) - np.log1p(
        -np.clip(s, _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    )
    columns = [np.ones_like(s)]
    if np.ptp(logit_score) > 0:  # a constant score is absorbed by the intercept
        # Standardised like z (the uncertainty coefficient is unchanged): scores that barely vary
        # would otherwise need a huge slope and leave the Fisher information ill-conditioned.
        columns.append((logit_score - logit_score.mean()) / logit_score.std())
    columns.append(z)
    fit = _logistic_newton(np.column_stack(columns), y)
    if fit is None:
        return none
    beta, cov = fit
    coef, se = float(beta[-1]), float(np.sqrt(cov[-1, -1]))
    return {"coef": coef, "se": se, "ci95": [coef - 1.959964 * se, coef + 1.959964 * se], "rows": int(s.size)}


def positivity_by_score_band(
    score: np.ndarray,
    uncertainty: np.ndarray,
    label: np.ndarray,
    n_score_bands: int = 4,
    n_uncertainty_bins: int = 4,
) -> pd.DataFrame:
    """Positivity by uncertainty within bands of equal score (plot data).

    Rows are cut into score bands at score quantiles, then each band into uncertainty bins
    at the band's own uncertainty quantiles (ties merge bins, as in ``bucket_edges``).
    Columns: score_band ("0" = lowest scores), uncertainty_bin (0 = least uncertain),
    uncertainty (mean), positivity (mean label), mean_score, count.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    y = np.asarray(label, dtype=np.float64).ravel()
    if not (s.shape == u.shape == y.shape):
        raise ValueError("score, uncertainty, label must have equal length")
    band = assign_buckets(s, bucket_edges(s, n_score_bands))
    ubin = np.zeros(s.size, dtype=np.int64)
    for k in np.unique(band):
        m = band == k
        ubin[m] = assign_buckets(u[m], bucket_edges(u[m], n_uncertainty_bins))
    out = (
        pd.DataFrame({"band": band, "uncertainty_bin": ubin, "u": u, "y": y, "s": s})
        .groupby(["band", "uncertainty_bin"], sort=True)
        .agg(
            uncertainty=("u", "mean"), positivity=("y", "mean"), mean_score=("s", "mean"), count=("y", "size")
        )
        .reset_index()
    )
    out.insert(0, "score_band", out.pop("band").astype(str))
    out["count"] = out["count"].astype(np.int64)
    return out


def in_degree_band_labels(bounds: tuple[int, ...] = IN_DEGREE_BANDS) -> list[str]:
    """Names of the bands with these lower bounds: (0, 1, 3) -> "0", "1-2", "3+"."""
    labels = []
    for i, lo in enumerate(bounds):
        if i == len(bounds) - 1:
            labels.append(f"{lo}+")
        else:
            hi = bounds[i + 1] - 1
            labels.append(str(lo) if hi == lo else f"{lo}-{hi}")
    return labels


def first_seen(edges: pd.DataFrame, impressions: pd.DataFrame) -> pd.Series:
    """Per product id, the earliest time the pipeline's own data shows it: a timed co-purchase
    edge (either end) or an impression (either product). Edges without a time do not count."""
    times = [
        edges["src"].to_frame("id").assign(t=edges["time"]),
        edges["dst"].to_frame("id").assign(t=edges["time"]),
        impressions["source_id"].to_frame("id").assign(t=impressions["shown_at"]),
        impressions["shown_id"].to_frame("id").assign(t=impressions["shown_at"]),
    ]
    return pd.concat(times, ignore_index=True).dropna(subset=["t"]).groupby("id")["t"].min()


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def uncertainty_by_history(
    shown_id: np.ndarray,
    uncertainty: np.ndarray,
    edges: pd.DataFrame,
    impressions: pd.DataFrame,
    snapshot: pd.Timestamp,
    new_days: float = NEW_PRODUCT_DAYS,
    degree_bands: tuple[int, ...] = IN_DEGREE_BANDS,
) -> dict[str, Any]:
    """Mean uncertainty of pairs grouped by the history of their shown product.

    ``edges`` is the co-purchase graph (src, dst, time); the shown product's in-degree is its
    number of distinct in-edges, banded at ``degree_bands``. A product is new when it was first
    seen (``first_seen`` over ``edges`` and ``impressions``: source_id, shown_id, shown_at)
    less than ``new_days`` before ``snapshot``; a product never seen with a time is established.
    Empty groups have mean None.
    """
    ids = np.asarray(shown_id)
    u = np.asarray(uncertainty, dtype=np.float64)
    if ids.shape != u.shape:
        raise ValueError("shown_id and uncertainty must have equal length")
    degree = edges.groupby("dst").size().reindex(ids, fill_value=0).to_numpy()
    band = np.searchsorted(np.asarray(degree_bands), degree, side="right") - 1
    labels = in_degree_band_labels(degree_bands)
    seen = first_seen(edges, impressions).reindex(ids)
    new = (seen > pd.Timestamp(snapshot) - pd.Timedelta(days=new_days)).to_numpy()
    return {
        "by_in_degree": {name: _mean_or_none(u[band == k]) for k, name in enumerate(labels)},
        "rows_by_in_degree": {name: int((band == k).sum()) for k, name in enumerate(labels)},
        "new_products": _mean_or_none(u[new]),
        "established_products": _mean_or_none(u[~new]),
        "new_rows": int(new.sum()),
        "established_rows": int((~new).sum()),
        "new_within_days": float(new_days),
    }
