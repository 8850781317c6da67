"""thresholds stage: per-bucket thresholds beat one threshold where uncertain buckets convert less."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import yaml

from nextbuy import paths
from nextbuy.mlops import io, schemas
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
    cfg = config("thresholds", target_precision=0.45, n_candidates=None, min_bucket_positives=50)
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


def run_stage(tmp_path, monkeypatch, tiny_params, scored, **cfg) -> dict:
    monkeypatch.chdir(tmp_path)
    tiny_params["thresholds"].update(cfg)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    io.write_table(scored, paths.SCORED, schemas.SCORED)
    io.write_json({"edges": [0.1, 0.2]}, paths.CALIBRATION_MODEL)  # 3 buckets
    returned = thresholds.run()
    metrics = json.loads(paths.metrics_file("thresholds").read_text())
    assert set(metrics) == set(returned)
    return metrics


def test_metrics_report_feasibility_and_support(tmp_path, monkeypatch, tiny_params, caplog):
    scored = scored_frame()
    # Bucket 2 keeps only a handful of calibration positives: below the floor.
    thin = (scored["bucket"] == 2) & (scored["split"] == "calib") & (scored["label"] == 1)
    scored = scored[~thin | (thin.cumsum() <= 5)].reset_index(drop=True)
    with caplog.at_level(logging.WARNING, logger="nextbuy"):
        m = run_stage(
            tmp_path, monkeypatch, tiny_params, scored, target_precision=0.45, min_bucket_positives=20
        )
    assert not caplog.records
    assert m["feasible"] is True
    assert m["per_bucket"]["feasible"] is True
    assert m["single"]["feasible"] is True
    fit = scored[(scored["split"] == "calib") & scored["matured"]]
    assert [s["rows"] for s in m["support"]] == [int((fit["bucket"] == k).sum()) for k in range(3)]
    assert [s["positives"] for s in m["support"]] == [
        int(fit["label"][fit["bucket"] == k].sum()) for k in range(3)
    ]
    assert [s["single_threshold_fallback"] for s in m["support"]] == [False, False, True]
    assert m["thresholds"][2] == m["single_threshold"]
    # The keys the end-of-run report and others read.
    for name in ("per_bucket", "single"):
        for split in ("calib", "test_delay_corrected"):
            assert {"precision", "recall"} <= set(m[name][split])
    assert {"target_precision", "thresholds", "recall_gain_calib", "recall_gain_test"} <= set(m)
    model = json.loads(paths.THRESHOLDS_MODEL.read_text())
    assert model["per_bucket"]["thresholds"] == m["thresholds"]


def test_infeasible_target_is_flagged_and_logged(tmp_path, monkeypatch, tiny_params, caplog):
    scored = scored_frame()
    with caplog.at_level(logging.WARNING, logger="nextbuy"):
        m = run_stage(
            tmp_path, monkeypatch, tiny_params, scored, target_precision=0.99, min_bucket_positives=30
        )
    assert m["feasible"] is False
    assert m["per_bucket"]["feasible"] is False
    assert m["single"]["feasible"] is False
    assert any("0.990" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # The most precise operating point: accepts something, below the target, the same cut everywhere.
    assert m["thresholds"] == [m["single_threshold"]] * 3
    assert m["single_threshold"] is not None
    assert 0 < m["per_bucket"]["calib"]["precision"] < 0.99
    assert m["per_bucket"]["calib"]["accepted"] >= 30
