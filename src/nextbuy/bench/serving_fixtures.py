"""A synthetic serving bundle, registered as champion in a throw-away MLflow store,
and a real ``nextbuy serve`` of it (MLflow's scoring server behind the body-size guard):
for the REST tests and ``nextbuy bench serve`` (a serving smoke check without training).

Nothing here touches the project's own store: the caller passes a directory and a
tracking URI (normally a temporary SQLite file). The server runs in its own process
group and is always stopped by that group, never by name (``nextbuy.procs``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nextbuy import procs
from nextbuy.config import RetrievalConfig
from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.served_ranking import RankingChoice
from nextbuy.domain.uncertainty import fit_bucket_calibration
from nextbuy.mlops.schemas import PRODUCT_KEY_ARRAY

if TYPE_CHECKING:
    from nextbuy.serving import ServingBundle

MODEL_NAME = "nextbuy"  # in a throw-away store: the name the project registers under
# Top-K retrieval that answers as the exact method: the exact flat search, every list a re-rank
# cannot prove complete completed by a scan of the catalogue.
EXACT_RETRIEVAL = RetrievalConfig(
    kind="flat",
    flat_max_products=0,
    candidates=100,
    completion="scan",
    ivf_lists_per_sqrt=4.0,
    nprobe=64,
    hnsw_m=64,
    hnsw_ef_construction=40,
    ef_search=1000,
)


@dataclass(frozen=True)
class BundleFiles:
    moments: Path
    calibration: Path
    thresholds: Path
    retrieval: Path | None = None  # top-K retrieval settings (None: top-K scores the whole catalogue)
    ranking: Path | None = None  # the served top-K order (None: the model's own)


def synthetic_moments(n_products: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 moments shaped like ``blade.export_moments`` output, scaled so
    logits are O(1) and conversion scores spread over (0, 1)."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.sqrt(d))  # s.t entries ~ N(0, 1/sqrt(d)) -> sum ~ N(0, 1)

    def mean() -> np.ndarray:
        return (rng.standard_normal((n_products, d)) * scale).astype(np.float32)

    def var() -> np.ndarray:
        return rng.uniform(0.0, 0.1 * scale * scale, (n_products, d)).astype(np.float32)

    return {
        "s_mean": mean(),
        "s_var": var(),
        "t_mean": mean(),
        "t_var": var(),
        "head_w": rng.uniform(0.5, 1.5, d).astype(np.float32),
        "head_b": np.array([-1.0], np.float32),
    }


def write_bundle_files(
    directory: str | Path,
    n_products: int = 500,
    d: int = 16,
    seed: int = 0,
    n_buckets: int = 3,
    n_fit: int = 20_000,
    retrieval: RetrievalConfig | None = None,
) -> BundleFiles:
    """moments.npz, calibration.json (per-bucket isotonic fitted on synthetic
    pairs) and thresholds.json (``{"per_bucket": ...}``), as the pipeline writes them;
    with ``retrieval`` (a ``config.RetrievalConfig``) also retrieval.json, as deploy logs it."""
    from nextbuy.serving import with_prior

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    moments = synthetic_moments(n_products, d, seed)
    files = BundleFiles(*(directory / f for f in ("moments.npz", "calibration.json", "thresholds.json")))
    np.savez(files.moments, **moments)  # type: ignore[arg-type]  # numpy's overloads take the names for allow_pickle

    # Fit on pairs scored exactly as serving scores them (prior rows included).
    rng = np.random.default_rng(seed + 1)
    m = dict(moments)
    m["s_mean"], m["s_var"] = with_prior(m["s_mean"], m["s_var"])
    m["t_mean"], m["t_var"] = with_prior(m["t_mean"], m["t_var"])
    src = rng.integers(0, n_products + 1, n_fit)
    dst = rng.integers(0, n_products + 1, n_fit)
    score, unc = score_and_uncertainty(m, src, dst)
    # Higher uncertainty converts less at equal score: the effect per-bucket calibration is for.
    p_true = score * np.exp(-unc / max(float(unc.mean()), 1e-9) * 0.3)
    label = (rng.uniform(size=n_fit) < p_true).astype(float)
    calibration = fit_bucket_calibration(score, unc, label, n_buckets, 100)
    files.calibration.write_text(json.dumps(calibration.to_dict()))

    bucket = calibration.bucket(unc)
    # Stricter threshold the more uncertain the bucket; the most uncertain accepts nothing.
    cuts = [
        float(np.quantile(score[bucket == b], 0.7 + 0.1 * b)) if (bucket == b).any() else 0.5
        for b in range(calibration.n_buckets)
    ]
    cuts[-1] = float("inf")
    thresholds = Thresholds(np.array(cuts), target_precision=0.3)
    files.thresholds.write_text(json.dumps({"per_bucket": thresholds.to_dict()}))
    if retrieval is not None:
        retrieval_file = directory / "retrieval.json"
        files = BundleFiles(files.moments, files.calibration, files.thresholds, retrieval_file)
        retrieval_file.write_text(json.dumps(retrieval.model_dump()))
    return files


def stored_files(files: BundleFiles, directory: str | Path) -> BundleFiles:
    """``files`` as deploy stores them with a model, written to ``directory``: moments.npz
    with the store's product keys (``P<id>``), calibration.json and thresholds.json as they are,
    retrieval.json (the settings of ``files``, else ``EXACT_RETRIEVAL``) and served_ranking.json
    (the model's own order)."""
    import shutil

    from nextbuy.serving import STORED_FILES

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    moments, calibration, thresholds, retrieval, ranking = (
        directory / STORED_FILES[name]
        for name in ("moments", "calibration", "thresholds", "retrieval", "served_ranking")
    )
    with np.load(files.moments) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[PRODUCT_KEY_ARRAY] = np.array([f"P{i}" for i in range(len(arrays["s_mean"]))])
    np.savez(moments, **arrays)
    shutil.copyfile(files.calibration, calibration)
    shutil.copyfile(files.thresholds, thresholds)
    if files.retrieval is not None:
        shutil.copyfile(files.retrieval, retrieval)
    else:
        retrieval.write_text(json.dumps(EXACT_RETRIEVAL.model_dump()))
    choice = RankingChoice("model", 10, 0, {}, {}, 0.95, "synthetic: the model's own order", "none")
    ranking.write_text(json.dumps(choice.to_dict()))
    stored = BundleFiles(moments, calibration, thresholds, retrieval, ranking)
    return stored


def load_bundle(files: BundleFiles) -> ServingBundle:
    from nextbuy.serving import ServingBundle

    return ServingBundle.load(
        files.moments, files.calibration, files.thresholds, files.retrieval, files.ranking
    )


@contextmanager
def mlflow_store(tracking_uri: str) -> Iterator[None]:
    """Point this process's MLflow at ``tracking_uri`` for the block, then put back
    what was there: the env vars MLflow itself sets (MLFLOW_TRACKING_URI,
    MLFLOW_EXPERIMENT_ID), MLFLOW_ARTIFACT_ROOT, the global tracking URI and the
    active experiment — so nothing leaks into later tests or their subprocesses."""
    import mlflow
    from mlflow.tracking import fluent

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_ARTIFACT_ROOT")
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    saved_experiment = getattr(fluent, "_active_experiment_id", None)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.pop("MLFLOW_ARTIFACT_ROOT", None)
    mlflow.set_tracking_uri(tracking_uri)  # a URI set earlier in this process would win over the env
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]  # mlflow annotates str | Path; None puts back "not set"
        if hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = saved_experiment
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register_champion(files: BundleFiles, root: str | Path, tracking_uri: str) -> str:
    """Log + register the bundle as MODEL_NAME with ``publishing.log_serving_model`` inside an
    MLflow run in the store at ``tracking_uri`` (artifacts under ``root``), as deploy stores it
    (:func:`stored_files`, under ``root/stored``), alias it ``champion`` (served at
    ``champion_uri()``); returns the version. This process's MLflow state is restored after."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import tracking
    from nextbuy.release.publishing import log_serving_model
    from nextbuy.release.registry import CHAMPION

    with mlflow_store(tracking_uri):
        tracking.configure(Path(root))
        stored = stored_files(files, Path(root) / "stored")
        bundle = load_bundle(stored)
        with mlflow.start_run(run_name="synthetic-serving"):
            assert stored.ranking is not None
            version = log_serving_model(
                bundle, MODEL_NAME, stored.moments, stored.calibration, stored.thresholds, stored.ranking
            )
        MlflowClient(tracking_uri).set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    return version


def champion_uri() -> str:
    """The MLflow URI of what ``register_champion`` registers."""
    from nextbuy.release.registry import CHAMPION

    return f"models:/{MODEL_NAME}@{CHAMPION}"


class RestServer(procs.GroupServer):
    """``nextbuy serve --model MODEL_URI`` on 127.0.0.1 (MLflow's scoring server, run by
    uvicorn in the process it execs into), in its own process group, ready once ``/ping``
    answers 200; ``fast_path`` false serves every request MLflow's way; ``params``: the
    params file of its ``serving`` section (default ./params.yaml). Use as a context
    manager, or start/stop."""

    def __init__(
        self,
        model_uri: str,
        tracking_uri: str,
        log_path: Path,
        workers: int = 1,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        fast_path: bool = True,
        params: Path | None = None,
    ):
        port = procs.free_port()
        cmd = [
            sys.executable,
            "-m",
            "nextbuy.cli",
            "serve",
            "--model",
            model_uri,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--fast-path" if fast_path else "--no-fast-path",
            *(["--params", str(params)] if params is not None else []),
        ]
        env = _serve_env(tracking_uri)
        env["TMPDIR"] = str(Path(log_path).parent)  # its download of the model: next to the log
        super().__init__(
            cmd,
            port,
            env=env,
            log_path=log_path,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )

    def is_ready(self) -> bool:
        return self.ping() == 200

    def ping(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, urllib.error.URLError):
            return None


def _serve_env(tracking_uri: str) -> dict[str, str]:
    env = procs.venv_env()
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.pop("MLFLOW_ARTIFACT_ROOT", None)
    return env


def invocations_body(columns: list[str], data: list[list], params: dict | None = None) -> bytes:
    body: dict = {"dataframe_split": {"columns": columns, "data": data}}
    if params:
        body["params"] = params
    return json.dumps(body).encode()
