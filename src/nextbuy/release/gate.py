"""The release gate, pure: whether the champion may be compared with the candidate
at all, figures of a model on evaluation rows, a paired bootstrap of candidate vs
champion, and the pass/fail decision with reasons.

A champion that does not belong to the candidate's store (``nextbuy.domain.catalogue``:
another catalogue, not just the same one with products added since) is never compared: its
scores of this store's product ids mean nothing. It is left out and the candidate is
judged like a first release, on the floors alone.

Labels may be fractional (delay-corrected expected eventual labels of recent
traffic), so every metric takes soft labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.config import DeployConfig
from nextbuy.domain import catalogue
from nextbuy.domain.evaluation import resampled_soft_auc, soft_auc
from nextbuy.domain.uncertainty import expected_calibration_error

LOWER_IS_BETTER = {"ece"}


def champion_incomparable(
    champion_version: str | None, champion_catalogue: str | None, store: pd.DataFrame
) -> str | None:
    """Why the champion may not be compared with the candidate: it does not belong to the
    candidate's store (``store``: its products table), or records no catalogue. None when there
    is no champion or it belongs."""
    if champion_version is None:
        return None
    why = catalogue.mismatch(champion_catalogue, store)
    if why is None:
        return None
    return (
        f"champion v{champion_version} is not comparable with the candidate: {why}; "
        "the candidate is judged like a first release, on the floors alone"
    )


def training_incomparable(champion_version: str, learned: int | None, rows: int) -> str | None:
    """Why the champion may not be judged on the gate's test rows: it records no training data
    (``learned`` None), or it learned from ``learned`` of the ``rows`` (its scores of rows it
    was trained on are optimistic, so a fair candidate would look worse). None when clean."""
    if learned is None:
        why = "it records no training data, so its overlap with the test split cannot be checked"
    elif learned > 0:
        why = (
            f"{learned} of the {rows} test rows were in its training data (another snapshot window "
            "or split setting): scoring it on rows it learned from would favour it"
        )
    else:
        return None
    return (
        f"champion v{champion_version} is not comparable with the candidate: {why}; "
        "the candidate is judged like a first release, on the floors alone"
    )


def power_notes(
    comparison: dict[str, dict[str, float]], rows: int, tolerance: float, confidence: float
) -> list[str]:
    """A sentence per compared metric refused with a CI wider than the tolerance that also
    reaches above -tolerance: the data neither show the candidate worse nor let it pass, and
    at that width a candidate equal to the champion is refused too, so the test split is too
    small to judge non-inferiority. The rows it would need scale the CI half-width to the
    tolerance (a bootstrap CI narrows as 1/sqrt(rows))."""
    notes = []
    for metric, ci in comparison.items():
        half = (ci["hi"] - ci["lo"]) / 2.0
        undecided = ci["lo"] <= -tolerance < ci["hi"]
        if half > tolerance and undecided:
            needed = int(np.ceil(rows * (half / tolerance) ** 2))
            notes.append(
                f"{metric}: the {confidence:.0%} CI's half-width {half:.3f} is wider than the tolerance "
                f"{tolerance:.3f}, so the test split ({rows:,} rows) is too small to judge "
                f"non-inferiority at this tolerance (an equal candidate is refused); it would need "
                f"about {needed:,} test rows (ingest.split.test_share, more days) or a wider deploy.tolerance"
            )
    return notes


def champion_comparable(has_champion: bool, incomparable: str | None) -> bool | None:
    """Whether the champion was compared: None when there is none, False when ``incomparable``
    says why it may not be."""
    return None if not (has_champion or incomparable) else incomparable is None


def figures(predictions: pd.DataFrame, label: np.ndarray) -> dict[str, float | None]:
    """Recall/precision of the model's own decisions, ranking and calibration quality."""
    decision = predictions["decision"].to_numpy(dtype=float)
    tp = float((decision * label).sum())
    return {
        "recall": tp / label.sum() if label.sum() > 0 else None,
        "precision": tp / decision.sum() if decision.sum() > 0 else 0.0,
        "auc": soft_auc(label, predictions["score"].to_numpy()),
        "ece": expected_calibration_error(predictions["prob_calibrated"].to_numpy(), label),
        "rows": float(len(label)),
    }


def _recall(counts: np.ndarray, decision: np.ndarray, label: np.ndarray) -> np.ndarray:
    return (counts @ (decision * label)) / np.maximum(counts @ label, 1e-12)


def paired_bootstrap(
    label: np.ndarray,
    candidate: pd.DataFrame,
    champion: pd.DataFrame,
    metrics: tuple[str, ...],
    n_samples: int,
    confidence: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Mean and CI of (candidate - champion) per metric, both scored on the same resampled rows."""
    rng = np.random.default_rng(seed)
    n = len(label)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_samples).astype(np.float64)
    diffs: dict[str, np.ndarray] = {}
    if "recall" in metrics:
        diffs["recall"] = _recall(counts, candidate["decision"].to_numpy(dtype=float), label) - _recall(
            counts, champion["decision"].to_numpy(dtype=float), label
        )
    if "auc" in metrics:
        diffs["auc"] = resampled_soft_auc(label, candidate["score"].to_numpy(), counts) - resampled_soft_auc(
            label, champion["score"].to_numpy(), counts
        )
    alpha = (1.0 - confidence) / 2.0
    return {
        m: {
            "diff": float(np.nanmean(d)),
            "lo": float(np.nanquantile(d, alpha)),
            "hi": float(np.nanquantile(d, 1.0 - alpha)),
        }
        for m, d in diffs.items()
    }


def decide(
    candidate: dict, champion: dict | None, comparison: dict[str, dict[str, float]], cfg: DeployConfig
) -> tuple[bool, list[str]]:
    """Every floor must hold; against a champion, each compared metric must be non-inferior."""
    reasons = []
    floors = (
        ("recall", cfg.min_recall, ">="),
        ("precision", cfg.min_precision, ">="),
        ("auc", cfg.min_auc, ">="),
        ("ece", cfg.max_calibration_error, "<="),
    )
    for metric, bound, op in floors:
        value = candidate.get(metric)
        ok = value is not None and (value >= bound if op == ">=" else value <= bound)
        if not ok:
            reasons.append(f"{metric} {_fmt(value)} breaks the floor ({op} {bound:.3f})")
    if champion is not None:
        for metric, ci in comparison.items():
            if not ci["lo"] > -cfg.tolerance:
                reasons.append(
                    f"{metric} {_fmt(candidate.get(metric))} vs champion {_fmt(champion.get(metric))}: "
                    f"difference {ci['diff']:+.3f}, "
                    f"{cfg.confidence:.0%} CI [{ci['lo']:+.3f}, {ci['hi']:+.3f}] "
                    f"reaches below -{cfg.tolerance:.3f}"
                )
    return not reasons, reasons


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
