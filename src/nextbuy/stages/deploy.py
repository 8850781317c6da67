"""deploy: build the serving pyfunc, score it and the current champion on the same
fresh evaluation data, and move ``champion`` only if the candidate passes the gate.

The gate (``nextbuy.domain.gate``): every absolute floor from params, then, when a
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
what a killed deploy left incomplete ``orphaned`` and puts the aliases back.

A registry with no release of the model while ``blessing.json`` or ``dvc.lock``
record an earlier deploy (``rm mlflow.db``, a wrong ``MLFLOW_TRACKING_URI``) is
refused unless ``NEXTBUY_FIRST_RELEASE=1`` (``nextbuy deploy --first-release``):
a new first champion would be judged on the floors only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import yaml

import nextbuy
from nextbuy import paths
from nextbuy.config import DeployConfig, load_section
from nextbuy.domain import catalogue, delay, gate
from nextbuy.domain import split as session_split
from nextbuy.mlops import io, schemas, tracking

log = logging.getLogger(__name__)

# What the pyfunc needs at load time besides its bundled code (src/nextbuy), pinned
# to this environment. Listing them skips MLflow's requirement inference, which
# re-imports the model in a subprocess (~8 s).
SERVING_PACKAGES = (
    "mlflow",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "pandera",
    "pydantic",
    "pyyaml",
    "faiss-cpu",
)
# Set (1/true/yes) to seed a new first champion although an earlier release is on record.
FIRST_RELEASE_ENV = "NEXTBUY_FIRST_RELEASE"


def serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def evaluation_rows(weighted: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Fresh evaluation data: the test split, labelled with delay-corrected expected labels."""
    rows = weighted[weighted["split"] == "test"].reset_index(drop=True)
    label = delay.expected_eventual_label(rows["label"].to_numpy(), rows["p_flip"].to_numpy())
    return rows, label


def judge(
    candidate,
    champion,
    rows: pd.DataFrame,
    label: np.ndarray,
    cfg: DeployConfig,
    incomparable: str | None = None,
) -> dict:
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
    return {
        "passed": passed,
        "reasons": reasons,
        "notes": gate.power_notes(comparison or {}, len(rows), cfg.tolerance, cfg.confidence),
        **gate.comparability(champion is not None, incomparable),
        "candidate": cand,
        "champion": champ,
        "comparison": comparison,
    }


def store_products() -> pd.DataFrame:
    """The ingested store's products (the catalogue the candidate was trained on)."""
    return io.read_table(paths.PRODUCTS, schemas.PRODUCTS)


class Champion(NamedTuple):
    """The released champion as the gate sees it (every field None without a champion)."""

    version: str | None
    catalogue: str | None  # what its version records; None also when it records none
    bundle: object | None  # loaded only when it may be compared
    incomparable: str | None  # why it may not be compared (gate.champion_incomparable)
    learned: int | None = None  # test rows it learned from (None: not checked or not recorded)


def learned_test_rows(rows: pd.DataFrame, store: pd.DataFrame, record: dict | None) -> int | None:
    """How many of the gate's test ``rows`` the model whose training record is ``record``
    learned from (None when it records none)."""
    if record is None:
        return None
    keys = store.set_index("product_id")["product_key"].reindex(rows["source_id"]).to_numpy()
    return int(session_split.learned_rows(keys, rows["shown_at"], record).sum())


def current_champion(client, model_name: str, store: pd.DataFrame, rows: pd.DataFrame) -> Champion:
    """The released champion, loaded only when it may be compared with a candidate trained on
    ``store`` (its products table) on the test ``rows``: a champion of another catalogue, or
    one that learned from some of the rows (or records no training data), is never
    downloaded."""
    from nextbuy.mlops import registry

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


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def lineage(params_file: str) -> dict:
    """Where this model came from: code, pipeline state, data and every param."""
    data = hashlib.sha256()
    for p in (paths.PRODUCTS, paths.EDGES, paths.IMPRESSIONS):
        data.update(p.read_bytes())
    return {
        **tracking.lineage_tags(),
        "dvc_lock_sha256": _sha256(Path("dvc.lock")),
        "data_sha256": data.hexdigest(),
        "params": yaml.safe_load(Path(params_file).read_text()) if Path(params_file).exists() else {},
    }


def input_example(n_products: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"source_id": rng.integers(0, n_products, 5), "candidate_id": rng.integers(0, n_products, 5)}
    )


def log_serving_model(
    bundle, model_name: str, moments: Path, calibration: Path, thresholds: Path, tags: dict | None = None
) -> str:
    """Log the pyfunc (signature, example, code, pinned requirements, and the bundle's top-K
    retrieval settings as ``retrieval.json`` when it has them) and register it with ``tags``
    and the SHA-256 of every file of the logged model, as downloaded back from the artifact
    store (``serving.artifact_tags``), created together in one write; returns the version.
    Call inside an active MLflow run."""
    import tempfile

    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ParamSchema, ParamSpec

    from nextbuy.mlops.serving import RETRIEVAL_FILE, NextbuyModel, artifact_tags

    example = input_example(bundle.n_products)
    with warnings.catch_warnings():
        # Product ids are never missing (validate_request refuses them), so int64 is the right schema.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        outputs = infer_signature(
            example, bundle.score(example["source_id"], example["candidate_id"])
        ).outputs
    # No input schema: MLflow then hands predict the request's columns as sent, and
    # validate_request checks them (pairs: source_id, candidate_id; top-K: source_id only),
    # refusing extra columns and non-integer ids (1.5 is not coerced to 1) with a message.
    # A declared schema made MLflow drop undeclared columns silently and refuse every CSV
    # body (ids typed Any). Params keep their schema: MLflow checks top_k's type, and drops
    # unknown params before predict.
    signature = ModelSignature(
        inputs=None,
        outputs=outputs,
        params=ParamSchema([ParamSpec("top_k", "long", 0)]),
    )
    artifacts = {"moments": str(moments), "calibration": str(calibration), "thresholds": str(thresholds)}
    with tempfile.TemporaryDirectory() as settings_dir:
        if bundle.retrieval is not None:
            artifacts["retrieval"] = str(Path(settings_dir) / RETRIEVAL_FILE)
            io.write_json(bundle.retrieval.model_dump(), artifacts["retrieval"])
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=NextbuyModel(),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            code_paths=[str(Path(nextbuy.__file__).parent)],
            pip_requirements=serving_requirements(),
        )
    with tempfile.TemporaryDirectory() as tmp:  # the files as loaders will download them
        recorded = artifact_tags(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp))
    return str(mlflow.register_model(info.model_uri, model_name, tags={**(tags or {}), **recorded}).version)


def _tags(blessing: dict) -> dict[str, str]:
    flat = {
        "passed": str(blessing["passed"]).lower(),
        "reasons": "; ".join(blessing["reasons"]) or "all checks hold",
    }
    for who in ("candidate", "champion"):
        for k, v in (blessing[who] or {}).items():
            flat[f"{who}.{k}"] = "n/a" if v is None else f"{v:.4f}"
    if blessing.get("champion_comparable") is not None:
        flat["champion_comparable"] = str(blessing["champion_comparable"]).lower()
    if blessing.get("not_comparable_reason"):
        flat["not_comparable_reason"] = blessing["not_comparable_reason"]
    if blessing.get("champion_training_overlap") is not None:
        flat["champion_training_overlap"] = str(blessing["champion_training_overlap"])
    if blessing.get("notes"):
        flat["gate_notes"] = "; ".join(blessing["notes"])
    for k, v in blessing["lineage"].items():
        flat[f"lineage.{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v)
    return flat


def first_release_allowed() -> bool:
    return os.environ.get(FIRST_RELEASE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _blessing_evidence(model_name: str) -> str | None:
    try:
        earlier = json.loads(paths.BLESSING.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(earlier, dict) or earlier.get("version") is None:
        return None
    if earlier.get("model_name", model_name) != model_name:
        return None
    return f"{paths.BLESSING} records v{earlier['version']}"


def _lock_evidence(model_name: str, lock: Path = Path("dvc.lock")) -> str | None:
    try:
        stage = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("deploy")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(stage, dict):
        return None
    recorded = ((stage.get("params") or {}).get("params.yaml") or {}).get("deploy") or {}
    if recorded.get("model_name", model_name) != model_name:
        return None
    return f"{lock} records a finished deploy"


def earlier_release_evidence(model_name: str) -> list[str]:
    """What says ``model_name`` was released before: blessing.json (a version), dvc.lock (a deploy)."""
    return [e for e in (_blessing_evidence(model_name), _lock_evidence(model_name)) if e]


def check_first_release(client, model_name: str) -> None:
    """Refuse to seed a first champion on floors only when an earlier release is on record."""
    from nextbuy.mlops import registry

    if registry.has_release(client, model_name) or first_release_allowed():
        return
    evidence = earlier_release_evidence(model_name)
    if evidence:
        raise io.DataError(
            tracking.tracking_uri(),
            f"no release of model '{model_name}' in this MLflow store, but "
            + " and ".join(evidence)
            + ": the registry was lost or MLFLOW_TRACKING_URI points elsewhere. Restore it, or seed a "
            f"new first champion judged on the floors only: nextbuy deploy --first-release "
            f"(under dvc repro / Airflow: {FIRST_RELEASE_ENV}=1).",
        )


def prepare_registry(client, model_name: str) -> None:
    """Before judging: repair what a killed deploy left, refuse a silent re-seed."""
    from nextbuy.mlops import registry

    for version in registry.sweep_orphans(client, model_name):
        log.warning(
            "deploy: %s v%s was left incomplete by a deploy that did not finish: marked '%s', ignored",
            model_name,
            version,
            registry.ORPHANED,
        )
    check_first_release(client, model_name)


def recorded_artifacts(client, name: str, version: str) -> dict:
    """What the registry records of a version's files, for the blessing: the digest and
    every file's SHA-256 (``nextbuy verify-model`` checks a download against them)."""
    from nextbuy.mlops.serving import ARTIFACT_MANIFEST, ARTIFACT_SHA256, parse_manifest

    tags = client.get_model_version(name, str(version)).tags
    return {
        ARTIFACT_SHA256: tags.get(ARTIFACT_SHA256),
        "files": parse_manifest(tags.get(ARTIFACT_MANIFEST, "")),
    }


def publish(client, candidate, blessing: dict) -> str:
    """Register the candidate carrying its verdict (complete=false), then move the aliases;
    ``complete=true`` comes last (registry.release). Call inside an active MLflow run."""
    from nextbuy.mlops import registry

    name = blessing["model_name"]
    tags = {key: value[:4000] for key, value in _tags(blessing).items()} | {
        registry.COMPLETE: "false",
        registry.CATALOGUE: blessing["catalogue"],
    }
    if blessing.get("training_data"):
        tags[registry.TRAINING_DATA] = json.dumps(blessing["training_data"], sort_keys=True)
    version = log_serving_model(
        candidate, name, paths.GNN_MOMENTS, paths.CALIBRATION_MODEL, paths.THRESHOLDS_MODEL, tags=tags
    )
    blessing["version"] = version
    blessing["artifacts"] = recorded_artifacts(client, name, version)
    blessing["action"] = registry.release(client, name, version, blessing["passed"])
    return version


def run(params_file: str = "params.yaml") -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import registry
    from nextbuy.mlops.serving import ServingBundle

    cfg = load_section("deploy", params_file)
    tracking.configure()
    client = MlflowClient()
    prepare_registry(client, cfg.model_name)
    weighted = io.read_table(paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED)
    candidate = ServingBundle.load(paths.GNN_MOMENTS, paths.CALIBRATION_MODEL, paths.THRESHOLDS_MODEL)
    candidate = candidate.with_retrieval(cfg.retrieval)  # logged with the model: every top-K uses it
    products = store_products()
    candidate_catalogue = catalogue.identity(products)
    rows, label = evaluation_rows(weighted)
    champion = current_champion(client, cfg.model_name, products, rows)
    blessing = judge(candidate, champion.bundle, rows, label, cfg, champion.incomparable)
    blessing.update(
        champion_training_overlap=champion.learned,
        training_data=io.read_json(paths.INGEST_META).get("training_data"),
        model_name=cfg.model_name,
        catalogue=candidate_catalogue,
        champion_version=champion.version,
        champion_catalogue=champion.catalogue,
        lineage=lineage(params_file),
        evaluation={"split": "test", "rows": len(rows), "labels": "delay-corrected expected eventual"},
    )
    with mlflow.start_run(run_name="deploy"):
        mlflow.set_tags({"stage": "deploy", **tracking.lineage_tags()})
        mlflow.log_metrics({f"candidate.{k}": v for k, v in blessing["candidate"].items() if v is not None})
        version = publish(client, candidate, blessing)
        io.write_json(blessing, paths.BLESSING)
        mlflow.log_artifact(str(paths.BLESSING))
    for note in blessing["notes"]:
        log.warning("deploy: %s", note)
    if blessing["passed"]:
        log.info("deploy: %s", blessing["action"])
    else:
        log.warning("deploy REFUSED: %s\n  %s", blessing["action"], "\n  ".join(blessing["reasons"]))
    metrics = {
        "model_name": cfg.model_name,
        "version": int(version),
        "passed": blessing["passed"],
        "reasons": blessing["reasons"],
        "action": blessing["action"],
        "champion_version": int(registry.released_version(client, cfg.model_name, registry.CHAMPION) or 0)
        or None,
        "catalogue": candidate_catalogue,
        "champion_comparable": blessing["champion_comparable"],
        "not_comparable_reason": blessing["not_comparable_reason"],
        # Rows of the test split the champion learned from (must be 0 to compare; None: unchecked).
        "champion_training_overlap": blessing["champion_training_overlap"],
        "notes": blessing["notes"],
        "candidate": blessing["candidate"],
        "champion": blessing["champion"],
        "comparison": blessing["comparison"],
    }
    io.write_json(metrics, paths.metrics_file("deploy"))
    return metrics
