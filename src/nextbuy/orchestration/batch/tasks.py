"""The batch DAG's tasks: resolve the champion, run a shard, publish (see the package
docstring)."""

from __future__ import annotations

import logging
import os
import subprocess
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nextbuy.orchestration.batch.layout import (
    BatchError,
    NoChampion,
    batch_env,
    model_uri,
    recommendations_dir,
    shard_dir,
    tracking_uri,
    version_dir,
)
from nextbuy.orchestration.batch.publish import (
    publish,
)
from nextbuy.orchestration.names import LATEST_POINTER, PARAMS_FILE

log = logging.getLogger(__name__)

MAX_SHARDS = 1024  # Airflow's default max_map_length: one mapped task per shard
LOG_TAIL_LINES = 40
CHAMPION_XCOM = "champion"  # resolve_champion's XCom the shards and publish read


# --- what runs ----------------------------------------------------------------------------------------------


def shard_list(num_shards: int) -> list[int]:
    """The shards one run maps over: ``0 .. num_shards - 1``."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or not 1 <= num_shards <= MAX_SHARDS:
        raise BatchError(f"num_shards must be an integer from 1 to {MAX_SHARDS}, got {num_shards!r}")
    return list(range(num_shards))


def k_per_source(k: int, n_products: int) -> int:
    """Recommendations per source batch-topk writes: ``k``, capped by the catalogue (a
    product never recommends itself)."""
    return max(0, min(int(k), int(n_products) - 1))


def shard_command(model: str, out: str | Path, k: int, shard: int, num_shards: int) -> list[str]:
    """The command line of one shard."""
    return [
        "nextbuy",
        "batch-topk",
        "--k",
        str(k),
        "--model",
        model,
        "--out",
        str(out),
        "--shard",
        str(shard),
        "--num-shards",
        str(num_shards),
    ]


def model_name(project: Path) -> str:
    """``deploy.model_name`` of the project's params.yaml (the name deploy registers under)."""
    # pydantic: DAG files parse this module
    from nextbuy.config import DeployConfig, load_section

    return load_section(DeployConfig, Path(project) / PARAMS_FILE).model_name


def champion_version(name: str, store: str) -> str | None:
    """The version the ``champion`` alias of ``name`` points to once complete; None when the
    model or the alias does not exist yet. Any other registry error (an unreachable server)
    raises: a retry may fix it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # MLflow: imported where a task reads the registry
    from nextbuy.release.registry import CHAMPION, released_version

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return released_version(client, name, CHAMPION)


def model_n_products(model: str, store: str) -> int:
    """Products the model knows (its catalogue): loaded the way batch-topk loads it, its
    files checked against the digests deploy recorded, before any shard starts. A model
    that cannot be loaded is a RuntimeError (retried: "cannot download" may be a passing
    outage of the artifact store; a changed file fails again after the retries)."""
    import mlflow

    # pandas and numpy: DAG files parse this module
    from nextbuy.mlops import io
    from nextbuy.mlops.tracking import PROGRESS_BAR_ENV

    # MLflow and faiss: imported where a task loads the model
    from nextbuy.serving import ServingBundle

    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    from mlflow.tracking._tracking_service import utils as tracking_state

    # Put back exactly what this process had (dag.test() runs tasks in the caller's process):
    # MLflow's global URI, and the env var that set_tracking_uri also writes.
    saved_global, saved_env = tracking_state._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(store)
    try:
        return int(ServingBundle.from_model_uri(model).n_products)
    except io.DataError as err:
        raise RuntimeError(f"the champion cannot be loaded: {err.message}") from None
    finally:
        mlflow.set_tracking_uri(saved_global)  # type: ignore[arg-type]  # mlflow annotates str | Path; None puts back "not set"
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def resolve(project: Path, k: int, num_shards: int) -> dict[str, Any]:
    """What every task of one run uses: the champion pinned to its version, where its
    recommendations go, K and the shards. NoChampion when none is released yet."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BatchError(f"k must be an integer >= 1, got {k!r}")
    shards = shard_list(num_shards)
    name = model_name(project)
    store = tracking_uri(project)
    version = champion_version(name, store)
    if version is None:
        raise NoChampion(
            f"no released champion of '{name}' in {store}: nothing to recommend with yet "
            "(nextbuy_training releases one)"
        )
    pinned = model_uri(name, version)
    n_products = model_n_products(pinned, store)
    return {
        "model_name": name,
        "model_version": int(version),
        "model_uri": pinned,
        "n_products": n_products,
        "k": k,
        "k_per_source": k_per_source(k, n_products),
        "num_shards": num_shards,
        "shards": shards,
        "out": str(version_dir(recommendations_dir(project), version)),
    }


def run_shard(project: Path, champion: Mapping[str, Any], shard: int) -> dict[str, Any]:
    """``nextbuy batch-topk`` for one shard in the checkout, its output in this task's log.
    A failure is a RuntimeError naming the exit status with the end of the output (retried).
    Returns the shard's folder and its files."""
    command = shard_command(
        champion["model_uri"], champion["out"], champion["k"], shard, champion["num_shards"]
    )
    log.info("shard %d of %d: %s", shard, champion["num_shards"], " ".join(command))
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    proc = subprocess.Popen(
        command,
        cwd=Path(project).resolve(),
        env=batch_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # text mode: progress bars' \r are line ends too
            if line := line.rstrip():
                log.info("%s", line)
                tail.append(line)
        code = proc.wait()
    finally:  # the task killed (timeout, a user's "mark failed"): so is batch-topk
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if code != 0:
        raise RuntimeError(f"batch-topk shard {shard} exited {code}:\n" + "\n".join(tail))
    folder = shard_dir(champion["out"], shard)
    return {"shard": shard, "path": str(folder), "files": len(list(folder.glob("*.parquet")))}


# --- bodies of the Airflow tasks ----------------------------------------------------------------------------


def resolve_champion_task(project: Path, context: Mapping[str, Any]) -> list[int]:
    """Body of ``resolve_champion``: pushes the champion (``resolve``) as its XCom ``champion``
    and returns the shards, what ``batch_shard`` maps over (Airflow maps only over a task's
    return value). No champion yet skips the run (its shards and publish)."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    params = context["params"]
    try:
        champion = resolve(project, params["k"], params["num_shards"])
    except NoChampion as err:
        raise AirflowSkipException(str(err)) from None
    except BatchError as err:
        raise AirflowFailException(str(err)) from None
    log.info(
        "champion: %s (%d products); %d x top-%d in %d shard(s) -> %s",
        champion["model_uri"],
        champion["n_products"],
        champion["n_products"],
        champion["k_per_source"],
        champion["num_shards"],
        champion["out"],
    )
    context["ti"].xcom_push(key=CHAMPION_XCOM, value=champion)
    return champion["shards"]


def shard_task(project: Path, champion: Mapping[str, Any], shard: int) -> dict[str, Any]:
    """Body of one mapped ``batch_shard``: a failed shard is retried on its own."""
    return run_shard(project, champion, shard)


def publish_task(champion: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``publish``: an incomplete batch fails without retries (clear the shards to redo them)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        content = publish(champion, context["run_id"], context["dag"].dag_id)
    except BatchError as err:
        raise AirflowFailException(str(err)) from None
    log.info(
        "published %s rows of %s (k=%d, %d shards); %s -> %s",
        f"{content['rows']:,}",
        champion["model_uri"],
        content["k_per_source"],
        content["num_shards"],
        LATEST_POINTER,
        Path(champion["out"]).name,
    )
    return content
