"""thresholds stage: per-bucket thresholds beat one threshold where uncertain buckets convert less."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.stages import thresholds
from tests.helpers import config


def scored_frame(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, 3, n)
    score = rng.uniform(0, 1, n)
    # At the same score, more uncertain buckets convert less often.
    p = np.clip(score * np.array([0.9, 0.55, 0.2])[bucket], 0, 1)
    label = (rng.uniform(size=n) < p).astype(np.int8)
    split = np.where(np.arange(n) < n * 2 // 3, "calib", "test")
    return pd.DataFrame(
        {
            "impression_id": np.arange(n),
            "source_id": 0,
            "shown_id": 1,
            "split": split,
            "label": label,
            "matured": True,
            "p_flip": 0.0,
            "score": score,
            "uncertainty": bucket / 10,
            "bucket": bucket,
            "prob_calibrated": p,
        }
    )


def test_per_bucket_beats_single_threshold_at_the_target():
    scored = scored_frame()
    cfg = config("thresholds", target_precision=0.45, n_candidates=100)
    per_bucket, single = thresholds.fit(scored, 3, cfg)
    result = thresholds.evaluate(scored, per_bucket, single)
    assert result["per_bucket"]["calib"]["precision"] >= 0.45
    assert result["single"]["calib"]["precision"] >= 0.45
    assert result["recall_gain_calib"] > 0.05
    # Thresholds are stricter where predictions are less trustworthy.
    t = per_bucket.thresholds
    assert t[0] < t[1] <= t[2]
    # Held-out test split: still near the target, still more recall.
    assert result["per_bucket"]["test_delay_corrected"]["precision"] > 0.4
    assert result["recall_gain_test"] > 0.0
