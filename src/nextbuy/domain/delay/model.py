"""The fitted delay model: P(eventual conversion) and the conversion-delay distribution
(lognormal or Weibull), both linear in the standardised signals; pure numpy/scipy, so serving
never needs torch (see nextbuy.domain.delay)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from nextbuy.domain.delay.signals import _engaged_offset

FAMILIES = ("lognormal", "weibull")


# Delays and elapsed times are clipped away from 0 so log(t) stays finite.
_MIN_DAYS = 1e-6


def _standardised(
    frame: pd.DataFrame, columns: Sequence[str], center: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """[1, (x - center) / scale] for the model's columns: the design of all three linear parts."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"signals lack column(s) {missing} the delay model was fitted on")
    x = frame[list(columns)].to_numpy(dtype=np.float64).reshape(len(frame), len(columns))
    if not np.isfinite(x).all():
        bad = sorted({columns[int(j)] for j in np.flatnonzero(~np.isfinite(x).all(axis=0))})
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
    # The attribution window in days from shown: a conversion later than it is never observed
    # (a store's raw logs attribute within ingest.events.attribution_days), so the delay is the
    # family's truncated at it. None: no window (the simulator's conversions are observed
    # whenever they come).
    horizon_days: float | None = None

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
        """log P(delay > t | converts), t on the delay clock (from the last engagement); with a
        horizon, of the family truncated at it: (S(t) - S(h)) / (1 - S(h)) before the horizon h
        (on that clock: the window less the engagement offset), 0 (log: -inf) from it on."""
        loc, log_scale = self._loc_logscale(signals)
        t = np.asarray(t_days, dtype=np.float64)
        log_s = _log_survival(self.family, t, loc, log_scale)
        if self.horizon_days is None:
            return log_s
        h = np.maximum(self.horizon_days - _engaged_offset(signals), _MIN_DAYS)
        return truncated_log_survival(log_s, _log_survival(self.family, h, loc, log_scale), t >= h)

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
            "horizon_days": self.horizon_days,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DelayModel:
        fields = {k: d[k] for k in ("family", "columns", "center", "scale", "conv_coef", "delay_coef")}
        return cls(**fields, horizon_days=d.get("horizon_days"))


@dataclass(frozen=True)
class DelayFamily:
    """What a refit of the delay model keeps of the fitted one (the EM step of train): its
    family and the labels' attribution window (None: none)."""

    name: str
    horizon_days: float | None = None


def truncated_log_survival(log_s: np.ndarray, log_s_horizon: np.ndarray, past: np.ndarray) -> np.ndarray:
    """log((S(t) - S(h)) / (1 - S(h))), -inf where ``past`` (t at or after h)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # log(S(t) - S(h)) = log S(t) + log(1 - S(h)/S(t)); 1 - S(h) by expm1, without cancellation
        gap = log_s + np.log1p(-np.exp(np.minimum(log_s_horizon - log_s, 0.0)))
        out = gap - np.log(-np.expm1(log_s_horizon))
    return np.where(past, -np.inf, np.minimum(out, 0.0))


def _log_survival(family: str, t: np.ndarray, loc: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    log_t = np.log(np.maximum(t, _MIN_DAYS))
    if family == "lognormal":
        return special.log_ndtr(-(log_t - loc) / np.exp(log_scale))
    # weibull: S = exp(-(t/lambda)^k), lambda = exp(loc), k = exp(log_scale)
    with np.errstate(over="ignore"):  # overflow means S = 0, which -inf encodes
        return -np.exp(np.exp(log_scale) * (log_t - loc))
