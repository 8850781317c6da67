"""Model cards in MLflow's store: what deploy knows about a version gathered into a
:class:`~nextbuy.model_card.record.Card`, written as the version's Description (the UI's version
page), as artifacts of the version's run (``model_card/README.md``, the Hugging Face layout,
and ``model_card/card.json``, the record), as searchable version tags (``card``,
``matured``, ``matured.flag``) and the run's params (params.yaml, dotted keys); read back from the record
(:func:`read`), which every version deploy registered holds."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from nextbuy import paths
from nextbuy.mlops import io, schemas
from nextbuy.release import Release, registry

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nextbuy.config import DeployConfig
    from nextbuy.serving import ServingBundle
from nextbuy.model_card.facts import (
    dvc_dir_md5,
    ece_by_bucket,
    label_maturity,
    low_degree_quality,
    out_degree,
)
from nextbuy.model_card.record import (
    Card,
    Gate,
    ParamChange,
    Snapshot,
    Thresholds,
    TopKOrder,
    Training,
    flagged,
    flat_params,
    latest_matured,
    params_diff,
)
from nextbuy.model_card.text import description_with_notes, render

log = logging.getLogger(__name__)

ARTIFACT_DIR = "model_card"
CARD_FILE, RECORD_FILE = "README.md", "card.json"
# Version tags, one JSON object each (search_model_versions "tags.card LIKE '%...%'"): the data
# the version learned from (snapshot, DVC hashes) and its latest re-scoring on matured labels
# (auc, recall, days, checked_at); the re-scoring's verdict on the floors is plain text, so a
# search for flagged versions is an equality.
CARD, MATURED, FLAG = "card", "matured", "matured.flag"
_PARAM_BATCH = 100  # MLflow's limit of params per log_batch


def dvc_md5(folder: Path) -> str | None:
    """``folder`` hashed as DVC hashes a folder out (what dvc.lock records); None when absent."""
    if not folder.is_dir():
        return None
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.md5()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        files.append((path.relative_to(folder).as_posix(), digest.hexdigest()))
    return dvc_dir_md5(files)


def snapshot_of(weighted: pd.DataFrame, training_data: dict | None, products: int) -> Snapshot:
    """The data a deploy's candidate learned from: the ingest record, split sizes and digests."""
    record = training_data or {}
    return Snapshot(
        snapshot=record.get("snapshot"),
        first_shown_at=record.get("first_shown_at"),
        last_shown_at=record.get("last_shown_at"),
        rows={k: int(v) for k, v in weighted["split"].value_counts().sort_index().items()},
        products=products,
        ingested_md5=dvc_md5(paths.INGESTED),
        weighted_md5=dvc_md5(paths.WEIGHTED),
        exposures=io.read_json(paths.INGEST_META).get("exposures") if paths.INGEST_META.exists() else None,
    )


def _train_run(client: MlflowClient) -> Training:
    try:
        run_id = io.read_json(paths.GNN_META).get("mlflow_run_id")
        metrics = client.get_run(run_id).data.metrics if run_id else {}
    except (MlflowException, io.DataError, OSError) as err:  # a card states what it cannot know
        log.warning("model card: training run not readable: %s", err)
        return Training()
    return Training(
        seconds=metrics.get("train_seconds"), peak_memory_mb=metrics.get("peak_memory_mb"), run_id=run_id
    )


def _per_bucket_won() -> bool | None:
    path = paths.metrics_file("thresholds")
    cross_fit = io.read_json(path).get("cross_fit") if path.exists() else None
    return None if not cross_fit else bool(cross_fit.get("kept_per_bucket"))


def top_k_order() -> TopKOrder | None:
    """The served top-K order as calibrate chose it (None: no choice recorded)."""
    if not paths.SERVED_RANKING.exists():
        return None
    choice = io.read_json(paths.SERVED_RANKING)
    return TopKOrder(
        served=choice["served"],
        reason=choice["reason"],
        judged_on=choice["judged_on"],
        k=choice["k"],
        hits=choice["hits"],
        prior=choice["prior"],
        prior_hits=choice["prior_hits"],
    )


def gate_of(release: Release) -> Gate:
    """The verdict as the card shows it, with the floors it was judged against."""
    return Gate(
        passed=release.passed,
        reasons=release.reasons,
        candidate=release.candidate,
        champion=release.champion,
        champion_version=release.champion_version,
        comparison=release.comparison,
        confidence=release.confidence,
        floors=release.floors,
        not_comparable_reason=release.not_comparable_reason,
    )


def champion_params(client: MlflowClient, name: str, version: str | None) -> dict[str, str] | None:
    """The flat params of ``version``'s run (logged by its deploy), else from its lineage tag;
    None when neither holds them."""
    if version is None:
        return None
    mv = client.get_model_version(name, str(version))
    try:
        logged = client.get_run(mv.run_id).data.params if mv.run_id else {}
    except MlflowException:  # the run is gone: its lineage tag still holds the params
        logged = {}
    if logged:
        return dict(logged)
    return lineage_params(mv.tags)


def lineage_params(tags: Mapping[str, str]) -> dict[str, str] | None:
    """The flat params a version's ``lineage`` tag records (what its deploy run logged); None
    when it holds none."""
    params = (registry.json_tag(tags, registry.LINEAGE) or {}).get("params")
    return flat_params(params) if isinstance(params, dict) else None


def _diff(
    before: dict[str, str] | None, after: dict[str, str], against: str | None
) -> list[ParamChange] | None:
    """No champion: nothing changed against it; a champion whose params are unknown: None."""
    if against is None:
        return []
    return None if before is None else params_diff(before, after)


def deploy_card(
    client: MlflowClient,
    release: Release,
    candidate: ServingBundle,
    evaluation: tuple[pd.DataFrame, np.ndarray],
    weighted: pd.DataFrame,
    cfg: DeployConfig,
) -> Card:
    """The card of the version deploy just published (``release``). ``evaluation``: the gate's
    (rows, label); ``weighted``: the weighted impressions; ``cfg``: the deploy section."""
    rows, label = evaluation
    name, version = release.model_name, str(release.version)
    params = flat_params(release.lineage.get("params") or {})
    against = release.champion_version
    before = champion_params(client, name, against)
    predictions = candidate.score(rows["source_id"].to_numpy(), rows["shown_id"].to_numpy())
    train = weighted[weighted["split"] == "train"]
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    degree = out_degree(edges["src"].to_numpy(), candidate.n_products)
    mv = client.get_model_version(name, version)
    card = Card(
        model_name=name,
        version=str(version),
        registered_at=str(pd.Timestamp(int(mv.creation_timestamp), unit="ms").floor("s")),
        run_id=mv.run_id,
        git_commit=release.lineage.get("git_commit"),
        airflow_run_id=release.lineage.get("airflow_run_id"),
        snapshot=snapshot_of(weighted, release.training_data, candidate.n_products),
        params=params,
        params_against=against,
        params_diff=_diff(before, params, against),
        label_maturity=label_maturity(train["label"].to_numpy(), train["p_flip"].to_numpy()),
        ece_by_bucket=ece_by_bucket(
            predictions["prob_calibrated"].to_numpy(),
            np.asarray(label, dtype=float),
            predictions["bucket"].to_numpy(),
            candidate.calibration.n_buckets,
        ),
        thresholds=Thresholds(
            served=[None if np.isposinf(t) else float(t) for t in candidate.thresholds.thresholds],
            per_bucket_won=_per_bucket_won(),
        ),
        top_k_order=top_k_order(),
        gate=gate_of(release),
        low_degree=low_degree_quality(
            rows["source_id"].to_numpy(), degree, predictions, label, cfg.card_low_out_degree
        ),
        training=_train_run(client),
    )
    return card.model_copy(update={"unknown": deploy_unknowns(card)})


def deploy_unknowns(card: Card) -> list[str]:
    """What a deploy could not know, and why."""
    out = []
    if card.thresholds is not None and card.thresholds.per_bucket_won is None:
        out.append(
            "whether per-bucket thresholds beat one threshold out of fold: not checked "
            "(thresholds.cross_fit_folds < 2, or the per-bucket fit missed the target precision)"
        )
    if card.params_diff is None:
        out.append(f"params of champion v{card.params_against}: its run records none")
    if card.training is None or card.training.peak_memory_mb is None:
        out.append("training peak memory: the train run records none")
    return out


def _version_tags(card: Card) -> dict[str, str]:
    tags = {}
    if card.snapshot is not None:
        data = {
            "snapshot": card.snapshot.snapshot,
            "ingested_md5": card.snapshot.ingested_md5,
            "weighted_md5": card.snapshot.weighted_md5,
        }
        tags[CARD] = registry.json_text({k: v for k, v in data.items() if v})
    row = latest_matured(card)
    if row is not None:
        tags[MATURED] = registry.json_text(
            {
                "auc": None if row.auc is None else round(row.auc, 4),
                "recall": None if row.recall is None else round(row.recall, 4),
                "days": row.maturity_days,
                "checked_at": row.checked_at,
            }
        )
        tags[FLAG] = "below_floor" if flagged(card) else "ok"
    return tags


def write(client: MlflowClient, card: Card, log_params: bool = False) -> None:
    """The card as the version's Description, its run's artifacts and the version's search tags;
    with ``log_params`` also the run's params (flat params.yaml, once: at deploy)."""
    name, version = card.model_name, card.version
    for key, value in _version_tags(card).items():
        client.set_model_version_tag(name, version, key, value)
    current = client.get_model_version(name, version).description
    client.update_model_version(name, version, description=description_with_notes(card, current))
    if card.run_id is None:
        return
    if log_params and card.params:
        items = [Param(k[:250], v[:6000]) for k, v in card.params.items()]
        for i in range(0, len(items), _PARAM_BATCH):
            client.log_batch(card.run_id, params=items[i : i + _PARAM_BATCH])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CARD_FILE).write_text(render(card))
        (Path(tmp) / RECORD_FILE).write_text(card.model_dump_json(indent=1))
        client.log_artifacts(card.run_id, tmp, ARTIFACT_DIR)


def missing(name: str, version: str) -> str:
    """The one line refusing a version that holds no card: which, and how to register it again."""
    return (
        f"{name} v{version} has no model card ({ARTIFACT_DIR}/{RECORD_FILE} in its run, which deploy "
        f"writes): register the model again by running its deploy stage (`nextbuy deploy`)"
    )


def with_run_state(client: MlflowClient, card: Card, run_id: str) -> Card:
    """The card, saying so when its deploy run is deleted (its params, metrics and the card's
    own file go with the next `mlflow gc`; the version's tags keep the lineage)."""
    if client.get_run(run_id).info.lifecycle_stage != "deleted":
        return card
    gone = (
        f"its deploy run {run_id} is deleted: `mlflow gc` removes its params, metrics and this "
        "card's file (the version's lineage.params tag keeps the params)"
    )
    return card.model_copy(update={"unknown": [*card.unknown, gone]})


def read(client: MlflowClient, name: str, version: str) -> Card:
    """The version's card, the record its deploy (or a re-scoring) stored; a version without a
    readable one is refused (an MlflowException saying :func:`missing`)."""
    mv = client.get_model_version(name, str(version))
    if mv.run_id:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(mv.run_id, f"{ARTIFACT_DIR}/{RECORD_FILE}", tmp)
                card = Card.model_validate_json(Path(path).read_text())
            except (MlflowException, OSError, ValueError) as err:  # refused below, in one line
                log.debug("no readable card for %s v%s: %s", name, version, err)
            else:
                return with_run_state(client, card, mv.run_id)
    raise MlflowException(missing(name, str(version)))


def publish_card(
    client: MlflowClient,
    release: Release,
    candidate: ServingBundle,
    evaluation: tuple[pd.DataFrame, np.ndarray],
    weighted: pd.DataFrame,
    cfg: DeployConfig,
) -> Card | None:
    """Build and write the card of the version deploy just registered (after its release: the
    card describes the verdict, it is not part of it). A card that cannot be written is a
    warning: the version then has none, and ``nextbuy models show`` refuses it (:func:`missing`)."""
    try:
        card = deploy_card(client, release, candidate, evaluation, weighted, cfg)
        write(client, card, log_params=True)
    except (MlflowException, io.DataError, OSError) as err:
        log.warning("deploy: model card of %s v%s not written: %s", release.model_name, release.version, err)
        return None
    return card
