"""How good a set of decisions is: precision and recall (weighted, soft labels) and the
precision-recall curve drawn for DVC plots."""

from __future__ import annotations

import numpy as np
import pandas as pd


def precision_recall(
    decisions: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None
) -> dict[str, float]:
    """Precision / recall of boolean decisions, optionally weighted.

    ``label`` may be fractional in [0, 1] (expected eventual labels, for
    delay-corrected evaluation) and ``weight`` a per-row weight. Precision is
    0.0 when nothing is accepted, recall 0.0 when there are no positives.
    """
    d = np.asarray(decisions, dtype=bool)
    y = np.asarray(label, dtype=np.float64)
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
    if not (d.shape == y.shape == w.shape):
        raise ValueError("decisions, label and weight must have equal shapes")
    tp = float(np.sum(w * y * d))
    accepted = float(np.sum(w * d))
    positives = float(np.sum(w * y))
    return {
        "precision": tp / accepted if accepted > 0 else 0.0,
        "recall": tp / positives if positives > 0 else 0.0,
        "accepted": accepted,
        "positives": positives,
        "true_positives": tp,
    }


def pr_curve_table(score: np.ndarray, label: np.ndarray, max_points: int = 200) -> pd.DataFrame:
    """Precision-recall curve (columns precision, recall, threshold), evenly
    downsampled to at most ``max_points`` rows for DVC plots."""
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label)
    if s.size == 0 or not np.any(y == 1):
        return pd.DataFrame({"precision": [], "recall": [], "threshold": []}, dtype=np.float64)
    from sklearn.metrics import precision_recall_curve  # here: serving never draws the curve

    precision, recall, thr = precision_recall_curve(y, s)
    # The last (precision=1, recall=0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    if thr.size > max_points:
        idx = np.unique(np.round(np.linspace(0, thr.size - 1, max_points)).astype(np.int64))
        precision, recall, thr = precision[idx], recall[idx], thr[idx]
    return pd.DataFrame({"precision": precision, "recall": recall, "threshold": thr})
