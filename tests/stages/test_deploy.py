"""deploy stage: floors decide whether the champion alias moves."""

from __future__ import annotations

from nextbuy.config import DeployConfig
from nextbuy.stages.deploy import check_floors


def metrics(recall: float, ece: float | None):
    return ({"test_delay_corrected": {"ece_calibrated": ece}},
            {"per_bucket": {"test_delay_corrected": {"recall": recall, "precision": 0.3}}})


def test_passes_when_every_floor_holds():
    passed, reasons, figures = check_floors(*metrics(0.2, 0.01), DeployConfig(min_recall=0.1, max_calibration_error=0.05))
    assert passed and not reasons and figures["recall_test"] == 0.2


def test_each_broken_floor_is_named():
    passed, reasons, _ = check_floors(*metrics(0.05, 0.3), DeployConfig(min_recall=0.1, max_calibration_error=0.05))
    assert not passed and len(reasons) == 2
    assert "recall" in reasons[0] and "calibration" in reasons[1]
    passed, reasons, _ = check_floors(*metrics(0.5, None), DeployConfig())
    assert not passed and "calibration" in reasons[0]
