"""Publishing a deployed model: its lineage, the logged serving pyfunc with pinned requirements and
file digests, and the registry write that carries its verdict (see ``nextbuy.stages.deploy``)."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import nextbuy
from nextbuy import paths, yaml_io
from nextbuy.mlops import io, tracking
from nextbuy.release.record import Release

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nextbuy.serving import ServingBundle

# How often a candidate is judged at most before its release gives up: each time, another
# deploy crowned its version while this one was judging (never, where deploys take turns).
JUDGEMENTS = 5

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


def serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


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
        "params": yaml_io.load(Path(params_file).read_text()) if Path(params_file).exists() else {},
    }


def input_example(n_products: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"source_id": rng.integers(0, n_products, 5), "candidate_id": rng.integers(0, n_products, 5)}
    )


def log_serving_model(
    bundle: ServingBundle,
    model_name: str,
    moments: Path,
    calibration: Path,
    thresholds: Path,
    ranking: Path,
    tags: dict | None = None,
    counts: Path | None = None,
) -> str:
    """Log the pyfunc (signature, example, code, pinned requirements, the bundle's top-K
    retrieval settings as ``retrieval.json``, the served ranking ``ranking`` and the ``counts``
    a count ranking ranks by) and register it with ``tags`` and the SHA-256 of every file of
    the logged model, as downloaded back from the artifact store (``serving.artifact_tags``),
    created together in one write; returns the version. Every model is logged with what
    serving loads it from (``serving.STORED_FILES``, the store's product keys in ``moments``):
    a bundle without retrieval settings or keys is a ValueError. Call inside an active MLflow
    run."""
    import tempfile

    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ParamSchema, ParamSpec

    # the serving model imports this module's registry: imported where a version is logged
    from nextbuy.serving import RETRIEVAL_FILE, NextbuyModel, artifact_tags

    if bundle.retrieval is None or bundle.keys is None:
        raise ValueError(
            "a serving model is logged with its top-K retrieval settings and the store's product keys"
        )
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
    artifacts = {
        "moments": str(moments),
        "calibration": str(calibration),
        "thresholds": str(thresholds),
        "served_ranking": str(ranking),
    }
    if bundle.counts is not None and bundle.ranked_by != "model":  # only a count ranking needs them
        artifacts["counts"] = str(counts)
    with tempfile.TemporaryDirectory() as settings_dir:
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


def recorded_artifacts(client: MlflowClient, name: str, version: str) -> dict:
    """What the registry records of a version's files, for the release record: the digest and
    every file's SHA-256 (``nextbuy verify-model`` checks a download against them)."""
    # the serving model imports this module's registry: imported where a version is logged
    from nextbuy.serving import ARTIFACT_MANIFEST, ARTIFACT_SHA256, parse_manifest

    tags = client.get_model_version(name, str(version)).tags
    return {
        ARTIFACT_SHA256: tags.get(ARTIFACT_SHA256),
        "files": parse_manifest(tags.get(ARTIFACT_MANIFEST, "")),
    }


def publish(
    client: MlflowClient,
    candidate: ServingBundle,
    release: Release,
    judge_again: Callable[[], Release] | None = None,
) -> Release:
    """Register the candidate carrying its verdict (complete=false), then move the aliases if
    the champion is still the one it was judged against; ``complete=true`` comes last
    (registry.release). When another deploy moved the champion meanwhile, ``judge_again``
    gives the verdict against the new one, which replaces the version's verdict before the
    move (without it, :class:`registry.ChampionMoved`). Call inside an active MLflow run. The
    record as published: with its version, files and the alias move."""
    # MLflow: imported where a version is registered
    from nextbuy.release import registry

    name = release.model_name
    tags = registry.verdict_tags(release)
    tags |= {registry.COMPLETE: "false", registry.CATALOGUE: release.catalogue}
    if release.training_data:
        tags[registry.TRAINING_DATA] = json.dumps(release.training_data, sort_keys=True)
    version = log_serving_model(
        candidate,
        name,
        paths.GNN_MOMENTS,
        paths.CALIBRATION_MODEL,
        paths.THRESHOLDS_MODEL,
        ranking=paths.SERVED_RANKING,  # deploy's run loaded the candidate from these
        tags=tags,
        counts=paths.COUNT_TABLES,
    )
    artifacts = recorded_artifacts(client, name, version)
    judged = 1
    while True:
        try:
            action = registry.release_judged(client, name, version, release.passed, release.champion_version)
            return release.published(version, artifacts, action)
        except registry.ChampionMoved as moved:
            if judge_again is None or judged == JUDGEMENTS:
                raise
            log.warning("deploy: %s: judging v%s again", moved, version)
            release = judge_again()
            registry.set_verdict(client, name, version, release)
            judged += 1
