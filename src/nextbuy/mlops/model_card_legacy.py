"""Cards for versions registered before deploy wrote cards: built on demand from what the
version's tags and its deploy run hold (the blessing artifact, when logged), every other field
said unknown on the card, with why."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from nextbuy.domain.model_card import Card, Gate, Snapshot, flat_params, params_diff

NOT_RECORDED = "registered before model cards: not recorded"
LEGACY_UNKNOWNS = (
    f"DVC hashes of the ingested and weighted data, rows per split: {NOT_RECORDED}",
    f"label maturity at training: {NOT_RECORDED}",
    f"calibration per uncertainty bucket and the thresholds served: {NOT_RECORDED} "
    "(they are in the model's files: `nextbuy verify-model` downloads them)",
    f"quality on low out-degree sources: {NOT_RECORDED}",
    f"training time and peak memory: {NOT_RECORDED} (the deploy run does not name its train run)",
)


def _blessing(client, run_id: str | None) -> dict:
    """The blessing.json its deploy logged, or {} (none logged, run deleted)."""
    if not run_id:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run_id, "blessing.json", tmp)).read_text())
        except (MlflowException, OSError, ValueError):
            return {}


def json_tag(tags: dict, key: str) -> dict | None:
    try:
        value = json.loads(tags.get(key) or "null")
    except ValueError:  # cut at the tag's length limit
        return None
    return value if isinstance(value, dict) else None


def _figures(tags: dict, who: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in tags.items():
        if key.startswith(f"{who}."):
            try:
                out[key.split(".", 1)[1]] = float(value)
            except ValueError:
                out[key.split(".", 1)[1]] = None
    return out


def _tag_reasons(tags: dict) -> list[str]:
    text = tags.get("reasons", "")
    return [] if text in ("", "all checks hold") else text.split("; ")


def _gate(tags: dict, blessing: dict) -> Gate | None:
    if "passed" not in tags and "passed" not in blessing:
        return None
    return Gate(
        passed=bool(blessing["passed"]) if "passed" in blessing else tags.get("passed") == "true",
        reasons=blessing["reasons"] if "reasons" in blessing else _tag_reasons(tags),
        candidate=blessing.get("candidate") or _figures(tags, "candidate"),
        champion=blessing.get("champion") or (_figures(tags, "champion") or None),
        champion_version=blessing.get("champion_version"),
        comparison=blessing.get("comparison"),
        not_comparable_reason=blessing.get("not_comparable_reason") or tags.get("not_comparable_reason"),
    )


def _params(client, name: str, mv, blessing: dict) -> tuple[dict[str, str] | None, str | None, list | None]:
    """The version's flat params, the champion it replaced and the params that differ from it."""
    from nextbuy.mlops.model_cards import champion_params

    lineage = blessing.get("lineage") or {}
    raw = lineage.get("params") if lineage else json_tag(mv.tags, "lineage.params")
    params = flat_params(raw) if isinstance(raw, dict) else None
    against = blessing.get("champion_version")
    if against is None:
        return params, None, [] if blessing else None
    before = champion_params(client, name, against)
    diff = params_diff(before, params) if params is not None and before is not None else None
    return params, str(against), diff


def from_tags(client, mv) -> Card:
    """The card of model version ``mv`` (an MLflow ModelVersion) from its tags and deploy run."""
    tags = dict(mv.tags)
    blessing = _blessing(client, mv.run_id)
    training = blessing.get("training_data") or json_tag(tags, "training_data") or {}
    params, against, diff = _params(client, mv.name, mv, blessing)
    unknown = list(LEGACY_UNKNOWNS)
    if params is None:
        unknown.append("params: the run's lineage records none readable (cut at the tag length limit)")
    if not blessing:
        unknown.append(
            "the gate's confidence intervals and the champion it faced: no blessing.json in its run"
        )
    return Card(
        model_name=mv.name,
        version=str(mv.version),
        registered_at=str(pd.Timestamp(int(mv.creation_timestamp), unit="ms").floor("s")),
        run_id=mv.run_id,
        git_commit=tags.get("lineage.git_commit"),
        airflow_run_id=tags.get("lineage.airflow_run_id"),
        snapshot=Snapshot(
            snapshot=training.get("snapshot") or tags.get("card.snapshot"),
            first_shown_at=training.get("first_shown_at"),
            last_shown_at=training.get("last_shown_at"),
        )
        if training
        else None,
        params=params,
        params_against=against,
        params_diff=diff,
        gate=_gate(tags, blessing),
        unknown=unknown,
        generated="on demand",
    )
