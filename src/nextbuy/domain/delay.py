"""Delayed feedback: a feature-aware conversion-delay model and importance weights.

A recommendation shown at ``shown_at`` may convert days later, so at the
snapshot a recent impression that is still 0 may yet flip to 1. Following the
joint model of Chapelle (2014, "Modeling delayed feedback in display
advertising", KDD), the eventual conversion and its delay are modelled together,
both as functions of the pair's features x and the engagement g seen so far:

    p(x, g)       = P(eventual conversion | x, g) = sigmoid(beta . [1, z])
    F(e | x, g)   = P(delay <= e | converts, x, g): lognormal or Weibull, location and
                    log-scale linear in [1, z]

where z are the standardised signal columns (engagement: the ``clicked`` and
``carted`` flags and ``engagement_lag``, log(1 + hours from shown to the last
engagement); and the pair features of :func:`pair_features`: shown price,
popularity per day on sale, the source's activity, the pair's co-purchase count,
the category pair's co-purchase lift). The delay clock starts at the last engagement
seen (the cart, else the click, else the impression), as Chapelle measures delay from
the click: e and d below are days since then, not since shown (:func:`waited_days`).
Censoring at the snapshot is handled in the likelihood: a conversion seen after d days
contributes ``log p + log f(d)``, an impression not converted after e days
``log(1 - p + p (1 - F(e)))``.

Importance weights (FSIW, Yasui et al. 2020; ES-DFM, Yang et al. 2021; DEFER, Gu et
al. 2021). What the snapshot shows is drawn from Q(y_obs = 1 | x, g, e) = p F(e), while
the model should learn P(y = 1 | x) = E_g p(x, g). For any loss l,

    E_Q[w l] = Q(1) w(1) l(1) + Q(0) w(0) l(0) = p l(1) + (1 - p) l(0) = E_P[l]

with w(y) = P(y) / Q(y):

    observed positive:  w = p / (p F(e)) = 1 / F(e)
    observed negative:  w = (1 - p) / (1 - p F(e)) = 1 - p_flip

where p_flip = P(eventual conversion | not converted after e days) =
p (1 - F) / (1 - p F). Used as they stand (``importance_ipw``), the 1/F weights are
clipped to ``max_weight`` (an immature positive's 1/F explodes at e -> 0) and may be
normalised to mean 1. They fail where they are needed most: on the freshest days F is
small for every impression of a product launched yesterday, so few of its conversions
are seen and those few must stand in (1/F, clipped) for all the others.

Rao-Blackwellised importance weights (``importance``, the default). The positive part
of the weighted loss, (y_obs / F) l(1), is replaced by its conditional expectation given
what is observed (a Rao-Blackwell step: same mean, never more variance), exactly as
DEFER and ES-DFM feed each sample's delayed positive back as a duplicate; at a snapshot
the duplicate has not arrived yet, so it enters with its probability. Every impression
then contributes

    observed positive:  1 x l(1)
    observed negative:  (1 - p_flip) l(0) + p_flip l(1)

i.e. the negative keeps its importance weight 1 - p_flip and its missing positive mass
p_flip is credited where it will occur (a fresh add-to-cart) instead of being spread
over early conversions. Its expectation under Q is
pF l(1) + (1 - pF)[p(1 - F) l(1) + (1 - p) l(0)] / (1 - pF) = E_P[l], as above. For
binary cross-entropy, linear in the label, this is training on the soft target
y* = E[y | x, g, e, y_obs] = y_obs + (1 - y_obs) p_flip with weight 1: the E-step of
Chapelle 2014's EM, and the label correction of ULC (Wang et al. 2023, KDD). No weight
exceeds 1, so no clipping is needed.

EM with the conversion model's score (Chapelle 2014: the conversion model *is*
the p of the joint model, fitted by alternating E- and M-steps). The pair features above see
an item only through the catalogue and the graph; whether a cart converts depends on the
item itself, which the conversion model has learned. :func:`rescored_targets` therefore
refits the delay model with the trained model's logit as one more feature (``SCORE``), and
recomputes the soft targets; the train stage then continues training on them. Methods whose
signals exclude the pair features (``importance_no_features``) get no score: it is a feature.

Pure numpy/scipy at prediction time; torch is imported only inside the fit
(for autograd), so serving never needs it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.domain.delay_fit import fit_delay_model
from nextbuy.domain.delay_model import FAMILIES, DelayFamily, DelayModel
from nextbuy.domain.delay_signals import (
    ENGAGEMENT,
    FEATURES,
    SIGNALS,
    _labelled,
    exposure_share,
    impression_signals,
    observed_signals,
    pair_features,
    waited_days,
)

__all__ = [
    "ELAPSED_BINS",
    "ENGAGEMENT",
    "ENGAGEMENT_LEVELS",
    "FAMILIES",
    "FEATURES",
    "IMPORTANCE_SIGNALS",
    "SCORE",
    "SIGNALS",
    "DelayFamily",
    "DelayModel",
    "effective_sample_size",
    "engagement_level",
    "expected_eventual_label",
    "exposure_share",
    "fit_delay_model",
    "flip_probability",
    "flip_table",
    "importance_weights",
    "impression_signals",
    "normalised",
    "observed_signals",
    "pair_features",
    "rescored_targets",
    "rescores",
    "seen_probability",
    "signal_columns",
    "waited_days",
]

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
