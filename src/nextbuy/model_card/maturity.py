"""Metrics that mature: the recent versions of a store's model (champion, previous, refused
challengers: the newest ``monitor.matured_versions`` complete ones, and whatever the aliases
point to) re-scored on the traffic whose labels have since matured, a dated row per maturity
appended to each one's model card (``facts.matured_row``). A version whose matured AUC or recall
falls below the gate's floors is flagged on its card (tag ``matured.flag``) and in the monitor's
alerts.json (``matured``), which ``nextbuy alerts`` prints.

Run by the monitor stage after it watched the traffic, and by ``nextbuy models mature``, on the
engine of ``engine.kind``: in this process (:class:`InProcess`), or on Spark
(``nextbuy.engines.spark.maturity``: the traffic scored on the executors, the counts and the
AUC's rank sums aggregated there), with the same answers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
from mlflow.exceptions import MlflowException

from nextbuy.domain import catalogue
from nextbuy.mlops import io, schemas
from nextbuy.model_card.facts import Measured, matured_measures, matured_row
from nextbuy.model_card.mlflow_cards import read, write
from nextbuy.model_card.record import add_matured, flagged
from nextbuy.release import registry

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nextbuy.config import DeployConfig, MonitorConfig

log = logging.getLogger(__name__)


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    """version -> alias (champion, previous, challenger) of ``name``."""
    return {str(v): alias for alias, v in client.get_registered_model(name).aliases.items()}


def recent_versions(client: MlflowClient, name: str, products: pd.DataFrame, newest: int) -> list[str]:
    """The newest ``newest`` complete versions of this store's catalogue plus those the aliases
    point to, newest first (versions of another catalogue score other products: left out)."""
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version))
    mine = [
        v
        for v in versions
        if registry.is_complete(v.tags)
        and catalogue.mismatch(v.tags.get(registry.CATALOGUE), products) is None
    ]
    if not mine:
        return []
    aliased = set(aliases_of(client, name))
    return [str(v.version) for i, v in enumerate(mine) if i < newest or str(v.version) in aliased]


class Measurer(Protocol):
    """Measures a version on the traffic whose labels have matured (``facts.Measured`` per
    maturity): :class:`InProcess` (the pandas engine) or, with ``engine.kind: spark``,
    ``nextbuy.engines.spark.maturity.OnSpark``."""

    def measured(self, bundle: Any, now: pd.Timestamp, days: list[int]) -> list[Measured]: ...


class InProcess:
    """The pandas engine: the traffic table read into this process once, each version scoring
    all of it (``facts.matured_measures``)."""

    def __init__(self, impressions: str | Path):
        self.traffic = io.read_table(impressions, schemas.IMPRESSIONS_LOG)

    def measured(self, bundle: Any, now: pd.Timestamp, days: list[int]) -> list[Measured]:
        traffic = self.traffic
        predictions = bundle.score(traffic["source_id"].to_numpy(), traffic["shown_id"].to_numpy())
        return matured_measures(traffic, predictions, now, days)


def mature_version(
    client: MlflowClient,
    name: str,
    version: str,
    measurer: Measurer,
    now: pd.Timestamp,
    settings: tuple[MonitorConfig, DeployConfig],
) -> dict:
    """Re-score ``version`` on the traffic (``measurer``) and append its matured rows to its
    card. ``settings``: (monitor config, deploy config)."""
    monitor, deploy = settings
    card = read(client, name, version)  # a version without one is refused first
    bundle = registry.load_version(name, version)
    measures = measurer.measured(bundle, now, list(monitor.matured_days))
    release = card.gate.candidate if card.gate is not None else {}
    floors = {"min_auc": deploy.min_auc, "min_recall": deploy.min_recall}
    least = monitor.matured_min_conversions
    made = (matured_row(now, m, least, release, floors) for m in measures)
    rows = [r for r in made if r is not None]
    if rows:
        card = add_matured(card, rows)
        write(client, card)
    return {
        "version": version,
        "rows": [r.model_dump() for r in rows],
        "below_floor": flagged(card) if rows else [],
    }


def mature_recent(
    client: MlflowClient,
    name: str,
    products: pd.DataFrame,
    traffic_files: tuple,
    settings: tuple[MonitorConfig, DeployConfig],
    engine: Callable[[Path], Measurer] = InProcess,
) -> list[dict]:
    """Every recent version re-scored (:func:`mature_version`); ``traffic_files``: (impressions
    table, its meta.json); ``engine``: the measurer of the impressions table the caller's
    ``engine.kind`` chose (default: this process). A version that cannot be loaded is a
    warning, not a failure of the monitor; its entry says why."""
    versions = recent_versions(client, name, products, settings[0].matured_versions)
    if not versions:  # nothing registered for this store yet: the traffic is not read
        return []
    impressions, meta = traffic_files
    measurer = engine(Path(impressions))
    now = pd.Timestamp(io.read_json(meta)["now"])
    alias = aliases_of(client, name)
    out = []
    for version in versions:
        try:
            entry = mature_version(client, name, version, measurer, now, settings)
        except (MlflowException, io.DataError, OSError) as err:
            log.warning("model card of %s v%s: not re-scored: %s", name, version, err)
            entry = {"version": version, "rows": [], "below_floor": [], "error": str(err)}
        out.append({**entry, "alias": alias.get(version)})
        for broken in entry["below_floor"]:
            log.warning("%s v%s matured below the gate's floor: %s", name, version, broken)
    return out


def flags(matured: list[dict]) -> list[dict]:
    """The versions whose latest matured metrics broke a floor (what alerts.json lists)."""
    return [
        {"version": m["version"], "alias": m["alias"], "below_floor": m["below_floor"]}
        for m in matured
        if m["below_floor"]
    ]
