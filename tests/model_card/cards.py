"""Cards of the pure tests: one of a version that replaced champion v1, and its matured rows."""

from __future__ import annotations

from nextbuy.model_card.record import Card, Gate, MaturedRow, Snapshot, params_diff


def a_card(**changes) -> Card:
    fields = {
        "model_name": "nextbuy-tiny",
        "version": "2",
        "snapshot": Snapshot(
            snapshot="2026-02-10 00:00:00", rows={"train": 700, "test": 200}, weighted_md5="ab12.dir"
        ),
        "params_against": "1",
        "params_diff": params_diff({"train.lr": "0.005"}, {"train.lr": "0.01"}),
        "label_maturity": 0.25,
        "gate": Gate(
            passed=True,
            candidate={"auc": 0.71, "recall": 0.3, "precision": 0.2, "ece": 0.02, "rows": 200.0},
            champion={"auc": 0.7, "recall": 0.31, "precision": 0.2, "ece": 0.03, "rows": 200.0},
            champion_version="1",
            comparison={"auc": {"diff": 0.01, "lo": -0.01, "hi": 0.03}},
            confidence=0.95,
            floors={"min_auc": 0.5, "min_recall": 0.05},
        ),
    }
    return Card(**{**fields, **changes})


def matured(day: str, days: int, auc: float, below: list[str] | None = None) -> MaturedRow:
    return MaturedRow(
        checked_at=day,
        maturity_days=days,
        rows=1000,
        conversions=40,
        auc=auc,
        recall=0.3,
        release_auc=0.71,
        release_recall=0.3,
        below_floor=below or [],
    )
