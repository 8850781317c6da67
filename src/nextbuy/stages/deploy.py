"""deploy: build the serving pyfunc, score it and the current champion on the same
fresh evaluation data, and move ``champion`` only if the candidate passes the gate.

The gate (``nextbuy.release.gate``): every absolute floor from params, then, when a
champion of this store's catalogue exists, non-inferiority on each compared metric judged
by a paired bootstrap CI. The blessing (pass/fail, every figure, the reasons, lineage) is
written to ``models/deploy/blessing.json``, logged to MLflow, and set as tags
on the model version.

Every version carries the catalogue it was trained on (tag ``catalogue``: number of
products and a hash of the products table, ``nextbuy.domain.catalogue``). A champion of
another catalogue (not merely the store's, with products added since), or one that records
none, is not comparable: it is neither loaded nor
scored, the blessing says so (``champion_comparable: false``, ``not_comparable_reason``)
and the candidate is judged like a first release, on the floors alone.

The logged model carries the top-K retrieval settings (params ``deploy.retrieval``) as
``artifacts/retrieval.json``, so the REST server and ``nextbuy batch-topk`` retrieve with
what this deploy was run with.

Trust boundary: the SHA-256 of every file of the logged model (python_model.pkl,
MLmodel, the bundled code, the bundle files, retrieval.json) is recorded on the version when it is
created (tags ``artifact_sha256``: one digest over the sorted (path, SHA-256) list,
and ``artifact_manifest``: that list) and in the blessing (``artifacts``); loaders
refuse a model whose downloaded files differ (``serving.verify_model_files``).

All-or-nothing from the registry's point of view: the version is created with its
verdict tags and ``complete=false`` in one write; the alias moves follow and
``complete=true`` is the last write (``registry.release``). Each deploy first marks
what a killed deploy left incomplete ``orphaned`` and puts the aliases back; a deploy told
to stop (SIGTERM: Airflow's timeout and mark-failed, docker stop; Ctrl-C) does so itself on
its way out, its MLflow run ended KILLED, and the stage command puts the last good
blessing.json and metrics back.

A registry with no release of the model while ``blessing.json`` or ``dvc.lock``
record an earlier deploy (``rm mlflow.db``, a wrong ``MLFLOW_TRACKING_URI``) is
refused unless ``NEXTBUY_FIRST_RELEASE=1`` (``nextbuy deploy --first-release``):
a new first champion would be judged on the floors only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from nextbuy import model_card, paths
from nextbuy.config import DeployConfig, load_section
from nextbuy.domain import catalogue, delay
from nextbuy.domain import split as session_split
from nextbuy.mlops import io, schemas, tracking
from nextbuy.procs import Stopped
from nextbuy.release import FLOOR_KEYS, Release, Verdict, gate
from nextbuy.release.first_release import abandon_release, prepare_registry
from nextbuy.release.publishing import lineage, publish

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nextbuy.serving import ServingBundle

log = logging.getLogger(__name__)


def evaluation_rows(weighted: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Fresh evaluation data: the test split, labelled with delay-corrected expected labels."""
    rows = weighted[weighted["split"] == "test"].reset_index(drop=True)
    label = delay.expected_eventual_label(rows["label"].to_numpy(), rows["p_flip"].to_numpy())
    return rows, label


def judge(
    candidate: ServingBundle,
    champion: ServingBundle | None,
    rows: pd.DataFrame,
    label: np.ndarray,
    cfg: DeployConfig,
    incomparable: str | None = None,
) -> Verdict:
    """Pure core: figures of both bundles on the same rows, bootstrap comparison, verdict.
    ``incomparable`` (``gate.champion_incomparable``): why the champion may not be compared;
    it is then never scored and the candidate is judged on the floors alone."""
    src, dst = rows["source_id"].to_numpy(), rows["shown_id"].to_numpy()
    cand_pred = candidate.score(src, dst)
    cand = gate.figures(cand_pred, label)
    champ = comparison = None
    if champion is not None and incomparable is None:
        champ_pred = champion.score(src, dst)
        champ = gate.figures(champ_pred, label)
        comparison = gate.paired_bootstrap(
            label, cand_pred, champ_pred, cfg.compare_metrics, cfg.bootstrap_samples, cfg.confidence, cfg.seed
        )
    passed, reasons = gate.decide(cand, champ, comparison or {}, cfg)
    return Verdict(
        passed=passed,
        reasons=reasons,
        notes=gate.power_notes(comparison or {}, len(rows), cfg.tolerance, cfg.confidence),
        champion_comparable=gate.champion_comparable(champion is not None, incomparable),
        not_comparable_reason=incomparable,
        candidate=cand,
        champion=champ,
        comparison=comparison,
        confidence=cfg.confidence,
        tolerance=cfg.tolerance,
        floors={key: getattr(cfg, key) for key in FLOOR_KEYS},
    )


def store_products() -> pd.DataFrame:
    """The ingested store's products (the catalogue the candidate was trained on)."""
    return io.read_table(paths.PRODUCTS, schemas.PRODUCTS)


class Champion(NamedTuple):
    """The released champion as the gate sees it (every field None without a champion)."""

    version: str | None
    catalogue: str | None  # what its version records; None also when it records none
    bundle: ServingBundle | None  # loaded only when it may be compared
    incomparable: str | None  # why it may not be compared (gate.champion_incomparable)
    learned: int | None = None  # test rows it learned from (None: not checked or not recorded)


def learned_test_rows(rows: pd.DataFrame, store: pd.DataFrame, record: dict | None) -> int | None:
    """How many of the gate's test ``rows`` the model whose training record is ``record``
    learned from (None when it records none)."""
    if record is None:
        return None
    keys = store.set_index("product_id")["product_key"].reindex(rows["source_id"]).to_numpy()
    return int(session_split.learned_rows(keys, rows["shown_at"], record).sum())


def current_champion(
    client: MlflowClient, model_name: str, store: pd.DataFrame, rows: pd.DataFrame
) -> Champion:
    """The released champion, loaded only when it may be compared with a candidate trained on
    ``store`` (its products table) on the test ``rows``: a champion of another catalogue, or
    one that learned from some of the rows (or records no training data), is never
    downloaded."""
    # MLflow: imported where the stage talks to the registry
    from nextbuy.release import registry

    version = registry.released_version(client, model_name, registry.CHAMPION)
    if version is None:
        return Champion(None, None, None, None)
    recorded = registry.catalogue_of(client, model_name, version)
    incomparable = gate.champion_incomparable(version, recorded, store)
    learned = None
    if incomparable is None:
        learned = learned_test_rows(rows, store, registry.training_data_of(client, model_name, version))
        incomparable = gate.training_incomparable(version, learned, len(rows))
    if incomparable is not None:
        log.warning("deploy: %s %s", model_name, incomparable)
        return Champion(version, recorded, None, incomparable, learned)
    return Champion(version, recorded, registry.load_version(model_name, version), None, learned)


def register(
    client: MlflowClient,
    model_name: str,
    candidate: ServingBundle,
    judged: Callable[[], Release],
    card: Callable[[Release], object],
) -> Release:
    """In the deploy's MLflow run: judge the candidate (``judged``: the verdict against the
    champion as it is now), log and register it with its verdict, move the aliases (judging it
    again if another deploy moved the champion meanwhile: ``publishing.publish``), publish its
    model ``card`` (called with the published release), write the release record; the record
    as published. Told to stop half-way (SIGTERM, Ctrl-C), the run
    ends KILLED and the version it registered is marked orphaned, its alias moves undone
    (``first_release.abandon_release``), before the stop goes on."""
    import mlflow

    try:
        with tracking.stage_run("deploy"):
            mlflow.set_tags({"stage": "deploy", **tracking.lineage_tags()})
            release = judged()
            mlflow.log_metrics({f"candidate.{k}": v for k, v in release.candidate.items() if v is not None})
            release = publish(client, candidate, release, judge_again=judged)
            card(release)
            io.write_json(release.to_json(), paths.BLESSING)
            mlflow.log_artifact(str(paths.BLESSING))
    except (Stopped, KeyboardInterrupt):
        abandon_release(client, model_name)
        raise
    return release


def run(params_file: str = "params.yaml") -> dict:
    from mlflow.tracking import MlflowClient

    # MLflow: imported where the stage talks to the registry
    from nextbuy.release import registry

    # MLflow and faiss: imported where a bundle is loaded
    from nextbuy.serving import ServingBundle

    cfg = load_section(DeployConfig, params_file)
    tracking.configure()
    client = MlflowClient()
    prepare_registry(client, cfg.model_name)
    weighted = io.read_table(paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    candidate = ServingBundle.load(
        paths.GNN_MOMENTS,
        paths.CALIBRATION_MODEL,
        paths.THRESHOLDS_MODEL,
        ranking_path=paths.SERVED_RANKING,
        counts_path=paths.COUNT_TABLES,
    )
    candidate = candidate.with_retrieval(cfg.retrieval)  # logged with the model: every top-K uses it
    products = store_products()
    candidate_catalogue = catalogue.identity(products)
    rows, label = evaluation_rows(weighted)
    training_data, lineage_record = io.read_json(paths.INGEST_META).get("training_data"), lineage(params_file)

    def judged() -> Release:
        """The candidate judged against the champion as the registry has it now."""
        champion = current_champion(client, cfg.model_name, products, rows)
        verdict = judge(candidate, champion.bundle, rows, label, cfg, champion.incomparable)
        return Release(
            **verdict.model_dump(),
            champion_training_overlap=champion.learned,
            training_data=training_data,
            model_name=cfg.model_name,
            catalogue=candidate_catalogue,
            champion_version=champion.version,
            champion_catalogue=champion.catalogue,
            lineage=lineage_record,
            evaluation={"split": "test", "rows": len(rows), "labels": "delay-corrected expected eventual"},
        )

    release = register(
        client,
        cfg.model_name,
        candidate,
        judged,
        lambda r: model_card.publish_card(client, r, candidate, (rows, label), weighted, cfg),
    )
    for note in release.notes:
        log.warning("deploy: %s", note)
    if release.passed:
        log.info("deploy: %s", release.action)
    else:
        log.warning("deploy REFUSED: %s\n  %s", release.action, "\n  ".join(release.reasons))
    metrics = {
        "model_name": cfg.model_name,
        "version": int(release.version or 0),
        "passed": release.passed,
        "reasons": release.reasons,
        "action": release.action,
        "champion_version": int(registry.released_version(client, cfg.model_name, registry.CHAMPION) or 0)
        or None,
        "catalogue": candidate_catalogue,
        "champion_comparable": release.champion_comparable,
        "not_comparable_reason": release.not_comparable_reason,
        # Rows of the test split the champion learned from (must be 0 to compare; None: unchecked).
        "champion_training_overlap": release.champion_training_overlap,
        "notes": release.notes,
        "candidate": release.candidate,
        "champion": release.champion,
        "comparison": release.comparison,
    }
    io.write_json(metrics, paths.metrics_file("deploy"))
    return metrics
