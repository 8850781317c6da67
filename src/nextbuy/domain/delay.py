"""Delayed feedback: a conversion-delay model and importance weights.

A recommendation shown at ``shown_at`` may convert days later, so at the
snapshot a recent impression that is still 0 may yet flip to 1. Following
Chapelle (2014), the eventual conversion and its delay are modelled jointly:

    P(convert | x)        = sigmoid(conv_coef · [1, clicked, carted])
    delay | convert, x    ~ lognormal or Weibull with parameters linear in [1, carted]

and fitted by maximum likelihood with right-censoring at the elapsed time.
From the fitted model each impression gets

* ``p_flip``: P(eventual conversion | not converted after e days), and
* an importance weight P(x, y) / Q(x, y) at its observed label, where Q is the
  censored distribution of observed labels (ES-DFM style), so that weighted
  losses / means over observed labels estimate those over eventual labels.

Pure numpy/scipy at prediction time; torch is imported only inside the fit
(for autograd), so serving never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from nextbuy.domain.timeunits import DAY

FAMILIES = ("lognormal", "weibull")

# Delays and elapsed times are clipped away from 0 so log(t) stays finite.
_MIN_DAYS = 1e-6
# Tiny ridge on non-intercept coefficients: it only matters when a signal group
# is empty or perfectly separated, where it keeps the optimum finite.
_RIDGE = 1e-6
# Box bounds for L-BFGS-B, the second guard for degenerate data.
_COEF_BOUND = 30.0
_LOC_BOUND = 20.0
_LOG_SCALE_BOUND = 5.0


def _conv_design(clicked: np.ndarray, carted: np.ndarray) -> np.ndarray:
    clicked = np.asarray(clicked, dtype=np.float64)
    carted = np.asarray(carted, dtype=np.float64)
    return np.stack(np.broadcast_arrays(np.ones_like(clicked), clicked, carted), axis=-1)


def _delay_design(carted: np.ndarray) -> np.ndarray:
    carted = np.asarray(carted, dtype=np.float64)
    return np.stack([np.ones_like(carted), carted], axis=-1)


@dataclass(frozen=True, eq=False)  # eq=False: array fields make field-wise == ambiguous
class DelayModel:
    """Fitted eventual-conversion + delay model.

    ``conv_coef`` (3,): logistic coefficients on ``[1, clicked, carted]``.
    ``delay_coef`` (2, 2): row 0 = location coefficients on ``[1, carted]``
    (lognormal: mu of log-delay; weibull: log scale), row 1 = log-scale
    coefficients on ``[1, carted]`` (lognormal: log sigma; weibull: log shape).
    Delays are in days.
    """

    family: str
    conv_coef: np.ndarray
    delay_coef: np.ndarray

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown delay family {self.family!r}; expected one of {FAMILIES}")
        object.__setattr__(self, "conv_coef", np.asarray(self.conv_coef, dtype=np.float64).reshape(3))
        object.__setattr__(self, "delay_coef", np.asarray(self.delay_coef, dtype=np.float64).reshape(2, 2))

    # --- conversion -------------------------------------------------------
    def logit(self, clicked: np.ndarray, carted: np.ndarray) -> np.ndarray:
        return _conv_design(clicked, carted) @ self.conv_coef

    def p_convert(self, clicked: np.ndarray, carted: np.ndarray) -> np.ndarray:
        """P(eventual conversion | signals)."""
        return special.expit(self.logit(clicked, carted))

    # --- delay ------------------------------------------------------------
    def _loc_logscale(self, carted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = _delay_design(carted)
        return z @ self.delay_coef[0], z @ self.delay_coef[1]

    def log_survival(self, t_days: np.ndarray, carted: np.ndarray) -> np.ndarray:
        """log P(delay > t | converts)."""
        loc, log_scale = self._loc_logscale(carted)
        log_t = np.log(np.maximum(np.asarray(t_days, dtype=np.float64), _MIN_DAYS))
        if self.family == "lognormal":
            return special.log_ndtr(-(log_t - loc) / np.exp(log_scale))
        # weibull: S = exp(-(t/lambda)^k), lambda = exp(loc), k = exp(log_scale)
        with np.errstate(over="ignore"):  # overflow means S = 0, which -inf encodes
            return -np.exp(np.exp(log_scale) * (log_t - loc))

    def survival(self, t_days: np.ndarray, carted: np.ndarray) -> np.ndarray:
        """P(delay > t | converts)."""
        return np.exp(self.log_survival(t_days, carted))

    def median_delay(self, carted: np.ndarray) -> np.ndarray:
        """Median conversion delay in days (given it converts)."""
        loc, log_scale = self._loc_logscale(carted)
        if self.family == "lognormal":
            return np.exp(loc)
        return np.exp(loc) * np.log(2.0) ** np.exp(-log_scale)

    # --- persistence ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "conv_coef": self.conv_coef.tolist(),
            "delay_coef": self.delay_coef.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DelayModel:
        return cls(
            family=d["family"], conv_coef=np.asarray(d["conv_coef"]), delay_coef=np.asarray(d["delay_coef"])
        )


def observed_signals(impressions: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """What is known of each impression at time ``at`` (a snapshot, or "now" for new
    traffic), from its event timestamps: ``elapsed_days`` since shown (>= 0), the
    observed ``label`` (converted so far), ``delay_days`` of an observed conversion
    (NaN otherwise), and the ``clicked`` / ``carted`` flags, on ``impressions``' index.

    Events are taken as recorded: a log censored at ``at`` has no later event.
    """
    shown = impressions["shown_at"]
    converted = impressions["converted_at"]
    return pd.DataFrame(
        {
            "elapsed_days": ((at - shown) / DAY).clip(lower=0.0).to_numpy(dtype=float),
            "label": converted.notna().to_numpy().astype(np.int8),
            "delay_days": ((converted - shown) / DAY).to_numpy(dtype=float),
            "clicked": impressions["clicked_at"].notna().to_numpy().astype(np.int8),
            "carted": impressions["carted_at"].notna().to_numpy().astype(np.int8),
        },
        index=impressions.index,
    )


def _validate(elapsed_days, label, clicked, carted) -> tuple[np.ndarray, ...]:
    e = np.asarray(elapsed_days, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    c1 = np.asarray(clicked, dtype=np.float64)
    c2 = np.asarray(carted, dtype=np.float64)
    if not (e.shape == y.shape == c1.shape == c2.shape) or e.ndim != 1:
        raise ValueError("elapsed_days, label, clicked, carted must be 1-d arrays of equal length")
    if np.any(~np.isfinite(e)) or np.any(e < 0):
        raise ValueError("elapsed_days must be finite and >= 0")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("label must be 0/1")
    return e, y, c1, c2


def fit_delay_model(
    elapsed_days: np.ndarray,
    label: np.ndarray,
    delay_days: np.ndarray,
    clicked: np.ndarray,
    carted: np.ndarray,
    family: str = "lognormal",
    sample_weight: np.ndarray | None = None,
) -> DelayModel:
    """Maximum-likelihood fit with right-censoring (Chapelle 2014).

    Converted rows contribute ``log p + log f(d)``; rows not converted after
    ``e`` days contribute ``log(1 - p + p S(e))``. Minimised with L-BFGS-B on
    the (weighted) mean negative log-likelihood; gradients by torch autograd.
    """
    import torch  # lazy: only fitting needs autograd

    if family not in FAMILIES:
        raise ValueError(f"unknown delay family {family!r}; expected one of {FAMILIES}")
    e, y, c1, c2 = _validate(elapsed_days, label, clicked, carted)
    d = np.asarray(delay_days, dtype=np.float64)
    if d.shape != e.shape:
        raise ValueError("delay_days must have the same length as label")
    pos = y == 1.0
    if np.any(~np.isfinite(d[pos])) or np.any(d[pos] < 0):
        raise ValueError("converted rows need a finite delay_days >= 0")
    w = np.ones_like(e) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != e.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sample_weight must be non-negative, same length, not all zero")
    w = w / w.sum()

    # Converted rows are evaluated at their delay, censored rows at their elapsed time.
    t = np.where(pos, np.nan_to_num(d, nan=0.0), e)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    X, Z = as_t(_conv_design(c1, c2)), as_t(_delay_design(c2))
    log_t = as_t(np.log(np.maximum(t, _MIN_DAYS)))
    pos_t, w_t = as_t(pos.astype(np.float64)), as_t(w)
    ridge_mask = as_t([0, 1, 1, 0, 1, 0, 1])  # non-intercept coefficients

    def nll(theta: torch.Tensor) -> torch.Tensor:
        eta = X @ theta[0:3]
        loc, log_scale = Z @ theta[3:5], Z @ theta[5:7]
        log_p, log_1mp = torch.nn.functional.logsigmoid(eta), torch.nn.functional.logsigmoid(-eta)
        if family == "lognormal":
            zt = (log_t - loc) / torch.exp(log_scale)
            log_f = -log_t - log_scale - 0.5 * np.log(2 * np.pi) - 0.5 * zt**2
            log_s = torch.special.log_ndtr(-zt)
        else:
            k = torch.exp(log_scale)
            # Clamp: line searches may probe extreme shapes where (t/lambda)^k
            # overflows, and an inf there would turn gradients into NaN.
            u = torch.exp(torch.clamp(k * (log_t - loc), max=60.0))
            log_f = log_scale - loc + (k - 1.0) * (log_t - loc) - u
            log_s = -u
        ll_pos = log_p + log_f
        ll_neg = torch.logaddexp(log_1mp, log_p + log_s)
        # torch.where keeps the unused branch's gradient out of the sum.
        ll = torch.where(pos_t > 0, ll_pos, ll_neg)
        return -(w_t * ll).sum() + _RIDGE * (ridge_mask * theta**2).sum()

    def fun(theta_np: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(theta_np, dtype=torch.float64, requires_grad=True)
        loss = nll(theta)
        (grad,) = torch.autograd.grad(loss, theta)
        return float(loss.detach()), grad.numpy().copy()

    theta0 = _initial_theta(y, d, pos, family)
    bounds = (
        [(-_COEF_BOUND, _COEF_BOUND)] * 3
        + [(-_LOC_BOUND, _LOC_BOUND)] * 2
        + [(-_LOG_SCALE_BOUND, _LOG_SCALE_BOUND)] * 2
    )
    res = optimize.minimize(
        fun, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 1000}
    )
    theta = res.x
    return DelayModel(family=family, conv_coef=theta[0:3], delay_coef=np.stack([theta[3:5], theta[5:7]]))


def _initial_theta(y: np.ndarray, d: np.ndarray, pos: np.ndarray, family: str) -> np.ndarray:
    # Start from the observed rate and the observed (short-biased) delays: close
    # enough for L-BFGS-B, and well-defined even with no conversions at all.
    rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    log_d = np.log(np.maximum(d[pos], _MIN_DAYS)) if pos.any() else np.zeros(1)
    loc = float(np.median(log_d))
    spread = float(np.std(log_d)) if log_d.size > 1 else 1.0
    log_scale = float(np.log(max(spread, 0.1))) if family == "lognormal" else 0.0
    return np.array([special.logit(rate), 0.0, 0.0, loc, 0.0, log_scale, 0.0])


def flip_probability(
    model: DelayModel,
    elapsed_days: np.ndarray,
    label: np.ndarray,
    clicked: np.ndarray,
    carted: np.ndarray,
) -> np.ndarray:
    """P(eventual conversion | not converted after e days) = pS(e) / (1 - p + pS(e));
    0 for observed positives."""
    e, y, c1, c2 = _validate(elapsed_days, label, clicked, carted)
    eta = model.logit(c1, c2)
    # Log space: p S(e) can underflow for old examples, 1 - p can round to 0.
    log_ps = -np.logaddexp(0.0, -eta) + model.log_survival(e, c2)
    log_1mp = -np.logaddexp(0.0, eta)
    p_flip = np.exp(log_ps - np.logaddexp(log_1mp, log_ps))
    return np.where(y == 1.0, 0.0, p_flip)


def importance_weights(
    model: DelayModel,
    elapsed_days: np.ndarray,
    label: np.ndarray,
    clicked: np.ndarray,
    carted: np.ndarray,
    max_weight: float,
) -> np.ndarray:
    """P(x, y) / Q(x, y) at the observed label, clipped to [0, max_weight].

    Observed negative: (1 - p) / (1 - p + p S(e)) = 1 - p_flip (it may still flip,
    so it counts less as a negative). Observed positive: 1 / (1 - S(e)) (a
    conversion seen early stands in for the ones not seen yet).
    """
    e, y, c1, c2 = _validate(elapsed_days, label, clicked, carted)
    w_neg = 1.0 - flip_probability(model, e, np.zeros_like(y), c1, c2)
    # -expm1(log S) = 1 - S without cancellation; 0 at e = 0 gives inf, then clipped.
    with np.errstate(divide="ignore"):
        w_pos = 1.0 / -np.expm1(model.log_survival(e, c2))
    w = np.where(y == 1.0, w_pos, w_neg)
    return np.clip(w, 0.0, max_weight)


def expected_eventual_label(label: np.ndarray, p_flip: np.ndarray) -> np.ndarray:
    """E[eventual label | observed]: 1 for observed positives, p_flip otherwise."""
    label = np.asarray(label, dtype=np.float64)
    return label + (1.0 - label) * np.asarray(p_flip, dtype=np.float64)
