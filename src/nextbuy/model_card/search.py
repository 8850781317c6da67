"""The model catalogue's queries, on MLflow's own search (no database of our own): the versions
of a registered model with their alias, snapshot, release and matured AUC and status; versions
by data snapshot or DVC hash (the blast radius of a snapshot: every version that learned from
it), by param value (``search_runs`` on the deploy runs' params), by metric threshold; and the
difference of two versions (params, data, metrics).

MLflow holds tag values as text: a metric threshold is applied to the versions MLflow's search
returned for the model."""

from __future__ import annotations

import operator
import re
from typing import TYPE_CHECKING

import pandas as pd

from nextbuy import yaml_io
from nextbuy.model_card.maturity import aliases_of
from nextbuy.model_card.mlflow_cards import CARD, FLAG, MATURED, lineage_params, read
from nextbuy.model_card.record import Card, param_text
from nextbuy.release import registry

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq}
_CONDITION = re.compile(r"^\s*([\w.]+)\s*(>=|<=|>|<|=)\s*([-+0-9.eE]+)\s*$")


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _versions(client: MlflowClient, name: str, extra: str = "") -> list[ModelVersion]:
    query = f"name='{_quote(name)}'" + (f" AND {extra}" if extra else "")
    return list(client.search_model_versions(query, max_results=10_000))


def status(tags: dict) -> str:
    """passed / refused / incomplete / orphaned, and 'flagged' when its matured metrics broke a floor."""
    if tags.get(registry.ORPHANED) == "true":
        return "orphaned"
    if not registry.is_complete(tags):
        return "incomplete"
    verdict = "passed" if tags.get(registry.PASSED) == "true" else "refused"
    if tags.get(registry.FORCED) == "true":
        verdict += ", forced"
    return verdict + (", FLAGGED" if tags.get(FLAG) == "below_floor" else "")


def snapshot_of_tags(tags: dict) -> str | None:
    """The snapshot a version learned from: its card tag, else its training_data record."""
    card = registry.json_tag(tags, CARD) or {}
    return card.get("snapshot") or (registry.json_tag(tags, registry.TRAINING_DATA) or {}).get("snapshot")


def version_metrics(tags: dict) -> dict[str, float | None]:
    """A version's figures under the names ``models find --metric`` takes: ``candidate.*`` and
    ``champion.*`` from its gate record, ``matured.*`` from its latest re-scoring."""
    gate = registry.json_tag(tags, registry.GATE) or {}
    figures = {
        f"{who}.{key}": value
        for who in ("candidate", "champion")
        for key, value in (gate.get(who) or {}).items()
    }
    matured = registry.json_tag(tags, MATURED) or {}
    return figures | {f"matured.{key}": value for key, value in matured.items() if key != "checked_at"}


def listing(client: MlflowClient, name: str) -> list[dict]:
    """Every version, newest first: version, alias, snapshot, release AUC, matured AUC, status."""
    alias = aliases_of(client, name)
    rows = []
    for mv in sorted(_versions(client, name), key=lambda v: -int(v.version)):
        tags = dict(mv.tags)
        figures = version_metrics(tags)
        release, matured = figures.get("candidate.auc"), figures.get("matured.auc")
        rows.append(
            {
                "version": str(mv.version),
                "alias": alias.get(str(mv.version)),
                "snapshot": snapshot_of_tags(tags),
                "release_auc": None if release is None else f"{release:.4f}",
                "matured_auc": None if matured is None else f"{matured:.4f} @{figures['matured.days']}d",
                "status": status(tags),
            }
        )
    return rows


def by_snapshot(client: MlflowClient, name: str, snapshot: str) -> set[str]:
    """Versions that learned from ``snapshot`` (any form pandas reads: 2026-02-10, ...)."""
    when = str(pd.Timestamp(snapshot))
    carded = _versions(client, name, f'tags.`{CARD}` LIKE \'%"snapshot":"{_quote(when)}"%\'')
    recorded = _versions(
        client, name, f'tags.`{registry.TRAINING_DATA}` LIKE \'%"snapshot": "{_quote(when)}"%\''
    )
    return {str(v.version) for v in [*carded, *recorded]}


def by_hash(client: MlflowClient, name: str, digest: str) -> set[str]:
    """Versions whose ingested or weighted data has this DVC md5 (a prefix will do)."""
    prefix = _quote(digest.strip().removesuffix(".dir"))
    found = set()
    for key in ("ingested_md5", "weighted_md5"):
        query = f'tags.`{CARD}` LIKE \'%"{key}":"{prefix}%\''
        found |= {str(v.version) for v in _versions(client, name, query)}
    return found


def by_param(client: MlflowClient, name: str, condition: str) -> set[str]:
    """Versions whose deploy run logged param KEY=VALUE (params.yaml's dotted key); a version
    whose run is deleted or gone is matched on its ``lineage.params`` tag (the same params)."""
    key, sep, value = condition.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--param {condition!r}: give KEY=VALUE, e.g. train.lr=0.005")
    text = param_text(yaml_io.load(value)) if value.strip() else ""
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"params.`{key.strip()}` = '{_quote(text)}'",
        max_results=10_000,
    )
    run_ids = {r.info.run_id for r in runs}
    found = set()
    for v in _versions(client, name):
        if v.run_id in run_ids or (lineage_params(v.tags) or {}).get(key.strip()) == text:
            found.add(str(v.version))
    return found


def by_metric(client: MlflowClient, name: str, condition: str) -> set[str]:
    """Versions whose figure METRIC (candidate.auc, matured.auc, ...) meets OP VALUE."""
    match = _CONDITION.match(condition)
    if match is None:
        raise ValueError(f"--metric {condition!r}: give METRIC OP VALUE, e.g. 'matured.auc<0.6'")
    key, op, bound = match.group(1), _OPS[match.group(2)], float(match.group(3))
    found = set()
    for mv in _versions(client, name):
        value = version_metrics(dict(mv.tags)).get(key)
        if value is not None and op(float(value), bound):
            found.add(str(mv.version))
    return found


def diff(
    client: MlflowClient, name: str, first: str, second: str
) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """What differs between two versions: params (their deploy runs'), data (snapshot and DVC
    hashes), metrics (the gate's and the latest re-scoring's); each a list of (key, first, second)."""
    a, b = (read(client, name, v) for v in (first, second))
    ta, tb = (dict(client.get_model_version(name, v).tags) for v in (first, second))

    def changed(x: dict, y: dict) -> list[tuple[str, str | None, str | None]]:
        return [(k, x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]

    def data(card: Card, tags: dict[str, str]) -> dict:
        snap = card.snapshot
        return {
            "snapshot": snapshot_of_tags(tags),
            "window": f"{_minute(snap.first_shown_at)} → {_minute(snap.last_shown_at)}" if snap else None,
            "ingested_md5": snap.ingested_md5 if snap else None,
            "weighted_md5": snap.weighted_md5 if snap else None,
            "catalogue": tags.get(registry.CATALOGUE),
            "git_commit": card.git_commit,
        }

    def metrics(tags: dict[str, str]) -> dict:
        return {k: _figure_text(v) for k, v in version_metrics(tags).items()}

    def thresholds(card: Card) -> dict:
        # Re-fitted at every release on its calibration split, for thresholds.target_precision:
        # they move with the data even when no param does.
        served = card.thresholds.served if card.thresholds else []
        return {
            f"bucket {i} (re-fitted each release)": "accepts nothing" if t is None else f"{t:.3f}"
            for i, t in enumerate(served)
        }

    return {
        "params": changed(_said(a.params or {}), _said(b.params or {})),
        "data": changed(data(a, ta), data(b, tb)),
        "thresholds": changed(thresholds(a), thresholds(b)),
        "metrics": changed(metrics(ta), metrics(tb)),
    }


def _figure_text(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _minute(when: str | None) -> str | None:
    """A recorded time to the minute (the card keeps nanoseconds)."""
    return None if when is None else pd.Timestamp(when).strftime("%Y-%m-%d %H:%M")


def _said(params: dict[str, str]) -> dict[str, str]:
    """Params as a reader should see them: an empty setting says that the default applied."""
    return {k: "null (unset: the default applied)" if v in ("None", "null") else v for k, v in params.items()}
