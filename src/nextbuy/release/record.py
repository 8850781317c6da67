"""The release record: what the gate decided for a candidate (:class:`Verdict`) and everything
the release says about it (:class:`Release`, written as ``models/deploy/blessing.json``, set as
tags on the model version, read back by the model card).

One typed record, built by the deploy stage, completed by :func:`publishing.publish` with what
the registry did (the version, its files, the alias move), and serialised in one place
(:meth:`Release.to_json` / :meth:`Release.from_json`), so every reader sees the same keys."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

Figures = dict[str, float | None]  # recall, precision, auc, ece, rows (gate.figures)
Interval = dict[str, float]  # diff, lo, hi of (candidate - champion)

FLOOR_KEYS = ("min_auc", "min_recall", "min_precision", "max_calibration_error")


class Verdict(BaseModel):
    """The gate's answer on the test rows: every floor, then non-inferiority against a
    comparable champion by paired bootstrap CIs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    reasons: list[str]  # each floor or comparison that failed, as a sentence
    notes: list[str]  # what the verdict cannot show (a test split too small to judge)
    champion_comparable: bool | None  # None: no champion
    not_comparable_reason: str | None
    candidate: Figures
    champion: Figures | None  # None: no champion, or one not comparable
    comparison: dict[str, Interval] | None  # metric -> CI of (candidate - champion)
    confidence: float  # of the comparison's CIs
    tolerance: float  # a compared metric may be this much worse (CI's lower end above -tolerance)
    floors: dict[str, float]  # min_auc, min_recall, min_precision, max_calibration_error


class Release(Verdict):
    """The verdict with what was judged against what, and (once published) what the registry did."""

    model_name: str
    catalogue: str  # the candidate's (domain.catalogue.identity)
    champion_version: str | None
    champion_catalogue: str | None
    champion_training_overlap: int | None  # test rows the champion learned from (None: unchecked)
    training_data: dict[str, Any] | None  # what the candidate learned from (ingest's record)
    lineage: dict[str, Any]  # git commit, params, data digests, Airflow run
    evaluation: dict[str, Any]  # the rows judged on: split, count, labels
    version: str | None = None  # the registered version
    artifacts: dict[str, Any] | None = None  # digest and manifest of the version's files
    action: str | None = None  # what the registry did with the aliases

    def published(self, version: str, artifacts: dict[str, Any], action: str) -> Release:
        return self.model_copy(update={"version": version, "artifacts": artifacts, "action": action})

    def to_json(self) -> dict[str, Any]:
        """The record as blessing.json holds it."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Any) -> Release:
        return cls.model_validate(data)
