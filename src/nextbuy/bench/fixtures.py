"""Synthetic serving bundles and a real ``mlflow models serve`` process, shared by
``tests/mlops/test_rest.py`` and ``nextbuy bench serve``.

Nothing here touches the project's own store: the caller passes a directory and
a tracking URI (normally a temporary SQLite file). The server runs in its own
process group and is always stopped by that group, never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nextbuy.domain.decisions import Thresholds
from nextbuy.domain.graph.scoring import score_and_uncertainty
from nextbuy.domain.uncertainty import fit_bucket_calibration

MODEL_NAME = "nextbuy"


@dataclass(frozen=True)
class BundleFiles:
    moments: Path
    calibration: Path
    thresholds: Path


def synthetic_moments(n_products: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 moments shaped like ``blade.export_moments`` output, scaled so
    logits are O(1) and conversion scores spread over (0, 1)."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.sqrt(d))  # s.t entries ~ N(0, 1/sqrt(d)) -> sum ~ N(0, 1)

    def mean() -> np.ndarray:
        return (rng.standard_normal((n_products, d)) * scale).astype(np.float32)

    def var() -> np.ndarray:
        return rng.uniform(0.0, 0.1 * scale * scale, (n_products, d)).astype(np.float32)

    return {"s_mean": mean(), "s_var": var(), "t_mean": mean(), "t_var": var(),
            "head_w": rng.uniform(0.5, 1.5, d).astype(np.float32), "head_b": np.array([-1.0], np.float32)}


def write_bundle_files(directory: str | Path, n_products: int = 500, d: int = 16, seed: int = 0,
                       n_buckets: int = 3, n_fit: int = 20_000) -> BundleFiles:
    """moments.npz, calibration.json (per-bucket isotonic fitted on synthetic
    pairs) and thresholds.json (``{"per_bucket": ...}``), as the pipeline writes them."""
    from nextbuy.mlops.serving import _with_prior

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    moments = synthetic_moments(n_products, d, seed)
    files = BundleFiles(directory / "moments.npz", directory / "calibration.json", directory / "thresholds.json")
    np.savez(files.moments, **moments)

    # Fit on pairs scored exactly as serving scores them (prior rows included).
    rng = np.random.default_rng(seed + 1)
    m = dict(moments)
    m["s_mean"], m["s_var"] = _with_prior(m["s_mean"], m["s_var"])
    m["t_mean"], m["t_var"] = _with_prior(m["t_mean"], m["t_var"])
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
    cuts = [float(np.quantile(score[bucket == b], 0.7 + 0.1 * b)) if (bucket == b).any() else 0.5
            for b in range(calibration.n_buckets)]
    cuts[-1] = float("inf")
    thresholds = Thresholds(np.array(cuts), target_precision=0.3)
    files.thresholds.write_text(json.dumps({"per_bucket": thresholds.to_dict()}))
    return files


def load_bundle(files: BundleFiles):
    from nextbuy.mlops.serving import ServingBundle

    return ServingBundle.load(files.moments, files.calibration, files.thresholds)


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
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        if hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = saved_experiment
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def register_champion(files: BundleFiles, root: str | Path, tracking_uri: str,
                      model_name: str = MODEL_NAME) -> str:
    """Log + register the bundle with ``deploy.log_serving_model`` inside an MLflow
    run in the store at ``tracking_uri`` (artifacts under ``root``), alias it
    ``champion``; returns the version. This process's MLflow state is restored after."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops import tracking
    from nextbuy.mlops.registry import CHAMPION
    from nextbuy.stages import deploy

    with mlflow_store(tracking_uri):
        tracking.configure(Path(root))
        bundle = load_bundle(files)
        with mlflow.start_run(run_name="synthetic-serving"):
            version = deploy.log_serving_model(bundle, model_name, files.moments, files.calibration,
                                               files.thresholds)
        MlflowClient(tracking_uri).set_registered_model_alias(model_name, CHAMPION, version)
    return version


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (zombies excluded where /proc says so)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state ppid pgrp ...
            return True
    return False


@dataclass
class RestServer:
    """``mlflow models serve -m MODEL_URI`` on 127.0.0.1, in its own process group.

    Use as a context manager; ``stop`` sends SIGTERM to the group, then SIGKILL
    after ``stop_timeout`` seconds."""

    model_uri: str
    tracking_uri: str
    log_path: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    start_timeout: float = 120.0
    stop_timeout: float = 10.0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "RestServer":
        env = dict(os.environ)
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env.pop("MLFLOW_ARTIFACT_ROOT", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {self.proc.returncode}:\n{self.log()}")
            if self.ping() == 200:
                return self
            time.sleep(0.25)
        raise TimeoutError(f"mlflow models serve not up after {self.start_timeout:.0f} s:\n{self.log()}")

    def ping(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, urllib.error.URLError):
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> bool:
        """Stop the whole process group; True when nothing of it is left."""
        if self.proc is None:
            return True
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            self.proc.poll()
            if not group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            pass
        end = time.monotonic() + 5
        while group_alive(pgid) and time.monotonic() < end:
            time.sleep(0.1)
        self._log.close()
        return not group_alive(pgid)

    def __enter__(self) -> "RestServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def invocations_body(columns: list[str], data: list[list], params: dict | None = None) -> bytes:
    body: dict = {"dataframe_split": {"columns": columns, "data": data}}
    if params:
        body["params"] = params
    return json.dumps(body).encode()
