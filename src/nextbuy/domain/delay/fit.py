"""Fitting the delay model: maximum likelihood with right-censoring (Chapelle 2014), by
L-BFGS-B with torch autograd gradients (torch imported only here, inside the fit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import optimize, special

from nextbuy.domain.delay.model import _MIN_DAYS, FAMILIES, DelayModel, _standardised
from nextbuy.domain.delay.signals import ENGAGEMENT, SIGNALS, _engaged_offset, _labelled

if TYPE_CHECKING:
    import torch

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


def fit_delay_model(
    signals: pd.DataFrame,
    columns: Sequence[str] = SIGNALS,
    family: str = "lognormal",
    sample_weight: np.ndarray | None = None,
    horizon_days: float | None = None,
) -> DelayModel:
    """Maximum-likelihood fit with right-censoring (Chapelle 2014).

    ``horizon_days``: the attribution window from shown, past which no conversion is observed;
    the delay is then the family truncated at it (on the delay clock: the window less each
    row's engagement offset): a converted row contributes ``log p + log f(d) - log F(h)``, a
    row not converted after ``e`` days ``log(1 - p + p (S(e) - S(h)) / (1 - S(h)))``, and one
    past its horizon ``log(1 - p)``: it will not convert.

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
    log_h = None
    if horizon_days is not None:
        h = np.maximum(horizon_days - _engaged_offset(signals), _MIN_DAYS)
        log_h = np.log(h)
    nll = _censored_nll(family, design, np.log(np.maximum(t, _MIN_DAYS)), pos, w, _ridge(columns), log_h)

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
        horizon_days=horizon_days,
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


def _censored_nll(
    family: str,
    design: np.ndarray,
    log_t: np.ndarray,
    pos: np.ndarray,
    w: np.ndarray,
    ridge: np.ndarray,
    log_h: np.ndarray | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """theta -> the weighted negative log-likelihood of the mixture cure model plus its ridge
    (torch, float64; theta = conversion, delay location and delay log-scale coefficients);
    ``log_h``: each row's log horizon (the delay truncated there), None for none."""
    import torch

    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    X, log_t_t, pos_t, w_t, ridge_t = (
        as_t(design),
        as_t(log_t),
        as_t(pos.astype(np.float64)),
        as_t(w),
        as_t(ridge),
    )
    k = design.shape[1]
    log_h_t = None if log_h is None else as_t(log_h)
    past = None if log_h_t is None else (log_t_t >= log_h_t) & (pos_t == 0)

    def log_survival(log_at: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        if family == "lognormal":
            return torch.special.log_ndtr(-(log_at - loc) / torch.exp(log_scale))
        # Clamp: line searches may probe extreme shapes where (t/lambda)^k overflows, and an
        # inf there would turn gradients into NaN.
        return -torch.exp(torch.clamp(torch.exp(log_scale) * (log_at - loc), max=60.0))

    def nll(theta: torch.Tensor) -> torch.Tensor:
        eta = X @ theta[:k]
        loc, log_scale = X @ theta[k : 2 * k], X @ theta[2 * k :]
        log_p, log_1mp = torch.nn.functional.logsigmoid(eta), torch.nn.functional.logsigmoid(-eta)
        if family == "lognormal":
            zt = (log_t_t - loc) / torch.exp(log_scale)
            log_f = -log_t_t - log_scale - 0.5 * np.log(2 * np.pi) - 0.5 * zt**2
        else:
            shape = torch.exp(log_scale)
            u = torch.exp(torch.clamp(shape * (log_t_t - loc), max=60.0))
            log_f = log_scale - loc + (shape - 1.0) * (log_t_t - loc) - u
        log_s = log_survival(log_t_t, loc, log_scale)
        if log_h_t is not None:
            assert past is not None  # set with log_h_t
            log_s_h = log_survival(log_h_t, loc, log_scale)
            log_seen_h = torch.log(-torch.expm1(torch.clamp(log_s_h, max=-1e-12)))  # log F(h)
            log_f = log_f - log_seen_h
            # (S(e) - S(h)) / (1 - S(h)) before the horizon; a row past it cannot convert
            gap = torch.clamp(log_s_h - log_s, max=-1e-12)
            log_s = torch.where(
                past, torch.zeros_like(log_s), log_s + torch.log(-torch.expm1(gap)) - log_seen_h
            )
        ll_pos = log_p + log_f
        ll_neg = torch.logaddexp(log_1mp, log_p + log_s)
        if past is not None:
            ll_neg = torch.where(past, log_1mp, ll_neg)
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
