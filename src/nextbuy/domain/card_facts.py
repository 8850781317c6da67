"""What a model card states that takes computing, pure: label maturity at training, calibration
per uncertainty bucket, quality on sources of low out-degree, the DVC digest of a folder, and a
version's metrics once its traffic's labels have matured."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from nextbuy.domain.gate import soft_auc
from nextbuy.domain.model_card import LowDegree, MaturedRow
from nextbuy.domain.timeunits import DAY
from nextbuy.domain.uncertainty import expected_calibration_error


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


def matured_rows(
    traffic: pd.DataFrame,
    predictions: pd.DataFrame,
    now: pd.Timestamp,
    days: list[int],
    min_conversions: int,
    release: dict[str, float | None],
    floors: dict[str, float],
) -> list[MaturedRow]:
    """For each maturity m of ``days``: the traffic shown at least m days before ``now``,
    labelled converted when it converted within m days of being shown, scored as
    ``predictions`` (score, decision; row-aligned with ``traffic``). A maturity with fewer than
    ``min_conversions`` conversions gives no row yet. ``release``: the gate's auc and recall;
    ``floors``: min_auc, min_recall (a row below one is flagged)."""
    shown = pd.to_datetime(traffic["shown_at"]).to_numpy()
    converted = pd.to_datetime(traffic["converted_at"]).to_numpy()
    score = predictions["score"].to_numpy(dtype=float)
    decision = predictions["decision"].to_numpy(dtype=float)
    out = []
    for m in days:
        horizon = np.timedelta64(int(m * DAY.value), "ns")
        old = shown <= np.datetime64(now) - horizon
        label = (~pd.isna(converted) & (converted <= shown + horizon))[old].astype(float)
        if label.sum() < max(min_conversions, 1):
            continue
        auc = soft_auc(label, score[old])
        recall = float((decision[old] * label).sum() / label.sum())
        out.append(
            MaturedRow(
                checked_at=str(pd.Timestamp(now)),
                maturity_days=int(m),
                rows=int(old.sum()),
                conversions=int(label.sum()),
                auc=auc,
                recall=recall,
                release_auc=release.get("auc"),
                release_recall=release.get("recall"),
                below_floor=_below(auc, recall, floors),
            )
        )
    return out
