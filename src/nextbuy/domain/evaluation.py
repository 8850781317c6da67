"""Which scored holdout rows fit what, and the labels they are judged against.

Calibration and thresholds are fitted on the same rows (matured calibration
pairs), and every evaluation of the test split uses delay-corrected labels:
one definition each, shared by the calibrate, thresholds and deploy stages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain import delay


def fit_rows(scored: pd.DataFrame) -> np.ndarray:
    """Calibration-split rows whose labels have matured: what calibration and thresholds are fitted on."""
    return ((scored["split"] == "calib") & scored["matured"]).to_numpy()


def evaluation_labels(scored: pd.DataFrame) -> np.ndarray:
    """Delay-corrected expected eventual label: immature negatives count by their flip probability."""
    return delay.expected_eventual_label(scored["label"].to_numpy(), scored["p_flip"].to_numpy())


def soft_log_loss(prob: np.ndarray, label: np.ndarray) -> float:
    """Cross-entropy that also takes fractional (delay-corrected) labels."""
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log1p(-p)))
