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

from nextbuy.domain.delay.fit import fit_delay_model
from nextbuy.domain.delay.model import FAMILIES, DelayFamily, DelayModel, truncated_log_survival
from nextbuy.domain.delay.rows import (
    fit_models,
    fit_problem,
    fit_sample,
    hash_unit,
    ipw_problem,
    normalised_ipw,
    sample_rate,
    weighted_rows,
)
from nextbuy.domain.delay.signals import (
    ENGAGEMENT,
    FEATURES,
    SIGNALS,
    PairContext,
    exposure_from_first,
    exposure_share,
    first_seen,
    impression_signals,
    observed_signals,
    pair_features,
    waited_days,
)
from nextbuy.domain.delay.weights import (
    ELAPSED_BINS,
    ENGAGEMENT_LEVELS,
    IMPORTANCE_SIGNALS,
    SCORE,
    effective_sample_size,
    engagement_level,
    expected_eventual_label,
    flip_probability,
    flip_table,
    importance_weights,
    normalised,
    rescored_targets,
    rescores,
    seen_probability,
    signal_columns,
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
    "PairContext",
    "effective_sample_size",
    "engagement_level",
    "expected_eventual_label",
    "exposure_from_first",
    "exposure_share",
    "first_seen",
    "fit_delay_model",
    "fit_models",
    "fit_problem",
    "fit_sample",
    "flip_probability",
    "flip_table",
    "hash_unit",
    "importance_weights",
    "impression_signals",
    "ipw_problem",
    "normalised",
    "normalised_ipw",
    "observed_signals",
    "pair_features",
    "rescored_targets",
    "rescores",
    "sample_rate",
    "seen_probability",
    "signal_columns",
    "truncated_log_survival",
    "waited_days",
    "weighted_rows",
]
