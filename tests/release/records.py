"""A release record as the deploy stage builds it, for the release tests."""

from __future__ import annotations

from typing import Any

from nextbuy.release import Release


def judged_release(
    passed: bool, model_name: str = "nextbuy", lineage: dict[str, Any] | None = None
) -> Release:
    """A judged, not yet published, first release of a 60-product catalogue."""
    return Release(
        passed=passed,
        reasons=[] if passed else ["auc 0.51 < 0.6"],
        notes=[],
        champion_comparable=None,
        not_comparable_reason=None,
        candidate={"auc": 0.7, "ece": None},
        champion=None,
        comparison=None,
        confidence=0.95,
        tolerance=0.02,
        floors={"min_auc": 0.6, "min_recall": 0.0, "min_precision": 0.0, "max_calibration_error": 1.0},
        model_name=model_name,
        catalogue="60:0123456789abcdef",
        champion_version=None,
        champion_catalogue=None,
        champion_training_overlap=None,
        training_data=None,
        lineage=lineage or {},
        evaluation={"split": "test", "rows": 1500},
    )
