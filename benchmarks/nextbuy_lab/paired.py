"""Paired comparisons over seeds: each seed's difference between two methods, its mean and a
t-based 95% confidence interval (a gap whose interval holds 0 is inside the seed noise)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def paired_gaps(
    per_seed: list[dict[str, dict]], base: str, metric: str, keys: Iterable[str]
) -> dict[str, dict]:
    """``metric`` of ``base`` minus that of each other key, per seed: ``{"mean", "ci95"}``
    (the interval is NaN with one seed)."""
    from scipy import stats

    out = {}
    for key in keys:
        if key == base:
            continue
        gap = np.array([row[base][metric] - row[key][metric] for row in per_seed], dtype=float)
        n = len(gap)
        half = float(stats.t.ppf(0.975, n - 1) * gap.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        out[key] = {"mean": float(gap.mean()), "ci95": [float(gap.mean() - half), float(gap.mean() + half)]}
    return out
