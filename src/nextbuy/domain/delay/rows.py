"""Every impression's training target, row by row: what label_delay writes for one batch of
impressions once the delay models are fitted (pure, engine-free).

The pandas engine applies :func:`weighted_rows` to the whole log at once; the Spark engine
applies it to each Arrow batch on the executors with the same :class:`PairContext` (built
once over the whole log) and the same fitted models, so both write the same rows. The one
step that needs every row, rescaling ``importance_ipw``'s weights to mean 1 over the train
split, is left to the caller (:func:`normalised_ipw`).

The delay models are fitted on at most ``label_delay.fit_sample_rows`` train rows
(:func:`fit_sample`): all of them up to that size, above it each train row is kept when a
seeded hash of its impression id falls below ``cap / n_train``, so both engines, and any
partitioning of the log, fit on the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain.delay.fit import fit_delay_model
from nextbuy.domain.delay.model import DelayModel
from nextbuy.domain.delay.signals import FEATURES
from nextbuy.domain.delay.weights import (
    IMPORTANCE_SIGNALS,
    expected_eventual_label,
    flip_probability,
    importance_weights,
)

# What the weighted table carries over from the impressions, and from the signals.
KEPT = ("impression_id", "source_id", "shown_id", "shown_at", "split")
SIGNAL_COLUMNS = (
    "label",
    "clicked",
    "carted",
    "elapsed_days",
    "delay_days",
    "engaged_days",
    "engagement_lag",
)

_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def hash_unit(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id (splitmix64 of id + seed): the same on any machine."""
    with np.errstate(over="ignore"):
        x = np.asarray(ids, dtype=np.int64).view(np.uint64) + np.uint64(seed % 2**63) * np.uint64(
            0x9E3779B97F4A7C15
        )
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def sample_rate(n_train: int, cap: int) -> float:
    """Share of train rows the delay fit keeps: 1 up to ``cap`` rows."""
    return 1.0 if n_train <= cap else cap / n_train


def fit_sample(impression_id: np.ndarray, train: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Rows the delay models are fitted on: the train rows, thinned to ``rate`` by a seeded
    hash of the impression id when it is below 1."""
    train = np.asarray(train, dtype=bool)
    if rate >= 1.0:
        return train
    return train & (hash_unit(impression_id, seed) < rate)


def fit_problem(rows: pd.DataFrame, wait_days: float) -> tuple[str, str] | None:
    """Why the delay models cannot be fitted on these train rows' signals (the message and the
    impressions column at fault), or None."""
    if not len(rows):
        return "the train split is empty: nothing to fit the delay model on", "split"
    if not rows["label"].any():
        return (
            f"none of the {len(rows)} training impressions has a conversion: no delay can be fitted",
            "converted_at",
        )
    old_enough = rows["elapsed_days"] >= wait_days
    if not old_enough.any():
        return (
            f"no training impression is {wait_days:g} days old (label_delay.wait_days): nothing has "
            f"matured; the oldest is {rows['elapsed_days'].max():.2f} days old",
            "shown_at",
        )
    if not (rows["label"].astype(bool) & old_enough).any():
        return (
            f"every training conversion comes from an impression younger than {wait_days:g} days "
            "(label_delay.wait_days): no matured conversion to fit the delay on",
            "converted_at",
        )
    return None


def fit_models(
    fit_rows: pd.DataFrame, signals_columns: pd.Index, family: str, horizon_days: float | None = None
) -> dict[str, DelayModel]:
    """The delay model of every importance method, fitted on ``fit_rows``' signals (the delay
    truncated at ``horizon_days``, the attribution window, when there is one)."""
    return {
        method: fit_delay_model(
            fit_rows,
            tuple(c for c in IMPORTANCE_SIGNALS[method] if c in signals_columns),
            family=family,
            horizon_days=horizon_days,
        )
        for method in IMPORTANCE_SIGNALS
    }


def weighted_rows(
    impressions: pd.DataFrame,
    signals: pd.DataFrame,
    models: dict[str, DelayModel],
    wait_days: float,
    max_weight: float,
) -> pd.DataFrame:
    """The weighted table's rows for ``impressions`` (their ``signals`` beside them):
    p_flip, and each method's ``target_<method>`` and ``weight_<method>``.
    ``weight_importance_ipw`` is clipped to ``max_weight``, not yet normalised."""
    p_flip = {method: flip_probability(model, signals) for method, model in models.items()}
    label = signals["label"].to_numpy(np.float64)
    ones = np.ones(len(signals))
    matured = (signals["elapsed_days"].to_numpy() >= wait_days).astype(np.float64)
    targets = {"naive": (label, ones), "wait": (label, matured)}
    # Rao-Blackwellised importance weights: each model's flip probability as positive mass
    targets |= {m: (expected_eventual_label(label, p_flip[m]), ones) for m in models}
    targets["importance_ipw"] = (
        label,
        importance_weights(models["importance"], signals, max_weight=max_weight),
    )
    columns: dict[str, np.ndarray] = {}
    for method in WEIGHTING_METHODS:
        columns[f"target_{method}"], columns[f"weight_{method}"] = targets[method]
    out = impressions[list(KEPT)].copy()
    return out.assign(
        **{c: signals[c].to_numpy() for c in SIGNAL_COLUMNS},
        **{c: signals[c].to_numpy() for c in FEATURES if c in signals},
        p_flip=p_flip["importance"],
        **columns,
    )


def ipw_problem(train_positives: int, clipped_positives: int, max_weight: float) -> str | None:
    """Why ``importance_ipw`` cannot be used: every training conversion's weight is clipped."""
    if train_positives and clipped_positives >= train_positives:
        return (
            f"every training conversion's importance weight is clipped at label_delay.max_weight "
            f"{max_weight:g}: conversions are all too recent for the delay model to correct"
        )
    return None


def normalised_ipw(weight: np.ndarray, train_mean: float) -> np.ndarray:
    """``importance_ipw``'s weights at mean 1 over the training rows (those the loss sees)."""
    return weight / max(train_mean, 1e-12)
