"""What a model card states that takes computing, pure: label maturity at training, calibration
per uncertainty bucket, quality on sources of low out-degree, the DVC digest of a folder, and a
version's metrics once its traffic's labels have matured."""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

import numpy as np
import pandas as pd

from nextbuy.domain.evaluation import soft_auc
from nextbuy.domain.timeunits import DAY
from nextbuy.domain.uncertainty import expected_calibration_error
from nextbuy.model_card.record import LowDegree, MaturedRow


def label_maturity(label: np.ndarray, p_flip: np.ndarray) -> float | None:
    """Share of the rows' eventual conversions the delay model expects still unseen: the
    expected late conversions (``p_flip`` of the rows not converted yet) over those plus the
    conversions seen. None when neither exists."""
    label = np.asarray(label, dtype=float)
    unseen = float((np.asarray(p_flip, dtype=float) * (1.0 - label)).sum())
    total = unseen + float(label.sum())
    return unseen / total if total > 0 else None


def ece_by_bucket(prob: np.ndarray, label: np.ndarray, bucket: np.ndarray, n_buckets: int) -> dict:
    """Expected calibration error of the calibrated probability in each uncertainty bucket
    (None for an empty bucket); labels may be fractional (delay-corrected)."""
    bucket = np.asarray(bucket)
    return {
        str(b): expected_calibration_error(prob[bucket == b], label[bucket == b])
        if (bucket == b).any()
        else None
        for b in range(n_buckets)
    }


def out_degree(edge_sources: np.ndarray, n_products: int) -> np.ndarray:
    """Out-edges of each product id in ``range(n_products)``."""
    return np.bincount(np.asarray(edge_sources, dtype=np.int64), minlength=n_products)[:n_products]


def low_degree_quality(
    source: np.ndarray, degree: np.ndarray, predictions: pd.DataFrame, label: np.ndarray, max_degree: int
) -> LowDegree:
    """AUC and recall of the decisions on the rows whose source has at most ``max_degree``
    out-edges (ids beyond ``degree`` count as degree 0: unknown to the graph)."""
    source = np.asarray(source, dtype=np.int64)
    known = source < len(degree)
    deg = np.where(known, degree[np.minimum(source, len(degree) - 1)], 0)
    low = deg <= max_degree
    y = np.asarray(label, dtype=float)[low]
    decision = predictions["decision"].to_numpy(dtype=float)[low]
    return LowDegree(
        max_out_degree=max_degree,
        rows=int(low.sum()),
        sources=int(np.unique(source[low]).size),
        auc=soft_auc(y, predictions["score"].to_numpy()[low]) if low.any() else None,
        recall=float((decision * y).sum() / y.sum()) if y.sum() > 0 else None,
    )


def dvc_dir_md5(files: list[tuple[str, str]]) -> str:
    """DVC's hash of a folder from its files' (relative posix path, md5): the md5 of the JSON
    listing sorted by path, suffixed ``.dir`` (what dvc.lock records for a folder out)."""
    entries = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(files)]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _below(auc: float | None, recall: float | None, floors: dict[str, float]) -> list[str]:
    broken = []
    if auc is not None and "min_auc" in floors and auc < floors["min_auc"]:
        broken.append(f"auc {auc:.3f} < {floors['min_auc']:.3f}")
    if recall is not None and "min_recall" in floors and recall < floors["min_recall"]:
        broken.append(f"recall {recall:.3f} < {floors['min_recall']:.3f}")
    return broken


class Measured(NamedTuple):
    """A version on the traffic that had ``maturity_days`` to mature: its rows, their conversions
    (both exact counts), AUC (None with one class) and recall (None without conversions)."""

    maturity_days: int
    rows: int
    conversions: int
    auc: float | None
    recall: float | None


def maturity_labels(
    shown: np.ndarray, converted: np.ndarray, now: pd.Timestamp, days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: shown at least ``days`` days before ``now`` (matured), and converted within
    ``days`` days of being shown (``converted`` NaT: not converted). Both datetime64 arrays."""
    horizon = np.timedelta64(int(days * DAY.value), "ns")
    old = shown <= np.datetime64(now) - horizon
    return old, ~pd.isna(converted) & (converted <= shown + horizon)


def matured_measures(
    traffic: pd.DataFrame, predictions: pd.DataFrame, now: pd.Timestamp, days: list[int]
) -> list[Measured]:
    """For each maturity m of ``days``: the traffic shown at least m days before ``now``,
    labelled converted when it converted within m days of being shown, scored as
    ``predictions`` (score, decision; row-aligned with ``traffic``)."""
    shown = pd.to_datetime(traffic["shown_at"]).to_numpy()
    converted = pd.to_datetime(traffic["converted_at"]).to_numpy()
    score = predictions["score"].to_numpy(dtype=float)
    decision = predictions["decision"].to_numpy(dtype=float)
    out = []
    for m in days:
        old, converted_in = maturity_labels(shown, converted, now, m)
        label = converted_in[old].astype(float)
        conversions = int(label.sum())
        recall = float((decision[old] * label).sum() / label.sum()) if conversions else None
        out.append(Measured(int(m), int(old.sum()), conversions, soft_auc(label, score[old]), recall))
    return out


def maturity_columns(
    traffic: pd.DataFrame, predictions: pd.DataFrame, now: pd.Timestamp, days: list[int]
) -> pd.DataFrame:
    """Per row (row-aligned with ``traffic`` and ``predictions``): its score and, for the i-th
    maturity of ``days``, ``rows{i}`` (1 when matured), ``conversions{i}`` (1 when matured and
    converted within it) and ``hits{i}`` (1 when also accepted): what :class:`Measured` sums."""
    shown = pd.to_datetime(traffic["shown_at"]).to_numpy()
    converted = pd.to_datetime(traffic["converted_at"]).to_numpy()
    decision = predictions["decision"].to_numpy(dtype=bool)
    columns = {"score": predictions["score"].to_numpy(dtype=np.float64)}
    for i, m in enumerate(days):
        old, converted_in = maturity_labels(shown, converted, now, m)
        columns[f"rows{i}"] = old.astype(np.int64)
        columns[f"conversions{i}"] = (old & converted_in).astype(np.int64)
        columns[f"hits{i}"] = (old & converted_in & decision).astype(np.int64)
    return pd.DataFrame(columns)


def matured_row(
    now: pd.Timestamp,
    measured: Measured,
    min_conversions: int,
    release: dict[str, float | None],
    floors: dict[str, float],
) -> MaturedRow | None:
    """The card's row of ``measured``; None (no row yet) below ``min_conversions`` conversions.
    ``release``: the gate's auc and recall; ``floors``: min_auc, min_recall (a row below one
    is flagged)."""
    if measured.conversions < max(min_conversions, 1):
        return None
    return MaturedRow(
        checked_at=str(pd.Timestamp(now)),
        maturity_days=measured.maturity_days,
        rows=measured.rows,
        conversions=measured.conversions,
        auc=measured.auc,
        recall=measured.recall,
        release_auc=release.get("auc"),
        release_recall=release.get("recall"),
        below_floor=_below(measured.auc, measured.recall, floors),
    )


def matured_rows(
    traffic: pd.DataFrame,
    predictions: pd.DataFrame,
    now: pd.Timestamp,
    days: list[int],
    min_conversions: int,
    release: dict[str, float | None],
    floors: dict[str, float],
) -> list[MaturedRow]:
    """The card's rows of :func:`matured_measures` (a maturity with fewer than
    ``min_conversions`` conversions gives no row yet; :func:`matured_row`)."""
    rows = (
        matured_row(now, m, min_conversions, release, floors)
        for m in matured_measures(traffic, predictions, now, days)
    )
    return [r for r in rows if r is not None]
