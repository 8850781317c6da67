"""Importance weights and soft targets from the fitted delay model: each still-negative
impression's probability of flipping to a conversion, the weights that undo delay's bias, and
the EM refit with the conversion model's score (see the package docstring)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain.delay.fit import fit_delay_model
from nextbuy.domain.delay.model import DelayFamily, DelayModel
from nextbuy.domain.delay.signals import (
    ENGAGEMENT,
    FEATURES,
    SIGNALS,
    _labelled,
)

IMPORTANCE_SIGNALS = {
    "importance": SIGNALS,
    "importance_no_engagement": FEATURES,
    "importance_no_features": ENGAGEMENT,
}
# The conversion model's own logit: a pair feature only the train stage can supply (EM, below).
SCORE = "model_logit"


def flip_probability(model: DelayModel, signals: pd.DataFrame) -> np.ndarray:
    """P(eventual conversion | not converted after e days) = pS(e) / (1 - p + pS(e));
    0 for observed positives."""
    e, y = _labelled(signals)
    eta = model.logit(signals)
    # Log space: p S(e) can underflow for old examples, 1 - p can round to 0.
    log_ps = -np.logaddexp(0.0, -eta) + model.log_survival(e, signals)
    log_1mp = -np.logaddexp(0.0, eta)
    p_flip = np.exp(log_ps - np.logaddexp(log_1mp, log_ps))
    return np.where(y == 1.0, 0.0, p_flip)


def importance_weights(model: DelayModel, signals: pd.DataFrame, max_weight: float) -> np.ndarray:
    """``importance_ipw``'s weights: P(y | x, g) / Q(y | x, g, e) at the observed label,
    clipped to [0, max_weight].

    Observed negative: (1 - p) / (1 - p F(e)) = 1 - p_flip (it may still flip, so it
    counts less as a negative). Observed positive: 1 / F(e) (a conversion seen early
    stands in for the ones not seen yet).
    """
    _, y = _labelled(signals)
    w_neg = 1.0 - flip_probability(model, signals.assign(label=0))
    # F = 0 at e = 0 gives inf, then clipped.
    with np.errstate(divide="ignore"):
        w_pos = 1.0 / seen_probability(model, signals)
    return np.clip(np.where(y == 1.0, w_pos, w_neg), 0.0, max_weight)


def seen_probability(model: DelayModel, signals: pd.DataFrame) -> np.ndarray:
    """F(e): P(a conversion is seen by the time the signals were read | it converts), e on the
    clock from the last engagement (:func:`waited_days`)."""
    e, _ = _labelled(signals)
    with np.errstate(over="ignore"):
        return -np.expm1(model.log_survival(e, signals))  # F without cancellation


def normalised(weight: np.ndarray) -> np.ndarray:
    """Weights rescaled to mean 1 (the loss keeps its scale whatever the clipping took)."""
    weight = np.asarray(weight, dtype=np.float64)
    mean = weight.mean() if weight.size else 0.0
    return weight / mean if mean > 0 else weight


def effective_sample_size(weight: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2."""
    weight = np.asarray(weight, dtype=np.float64)
    total = float((weight**2).sum())
    return float(weight.sum() ** 2 / total) if total > 0 else 0.0


def expected_eventual_label(label: np.ndarray, p_flip: np.ndarray) -> np.ndarray:
    """E[eventual label | observed]: 1 for observed positives, p_flip otherwise."""
    label = np.asarray(label, dtype=np.float64)
    return label + (1.0 - label) * np.asarray(p_flip, dtype=np.float64)


ENGAGEMENT_LEVELS = ("none", "clicked", "carted")
ELAPSED_BINS = (0.0, 1.0, 2.0, 4.0, 7.0, 14.0, 28.0, np.inf)


def engagement_level(signals: pd.DataFrame) -> np.ndarray:
    """none / clicked / carted (the deepest step reached) per row."""
    level = signals["clicked"].to_numpy(np.int64) + signals["carted"].to_numpy(np.int64)
    return np.asarray(ENGAGEMENT_LEVELS, dtype=object)[np.clip(level, 0, 2)]


def flip_table(signals: pd.DataFrame, p_flip: np.ndarray, eventual: np.ndarray | None = None) -> pd.DataFrame:
    """Observed negatives by engagement x elapsed-days bin: mean estimated flip probability
    and, where ``eventual`` labels are known (a simulator), the share that did flip."""
    negative = signals["label"].to_numpy() == 0
    frame = pd.DataFrame(
        {
            "engagement": engagement_level(signals)[negative],
            "elapsed_bin": pd.cut(
                signals["elapsed_days"].to_numpy()[negative], ELAPSED_BINS, right=False
            ).astype(str),
            "elapsed_days": signals["elapsed_days"].to_numpy()[negative],
            "estimated_flip": np.asarray(p_flip)[negative],
        }
    )
    if eventual is not None:
        frame["true_flip"] = np.asarray(eventual, dtype=float)[negative]
    aggregations = {
        "elapsed_days": ("elapsed_days", "mean"),
        "estimated_flip": ("estimated_flip", "mean"),
        "count": ("estimated_flip", "size"),
    }
    if eventual is not None:
        aggregations["true_flip"] = ("true_flip", "mean")
    table = frame.groupby(["engagement", "elapsed_bin"], observed=True, sort=False).agg(**aggregations)
    return table.reset_index().sort_values(["engagement", "elapsed_days"]).reset_index(drop=True)


def signal_columns(method: str, signals: pd.DataFrame) -> tuple[str, ...]:
    """The columns an importance ``method`` fits on, among those ``signals`` has (``SCORE``
    included where the method sees pair features and ``signals`` holds it)."""
    columns = IMPORTANCE_SIGNALS[method] + ((SCORE,) if rescores(method) else ())
    return tuple(c for c in columns if c in signals)


def rescores(method: str) -> bool:
    """Whether the EM step refits ``method``'s delay model with the conversion model's score:
    the Rao-Blackwellised methods that see pair features."""
    return method in IMPORTANCE_SIGNALS and set(FEATURES) <= set(IMPORTANCE_SIGNALS[method])


def rescored_targets(
    signals: pd.DataFrame,
    score: np.ndarray,
    fit_rows: np.ndarray,
    method: str,
    family: DelayFamily,
) -> tuple[np.ndarray, DelayModel]:
    """One EM step: ``method``'s delay model refitted on the ``fit_rows`` (a boolean mask) with
    the conversion model's logit ``score`` as the feature ``SCORE``, and every row's soft target
    E[eventual label | observed] under it (see the module docstring)."""
    scored = signals.assign(**{SCORE: np.asarray(score, dtype=np.float64)})
    rows = scored[np.asarray(fit_rows, bool)]
    model = fit_delay_model(
        rows, signal_columns(method, scored), family.name, horizon_days=family.horizon_days
    )
    label = scored["label"].to_numpy(np.float64)
    return expected_eventual_label(label, flip_probability(model, scored)), model
