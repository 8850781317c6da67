"""What the champion says about each impression of the traffic, and what is known of its outcome
at "now" (pure): the rows monitor's per-window, per-bucket table is aggregated from. The pandas
engine scores the whole traffic log at once; the Spark engine each Arrow batch, with the same
pair-feature context (built once over the whole log) and so the same rows."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from nextbuy.domain import delay
from nextbuy.domain.delay import PairContext


class Scorer(Protocol):
    """What scores pairs of products (``nextbuy.serving.ServingBundle`` is one): per pair its
    ``score``, ``uncertainty``, ``bucket`` and ``prob_calibrated``."""

    def score(self, source_id: np.ndarray, candidate_id: np.ndarray) -> pd.DataFrame: ...


def score_rows(
    bundle: Scorer,
    impressions: pd.DataFrame,
    products: pd.DataFrame,
    context: PairContext,
    delay_model: delay.DelayModel,
    now: pd.Timestamp,
    label: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per impression: the champion's score, uncertainty, bucket and calibrated probability
    (``bundle.score``), the shown product's category and log price, and the delay model's
    view at ``now`` (observed label, elapsed days, expected eventual and seen conversions).
    ``label`` replaces the observed one (a holdout scored as of its snapshot)."""
    scored = bundle.score(impressions["source_id"].to_numpy(), impressions["shown_id"].to_numpy())
    features = products.set_index("product_id").reindex(impressions["shown_id"].to_numpy())
    signals = delay.impression_signals(impressions, now, context=context)
    if label is not None:
        signals["label"] = np.asarray(label, dtype=np.int8)
    elapsed, observed = signals["elapsed_days"].to_numpy(), signals["label"].to_numpy()
    p_flip = delay.flip_probability(delay_model, signals)
    eventual = delay_model.p_convert(signals)
    seen_by_now = delay.seen_probability(delay_model, signals)
    return pd.DataFrame(
        {
            "shown_at": impressions["shown_at"].to_numpy(),
            "score": scored["score"].to_numpy(),
            "uncertainty": scored["uncertainty"].to_numpy(),
            "bucket": scored["bucket"].to_numpy(),
            "prob_calibrated": scored["prob_calibrated"].to_numpy(),
            "category": features["category"].fillna(-1).to_numpy(dtype=np.int64),
            "log_price": np.log(features["price"].to_numpy(dtype=float)),
            "label_observed": observed.astype(np.int64),
            "elapsed_days": elapsed,
            "expected_label": delay.expected_eventual_label(observed, p_flip),
            "expected_eventual": eventual,
            "expected_seen": eventual * seen_by_now,
        }
    )
