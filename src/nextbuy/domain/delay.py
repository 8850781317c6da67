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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from nextbuy.constants import DELAY_PAIR_FEATURES
from nextbuy.domain.timeunits import DAY

FAMILIES = ("lognormal", "weibull")
ENGAGEMENT = ("clicked", "carted", "engagement_lag")
FEATURES = DELAY_PAIR_FEATURES
SIGNALS = ENGAGEMENT + FEATURES
IMPORTANCE_SIGNALS = {
    "importance": SIGNALS,
    "importance_no_engagement": FEATURES,
    "importance_no_features": ENGAGEMENT,
}
# The conversion model's own logit: a pair feature only the train stage can supply (EM, below).
SCORE = "model_logit"

# Delays and elapsed times are clipped away from 0 so log(t) stays finite.
_MIN_DAYS = 1e-6
# Ridge on the standardised non-intercept coefficients: negligible against the
# likelihood of thousands of rows, but it keeps an empty or perfectly separated
# signal group at a finite optimum.
_RIDGE = 1e-4
# Stronger ridge on the delay's engagement coefficients: a group that never converts (e.g.
# nobody clicked) could otherwise push its delay to infinity, where its conversion
# probability no longer enters the likelihood (1 - p + p S = 1 for any p) and stays at
# whatever flip probability it started with, forever. Shrinking group delays toward the
# shared one lets the old, never-converted rows of that group pull its p to 0. Only the
# engagement flags get it: on a pair feature (price) it would shrink a real delay effect,
# and the fit would then explain late conversions of expensive products by a lower p.
_DELAY_RIDGE = 1e-2
# Box bounds for L-BFGS-B, the second guard for degenerate data.
_COEF_BOUND = 30.0
_LOC_BOUND = 20.0
_LOG_SCALE_BOUND = 5.0


# --------------------------------------------------------------------------- signals


def observed_signals(impressions: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """What is known of each impression at time ``at`` (a snapshot, or "now" for new
    traffic), from its event timestamps, on ``impressions``' index:

    * ``elapsed_days`` since shown (>= 0) and the observed ``label`` (converted so far);
    * ``delay_days`` from shown to an observed conversion (NaN otherwise);
    * the ``clicked`` / ``carted`` flags;
    * ``engaged_days``: from shown to the last click or cart seen by ``at`` (and not after the
      conversion), 0 without one: where the delay clock starts (:func:`waited_days`);
    * ``engagement_lag``: log(1 + that time in hours), the signal the delay model sees.

    Events are taken as recorded: a log censored at ``at`` has no later event.
    """
    shown = impressions["shown_at"]
    converted = impressions["converted_at"]
    clicked, carted = impressions["clicked_at"], impressions["carted_at"]
    cutoff = converted.fillna(pd.Timestamp(at)).clip(upper=pd.Timestamp(at))
    engaged_at = pd.concat(
        [shown, clicked.where(clicked <= cutoff), carted.where(carted <= cutoff)], axis=1
    ).max(axis=1)
    engaged_days = ((engaged_at - shown) / DAY).clip(lower=0.0).to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "elapsed_days": ((at - shown) / DAY).clip(lower=0.0).to_numpy(dtype=float),
            "label": converted.notna().to_numpy().astype(np.int8),
            "delay_days": ((converted - shown) / DAY).to_numpy(dtype=float),
            "clicked": clicked.notna().to_numpy().astype(np.int8),
            "carted": carted.notna().to_numpy().astype(np.int8),
            "engaged_days": engaged_days,
            "engagement_lag": np.log1p(24.0 * engaged_days),
        },
        index=impressions.index,
    )


def _engaged_offset(signals: pd.DataFrame) -> np.ndarray:
    # Signals without engagement times (a log of clicks only) start the clock when shown.
    if "engaged_days" not in signals:
        return np.zeros(len(signals))
    offset = signals["engaged_days"].to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(offset)) or np.any(offset < 0):
        raise ValueError("engaged_days must be finite and >= 0")
    return offset


def waited_days(signals: pd.DataFrame) -> np.ndarray:
    """Days on the delay clock by the time the signals were read: ``elapsed_days`` less
    ``engaged_days`` (since the last engagement; since shown where the column is absent)."""
    return np.maximum(signals["elapsed_days"].to_numpy(dtype=np.float64) - _engaged_offset(signals), 0.0)


def _weight_by(ids: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(ids, weights=weight, minlength=n)[:n]


def pair_features(
    source_id: np.ndarray,
    shown_id: np.ndarray,
    products: pd.DataFrame,
    edges: pd.DataFrame,
    exposure: np.ndarray | None = None,
) -> pd.DataFrame:
    """The delay model's view of a (source, shown) pair, from the catalogue and the
    co-purchase graph only (no labels, so no leak between splits):

    * ``log_price`` of the shown product (the catalogue median where unknown);
    * ``shown_popularity``: log(1 + co-purchases into the shown product / its
      ``exposure`` share): a rate, so that a product launched last week is not mistaken
      for an unpopular one (without ``exposure``, every product counts as seen throughout);
    * ``source_activity``: log(1 + co-purchases out of the source product);
    * ``pair_copurchases``: log(1 + co-purchases source -> shown);
    * ``category_lift``: log of how much more often the source's category leads to the
      shown one's than the shown category's share of all co-purchases (+1 smoothing;
      unknown categories form one group).
    """
    src = np.asarray(source_id, dtype=np.int64)
    dst = np.asarray(shown_id, dtype=np.int64)
    n = len(products)
    by_id = products.sort_values("product_id")
    price = by_id["price"].to_numpy(dtype=float)
    log_price = np.log(np.where(np.isfinite(price) & (price > 0), price, np.nan))
    fill = np.nanmedian(log_price) if np.isfinite(log_price).any() else 0.0
    log_price = np.where(np.isfinite(log_price), log_price, fill)

    eu, ev = edges["src"].to_numpy(np.int64), edges["dst"].to_numpy(np.int64)
    ew = edges["weight"].to_numpy(np.float64) if "weight" in edges else np.ones(len(edges))
    into, out_of = _weight_by(ev, ew, n), _weight_by(eu, ew, n)
    pair_weight = pd.Series(ew).groupby(eu * n + ev).sum()  # edge lists may repeat a pair
    pair = pair_weight.reindex(src * n + dst, fill_value=0.0).to_numpy()

    category = by_id["category"].to_numpy(np.int64)
    codes, groups = np.unique(category, return_inverse=True)
    k = len(codes)
    flows = np.ones((k, k)) + np.bincount(groups[eu] * k + groups[ev], weights=ew, minlength=k * k).reshape(
        k, k
    )
    share_in = flows.sum(axis=0) / flows.sum()
    lift = np.log(flows / flows.sum(axis=1, keepdims=True) / share_in[None, :])
    return pd.DataFrame(
        {
            "log_price": log_price[dst],
            "shown_popularity": np.log1p(into[dst] / (1.0 if exposure is None else exposure[dst])),
            "source_activity": np.log1p(out_of[src]),
            "pair_copurchases": np.log1p(pair),
            "category_lift": lift[groups[src], groups[dst]],
        }
    )


def _standardised(frame: pd.DataFrame, columns: Sequence[str], center, scale) -> np.ndarray:
    """[1, (x - center) / scale] for the model's columns: the design of all three linear parts."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"signals lack column(s) {missing} the delay model was fitted on")
    x = frame[list(columns)].to_numpy(dtype=np.float64).reshape(len(frame), len(columns))
    if not np.isfinite(x).all():
        bad = sorted({columns[j] for j in np.flatnonzero(~np.isfinite(x).all(axis=0))})
        raise ValueError(f"signal column(s) {bad} hold NaN or infinite values")
    return np.hstack([np.ones((len(frame), 1)), (x - center) / scale])


@dataclass(frozen=True, eq=False)  # eq=False: array fields make field-wise == ambiguous
class DelayModel:
    """Fitted eventual-conversion + delay model over the signal ``columns``.

    ``center`` / ``scale`` standardise the columns (fit-row mean and std);
    ``conv_coef`` (1+k,): logistic coefficients on ``[1, z]``; ``delay_coef`` (2, 1+k):
    row 0 = location on ``[1, z]`` (lognormal: mu of log-delay; weibull: log scale),
    row 1 = log-scale (lognormal: log sigma; weibull: log shape). Delays in days.
    """

    family: str
    columns: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    conv_coef: np.ndarray
    delay_coef: np.ndarray

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown delay family {self.family!r}; expected one of {FAMILIES}")
        k = len(self.columns)
        object.__setattr__(self, "columns", tuple(self.columns))
        for name, shape in (
            ("center", (k,)),
            ("scale", (k,)),
            ("conv_coef", (k + 1,)),
            ("delay_coef", (2, k + 1)),
        ):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(shape))

    def design(self, signals: pd.DataFrame) -> np.ndarray:
        return _standardised(signals, self.columns, self.center, self.scale)

    # --- conversion -------------------------------------------------------
    def logit(self, signals: pd.DataFrame) -> np.ndarray:
        return self.design(signals) @ self.conv_coef

    def p_convert(self, signals: pd.DataFrame) -> np.ndarray:
        """P(eventual conversion | signals)."""
        return special.expit(self.logit(signals))

    # --- delay ------------------------------------------------------------
    def _loc_logscale(self, signals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        z = self.design(signals)
        return z @ self.delay_coef[0], z @ self.delay_coef[1]

    def log_survival(self, t_days: np.ndarray, signals: pd.DataFrame) -> np.ndarray:
        """log P(delay > t | converts)."""
        loc, log_scale = self._loc_logscale(signals)
        return _log_survival(self.family, np.asarray(t_days, dtype=np.float64), loc, log_scale)

    def survival(self, t_days: np.ndarray, signals: pd.DataFrame) -> np.ndarray:
        """P(delay > t | converts)."""
        return np.exp(self.log_survival(t_days, signals))

    def median_delay(self, signals: pd.DataFrame) -> np.ndarray:
        """Median conversion delay in days (given it converts)."""
        loc, log_scale = self._loc_logscale(signals)
        if self.family == "lognormal":
            return np.exp(loc)
        return np.exp(loc) * np.log(2.0) ** np.exp(-log_scale)

    # --- persistence ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "columns": list(self.columns),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "conv_coef": self.conv_coef.tolist(),
            "delay_coef": self.delay_coef.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DelayModel:
        return cls(**{k: d[k] for k in ("family", "columns", "center", "scale", "conv_coef", "delay_coef")})


def _log_survival(family: str, t: np.ndarray, loc: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    log_t = np.log(np.maximum(t, _MIN_DAYS))
    if family == "lognormal":
        return special.log_ndtr(-(log_t - loc) / np.exp(log_scale))
    # weibull: S = exp(-(t/lambda)^k), lambda = exp(loc), k = exp(log_scale)
    with np.errstate(over="ignore"):  # overflow means S = 0, which -inf encodes
        return -np.exp(np.exp(log_scale) * (log_t - loc))


def _labelled(signals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Validated (days on the delay clock, observed label): the clock of :func:`waited_days`."""
    for column in ("elapsed_days", "label"):
        if column not in signals:
            raise ValueError(f"signals lack the {column!r} column")
    e = signals["elapsed_days"].to_numpy(dtype=np.float64)
    y = signals["label"].to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(e)) or np.any(e < 0):
        raise ValueError("elapsed_days must be finite and >= 0")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("label must be 0/1")
    return waited_days(signals), y


# --------------------------------------------------------------------------- fit


def fit_delay_model(
    signals: pd.DataFrame,
    columns: Sequence[str] = SIGNALS,
    family: str = "lognormal",
    sample_weight: np.ndarray | None = None,
) -> DelayModel:
    """Maximum-likelihood fit with right-censoring (Chapelle 2014).

    ``signals``: ``elapsed_days``, ``label``, ``delay_days`` (of observed conversions),
    ``columns`` and optionally ``engaged_days`` (where the clock starts; see
    :func:`waited_days`). Converted rows contribute ``log p + log f(d)``; rows not converted
    after ``e`` days contribute ``log(1 - p + p S(e))``. Minimised with L-BFGS-B on the
    (weighted) mean negative log-likelihood; gradients by torch autograd.
    """
    import torch  # lazy: only fitting needs autograd

    if family not in FAMILIES:
        raise ValueError(f"unknown delay family {family!r}; expected one of {FAMILIES}")
    columns = tuple(columns)
    e, y, d, w = _censored_rows(signals, sample_weight)
    pos = y == 1.0
    raw = signals[list(columns)].to_numpy(dtype=np.float64).reshape(len(signals), len(columns))
    center = raw.mean(axis=0) if len(raw) else np.zeros(len(columns))
    spread = raw.std(axis=0) if len(raw) else np.ones(len(columns))
    scale = np.where(spread > 1e-12, spread, 1.0)  # a constant column stays 0 after centring
    design = _standardised(signals, columns, center, scale)

    # Converted rows are evaluated at their delay, censored rows at their time waited.
    t = np.where(pos, np.nan_to_num(d, nan=0.0), e)
    k = design.shape[1]
    nll = _censored_nll(family, design, np.log(np.maximum(t, _MIN_DAYS)), pos, w, _ridge(columns))

    def fun(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(theta_np, dtype=torch.float64, requires_grad=True)
        loss = nll(theta)
        (grad,) = torch.autograd.grad(loss, theta)
        return float(loss.detach()), grad.numpy().copy()

    theta0 = _initial_theta(y, d, pos, family, k)
    bounds = (
        [(-_COEF_BOUND, _COEF_BOUND)] * k
        + [(-_LOC_BOUND, _LOC_BOUND)] * k
        + [(-_LOG_SCALE_BOUND, _LOG_SCALE_BOUND)] * k
    )
    res = optimize.minimize(
        fun, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000}
    )
    theta = res.x
    return DelayModel(
        family=family,
        columns=columns,
        center=center,
        scale=scale,
        conv_coef=theta[:k],
        delay_coef=np.stack([theta[k : 2 * k], theta[2 * k :]]),
    )


def _censored_rows(
    signals: pd.DataFrame, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Days waited, label, delay on the engagement clock (NaN unless converted) and weights
    summing to 1, after checking them."""
    e, y = _labelled(signals)
    d = (
        signals["delay_days"].to_numpy(dtype=np.float64)
        if "delay_days" in signals
        else np.full_like(e, np.nan)
    )
    pos = y == 1.0
    if np.any(~np.isfinite(d[pos])) or np.any(d[pos] < 0):
        raise ValueError("converted rows need a finite delay_days >= 0")
    d = np.maximum(d - _engaged_offset(signals), 0.0)  # on the clock from the last engagement
    w = np.ones_like(e) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != e.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sample_weight must be non-negative, same length, not all zero")
    return e, y, d, w / w.sum()


def _ridge(columns: tuple[str, ...]) -> np.ndarray:
    """Ridge weight of each of theta's 3k entries: none on the three intercepts, a lighter one on
    the engagement signals' delay coefficients."""
    slopes = np.r_[0.0, np.ones(len(columns))]
    delay_ridge = slopes * np.r_[_RIDGE, [_DELAY_RIDGE if c in ENGAGEMENT else _RIDGE for c in columns]]
    return np.concatenate([_RIDGE * slopes, delay_ridge, delay_ridge])


def _censored_nll(family: str, design, log_t, pos, w, ridge):
    """theta -> the weighted negative log-likelihood of the mixture cure model plus its ridge
    (torch, float64; theta = conversion, delay location and delay log-scale coefficients)."""
    import torch

    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    X, log_t, pos_t, w_t, ridge_t = (
        as_t(design),
        as_t(log_t),
        as_t(pos.astype(np.float64)),
        as_t(w),
        as_t(ridge),
    )
    k = design.shape[1]

    def nll(theta: torch.Tensor) -> torch.Tensor:
        eta = X @ theta[:k]
        loc, log_scale = X @ theta[k : 2 * k], X @ theta[2 * k :]
        log_p, log_1mp = torch.nn.functional.logsigmoid(eta), torch.nn.functional.logsigmoid(-eta)
        if family == "lognormal":
            zt = (log_t - loc) / torch.exp(log_scale)
            log_f = -log_t - log_scale - 0.5 * np.log(2 * np.pi) - 0.5 * zt**2
            log_s = torch.special.log_ndtr(-zt)
        else:
            shape = torch.exp(log_scale)
            # Clamp: line searches may probe extreme shapes where (t/lambda)^k
            # overflows, and an inf there would turn gradients into NaN.
            u = torch.exp(torch.clamp(shape * (log_t - loc), max=60.0))
            log_f = log_scale - loc + (shape - 1.0) * (log_t - loc) - u
            log_s = -u
        ll_pos = log_p + log_f
        ll_neg = torch.logaddexp(log_1mp, log_p + log_s)
        # torch.where keeps the unused branch's gradient out of the sum.
        ll = torch.where(pos_t > 0, ll_pos, ll_neg)
        return -(w_t * ll).sum() + (ridge_t * theta**2).sum()

    return nll


def _initial_theta(y: np.ndarray, d: np.ndarray, pos: np.ndarray, family: str, k: int) -> np.ndarray:
    # Start from the observed rate and the observed (short-biased) delays: close
    # enough for L-BFGS-B, and well-defined even with no conversions at all.
    rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3)) if len(y) else 0.5
    log_d = np.log(np.maximum(d[pos], _MIN_DAYS)) if pos.any() else np.zeros(1)
    loc = float(np.median(log_d))
    spread = float(np.std(log_d)) if log_d.size > 1 else 1.0
    log_scale = float(np.log(max(spread, 0.1))) if family == "lognormal" else 0.0
    theta = np.zeros(3 * k)
    theta[0], theta[k], theta[2 * k] = special.logit(rate), loc, log_scale
    return theta


# --------------------------------------------------------------------------- use


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


# A product seen for less than a day counts as seen for one (its rate stays bounded).
_MIN_EXPOSURE_DAYS = 1.0


def exposure_share(impressions: pd.DataFrame, n_products: int, at: pd.Timestamp) -> np.ndarray:
    """Per product, the share of the impression log up to ``at`` it was on sale for:
    (at - its first impression, shown or as the source) / (at - the log's first), in
    (0, 1]; at least a day, so a rate over it stays bounded. Impressions, far denser than
    co-purchases, date a launch closely; a product the log never shows counts as on sale
    throughout.
    """
    never = np.iinfo(np.int64).max
    first = np.full(n_products, never, dtype=np.int64)
    shown_ns = impressions["shown_at"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    for column in ("source_id", "shown_id"):
        earliest = pd.Series(shown_ns).groupby(impressions[column].to_numpy(np.int64)).min()
        at_ids = earliest.index.to_numpy(np.int64)
        first[at_ids] = np.minimum(first[at_ids], earliest.to_numpy())
    end = pd.Timestamp(at).value
    seen = first < never
    if not seen.any() or not first[seen].min() < end:
        return np.ones(n_products)
    on_sale = np.maximum((end - np.minimum(first, end)).astype(np.float64), _MIN_EXPOSURE_DAYS * DAY.value)
    return np.where(seen, np.clip(on_sale / float(end - first[seen].min()), 0.0, 1.0), 1.0)


def impression_signals(
    impressions: pd.DataFrame,
    at: pd.Timestamp,
    products: pd.DataFrame | None = None,
    edges: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`observed_signals` at ``at`` plus, given the catalogue and graph, the
    :func:`pair_features` of each impression (the delay model's whole input)."""
    signals = observed_signals(impressions, at)
    if products is None or edges is None:
        return signals
    exposure = exposure_share(impressions, len(products), at)
    features = pair_features(
        impressions["source_id"].to_numpy(), impressions["shown_id"].to_numpy(), products, edges, exposure
    )
    return pd.concat([signals, features.set_index(signals.index)], axis=1)


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
    signals: pd.DataFrame, score: np.ndarray, fit_rows: np.ndarray, method: str, family: str
) -> tuple[np.ndarray, DelayModel]:
    """One EM step: ``method``'s delay model refitted on the ``fit_rows`` (a boolean mask) with
    the conversion model's logit ``score`` as the feature ``SCORE``, and every row's soft target
    E[eventual label | observed] under it (see the module docstring)."""
    scored = signals.assign(**{SCORE: np.asarray(score, dtype=np.float64)})
    model = fit_delay_model(scored[np.asarray(fit_rows, bool)], signal_columns(method, scored), family)
    label = scored["label"].to_numpy(np.float64)
    return expected_eventual_label(label, flip_probability(model, scored)), model
