"""Delay-aware positivity: immature traffic does not alert; a real shift does, in its bucket,
even when nothing but the conversions seen so far reveals it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain.positivity import alerts, bucket_positivity
from tests.helpers import config


def rows(n_per_window=2000, windows=10, rate=(0.05, 0.05), shift=None, seed=0):
    """Synthetic monitored rows: the last windows are immature (labels seen so far lag)."""
    rng = np.random.default_rng(seed)
    frames = []
    for w in range(windows):
        bucket = rng.integers(0, 2, n_per_window)
        true = np.asarray(rate)[bucket]
        if shift and w >= shift[1]:
            true = np.where(bucket == shift[0], true * 0.4, true)
        eventual = rng.uniform(size=n_per_window) < true
        elapsed = float(windows - w)
        matured = min(1.0, elapsed / 5.0)  # F: the share of eventual conversions seen so far
        seen = eventual & (rng.uniform(size=n_per_window) < matured)
        p_flip = np.where(
            seen, 0.0, true * (1 - min(1.0, elapsed / 5.0)) / (1 - true * min(1.0, elapsed / 5.0))
        )
        frames.append(
            pd.DataFrame(
                {
                    "window": w,
                    "bucket": bucket,
                    "prob_calibrated": np.asarray(rate)[bucket],
                    "label_observed": seen.astype(int),
                    "elapsed_days": elapsed,
                    "expected_label": seen + (1 - seen) * p_flip,
                    # The delay model knows the rate before any shift, and nothing tells it of one.
                    "expected_eventual": np.asarray(rate)[bucket],
                    "expected_seen": np.asarray(rate)[bucket] * matured,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


CFG = config("monitor", min_volume=300, relative_tolerance=0.3, maturity_days=5)


def test_immature_windows_alert_only_with_the_naive_rule():
    table = bucket_positivity(rows(), CFG)
    assert not table["alert"].any()
    assert table["naive_alert"].any()
    recent = table[table["window"] >= 8]
    assert (recent["naive"] < 0.7 * recent["predicted"]).all()
    assert recent["observed"].isna().all()  # nothing matured yet
    assert table.loc[table["window"] < 5, "observed"].notna().all()


def test_a_real_drop_alerts_in_its_bucket_only():
    table = bucket_positivity(rows(shift=(1, 4)), CFG)
    fired = alerts(table, pd.Timestamp("2026-03-01"), 1.0)
    assert fired
    assert {a["bucket"] for a in fired} == {1}
    assert min(a["window"] for a in fired) >= 4
    assert "delay-corrected positivity" in fired[0]["message"]


def test_small_windows_never_alert():
    table = bucket_positivity(rows(n_per_window=200, shift=(1, 0)), CFG)
    assert not table["alert"].any()


def test_tolerance_can_differ_per_bucket():
    data = rows(shift=(1, 4))
    strict_on_drifted = bucket_positivity(data, CFG.model_copy(update={"relative_tolerance": [0.3, 0.3]}))
    lenient_on_drifted = bucket_positivity(data, CFG.model_copy(update={"relative_tolerance": [0.3, 0.9]}))
    assert strict_on_drifted["alert"].any()
    assert not lenient_on_drifted["alert"].any()
    assert list(CFG.model_copy(update={"relative_tolerance": [0.1, 0.2]}).tolerance(np.array([0, 1, 4]))) == [
        0.1,
        0.2,
        0.2,
    ]


def test_a_window_mostly_unseen_by_the_delay_model_is_not_judged():
    # The freshest window (the model expects 20% of its conversions by now) sees none:
    # an early tail slower than the delay model's, not a drop.
    data = rows()
    fresh = data["window"] == data["window"].max()
    data.loc[fresh, "label_observed"] = 0
    assert not bucket_positivity(data, CFG)["alert"].any()
    eager = bucket_positivity(data, CFG.model_copy(update={"min_seen_share": 0.0}))
    assert set(eager.loc[eager["alert"], "window"]) == {data["window"].max()}
