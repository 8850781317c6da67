"""The decision policies the threshold fits return: per-bucket thresholds (``Thresholds``), the
single threshold, and the fit's record of support and cross-fitting (see ``nextbuy.domain.decisions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)  # eq=False: array fields make field-wise == ambiguous
class Thresholds:
    """Per-bucket thresholds; +inf means the bucket accepts nothing."""

    thresholds: np.ndarray
    target_precision: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", np.asarray(self.thresholds, dtype=np.float64).ravel())
        object.__setattr__(self, "target_precision", float(self.target_precision))

    @property
    def n_buckets(self) -> int:
        return self.thresholds.size

    def decide(self, score: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Accept where score >= the threshold of the row's bucket."""
        b = np.asarray(bucket, dtype=np.int64)
        if b.size and (b.min() < 0 or b.max() >= self.n_buckets):
            raise ValueError(f"bucket index out of range [0, {self.n_buckets})")
        return np.asarray(score, dtype=np.float64) >= self.thresholds[b]

    def to_dict(self) -> dict[str, Any]:
        # JSON has no infinity: +inf ("accept nothing") is written as null.
        return {
            "thresholds": [None if np.isposinf(t) else float(t) for t in self.thresholds],
            "target_precision": self.target_precision,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        def parse(t: Any) -> float:
            if t is None or (isinstance(t, str) and t.strip().lower() in ("inf", "+inf", "infinity")):
                return float("inf")
            return float(t)

        return cls(
            thresholds=np.array([parse(t) for t in d["thresholds"]]), target_precision=d["target_precision"]
        )


@dataclass(frozen=True)
class GlobalThreshold:
    """The single threshold; ``feasible`` False: the most precise point, below the target."""

    threshold: float
    feasible: bool


@dataclass(frozen=True, eq=False)
class BucketFit:
    """Per-bucket thresholds with the single threshold fitted on the same cut points."""

    thresholds: Thresholds
    feasible: bool  # the per-bucket policy reaches the target on the fit rows
    single: GlobalThreshold
    rows: np.ndarray  # fit rows per bucket
    positives: np.ndarray  # positives among them
    fallback: np.ndarray  # True: below min support, the bucket got the single threshold
    cross_fit: CrossFit | None = None  # out-of-fold check that kept (or replaced) the per-bucket policy

    @property
    def baseline(self) -> Thresholds:
        """The single threshold as a per-bucket policy (the same cut in every bucket)."""
        return Thresholds(
            thresholds=np.full(self.thresholds.n_buckets, self.single.threshold),
            target_precision=self.thresholds.target_precision,
        )

    def support(self) -> list[dict[str, Any]]:
        return [
            {"rows": int(n), "positives": int(p), "single_threshold_fallback": bool(f)}
            for n, p, f in zip(self.rows, self.positives, self.fallback, strict=True)
        ]


@dataclass(frozen=True)
class CrossFit:
    """Out-of-fold decisions of both policies over ``folds`` folds of the fit rows, and the verdict."""

    folds: int
    bucket_tp: int
    bucket_accepted: int
    single_tp: int
    single_accepted: int
    kept_per_bucket: bool  # False: every bucket got the single threshold
    per_bucket: Thresholds  # the joint fit on every row, kept or not

    @property
    def bucket_precision(self) -> float:
        return self.bucket_tp / self.bucket_accepted if self.bucket_accepted else 0.0

    @property
    def single_precision(self) -> float:
        return self.single_tp / self.single_accepted if self.single_accepted else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "kept_per_bucket": self.kept_per_bucket,
            "per_bucket_tp": self.bucket_tp,
            "per_bucket_precision": self.bucket_precision,
            "single_tp": self.single_tp,
            "single_precision": self.single_precision,
        }
