"""A registered version's model card, pure: the typed record of what a release knew (data
snapshot, code, params changed, label maturity, calibration, thresholds, the gate's verdict,
training cost) plus the dated rows of its metrics as its traffic's labels matured since
(``text`` renders it).

A field that is None was not known when the card was made; ``unknown`` says why."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from nextbuy import yaml_io


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Snapshot(Record):
    """The data a version learned from and was judged on."""

    snapshot: str | None = None
    first_shown_at: str | None = None
    last_shown_at: str | None = None
    rows: dict[str, int] | None = None  # impressions per split (train, calib, test)
    products: int | None = None
    ingested_md5: str | None = None  # data/ingested as DVC hashes it (md5 of its .dir listing)
    weighted_md5: str | None = None  # data/weighted, likewise
    exposures: str | None = None  # logged | replayed (from the store's orders) | simulated


class ParamChange(Record):
    key: str  # dotted params.yaml key
    before: str | None  # None: absent in the other version
    after: str | None


class Gate(Record):
    passed: bool
    reasons: list[str] = []
    candidate: dict[str, float | None] = {}
    champion: dict[str, float | None] | None = None
    champion_version: str | None = None
    comparison: dict[str, dict[str, float]] | None = None  # metric -> diff, lo, hi (candidate - champion)
    confidence: float | None = None
    floors: dict[str, float] | None = None  # min_auc, min_recall, min_precision, max_calibration_error
    not_comparable_reason: str | None = None


class Thresholds(Record):
    served: list[float | None]  # per uncertainty bucket (None: accepts nothing)
    per_bucket_won: bool | None = None  # kept per bucket because they beat one threshold out of fold


class TopKOrder(Record):
    """The order the served top-K follows, chosen out of fold (``domain.served_ranking``)."""

    served: str  # model | co_purchase | popularity
    reason: str
    judged_on: str = ""
    k: int | None = None
    hits: dict[str, float] = {}  # Hits@k of each ranking on the held-out purchases
    prior: float = 0.0  # popularity pseudo-counts smoothing co-purchase counts
    prior_hits: dict[str, float] = {}  # Hits@k of co-purchase by prior


class LowDegree(Record):
    """The gate's test rows whose source has few out-edges (cold sources)."""

    max_out_degree: int
    rows: int
    sources: int
    auc: float | None
    recall: float | None


class Training(Record):
    seconds: float | None = None
    peak_memory_mb: float | None = None
    run_id: str | None = None


class MaturedRow(Record):
    """The version re-scored on traffic whose labels had ``maturity_days`` to arrive."""

    checked_at: str  # the traffic's "now": when the labels were read
    maturity_days: int
    rows: int
    conversions: int
    auc: float | None
    recall: float | None
    release_auc: float | None  # what the gate estimated at release (delay-corrected test split)
    release_recall: float | None
    below_floor: list[str] = []  # e.g. "auc 0.48 < 0.50"


class Card(Record):
    model_name: str
    version: str
    registered_at: str | None = None
    run_id: str | None = None
    git_commit: str | None = None
    airflow_run_id: str | None = None
    snapshot: Snapshot | None = None
    params: dict[str, str] | None = None  # flat params.yaml of the run
    params_against: str | None = None  # the version the params diff is against
    params_diff: list[ParamChange] | None = None
    label_maturity: float | None = None  # share of training conversions expected still unseen
    ece_by_bucket: dict[str, float | None] | None = None
    thresholds: Thresholds | None = None
    top_k_order: TopKOrder | None = None
    gate: Gate | None = None
    low_degree: LowDegree | None = None
    training: Training | None = None
    matured: list[MaturedRow] = []
    unknown: list[str] = []  # what could not be known, and why
    generated: str = "deploy"  # what made the card: deploy, at registration


def flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """params.yaml as dotted keys and text values (what MLflow's params hold, searchable)."""
    return {key: param_text(value) for key, value in yaml_io.dotted_leaves(params, prefix)}


def param_text(value: Any) -> str:
    """One param value as text: strings as they are, everything else as YAML flow (0.005, true,
    null, [auc, recall]) so that `models find --param train.lr=0.005` matches what was logged."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def params_diff(before: dict[str, str], after: dict[str, str]) -> list[ParamChange]:
    """Every dotted key whose value differs (or exists on one side only), sorted."""
    keys = sorted(set(before) | set(after))
    return [
        ParamChange(key=k, before=before.get(k), after=after.get(k))
        for k in keys
        if before.get(k) != after.get(k)
    ]


def snapshot_id(card: Card) -> str | None:
    """The dataset name of the card's snapshot: model name @ snapshot time."""
    snap = card.snapshot
    if snap is None or snap.snapshot is None:
        return None
    return f"{card.model_name}@{snap.snapshot}"


def add_matured(card: Card, rows: list[MaturedRow]) -> Card:
    """The card with ``rows`` appended; a row for the same (checked_at, maturity) replaces the old."""
    new = {(r.checked_at, r.maturity_days) for r in rows}
    kept = [r for r in card.matured if (r.checked_at, r.maturity_days) not in new]
    ordered = sorted([*kept, *rows], key=lambda r: (r.checked_at, r.maturity_days))
    return card.model_copy(update={"matured": ordered})


def latest_matured(card: Card) -> MaturedRow | None:
    """The most mature row of the latest check (what `models list` shows)."""
    if not card.matured:
        return None
    last = max(r.checked_at for r in card.matured)
    return max((r for r in card.matured if r.checked_at == last), key=lambda r: r.maturity_days)


def flagged(card: Card) -> list[str]:
    """The floors the latest check's matured metrics broke (empty: none)."""
    if not card.matured:
        return []
    last = max(r.checked_at for r in card.matured)
    return [f"{r.maturity_days}d: {b}" for r in card.matured if r.checked_at == last for b in r.below_floor]
