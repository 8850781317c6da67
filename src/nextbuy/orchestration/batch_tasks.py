"""The nightly batch of recommendations (DAG ``nextbuy_batch``): top-K for every product
with the champion, split in shards that Airflow workers run side by side.

* ``resolve``: the champion's registered version at the start of the run, pinned as
  ``models:/<name>/<version>`` so every shard scores with the same model even if a
  release happens mid-run; the model is loaded once (its recorded digests checked) for
  its number of products.
* ``run_shard``: ``nextbuy batch-topk --shard i --num-shards n`` in the project checkout
  (its environment on PATH, its MLflow store); batch-topk writes
  ``recommendations/model_version=<V>/shard=<iii>/part-NNNNN.parquet``, each shard folder
  appearing only when complete.
* ``publish``: every shard folder there with one row per (source, rank 1..k) for exactly
  its sources (``id % n == i``), so rows = n_products x k and every source once; then the
  version's ``_manifest.json`` and the pointer ``recommendations/_latest.json``, each
  replaced atomically. Older versions stay where they are.

A re-run for the same version rewrites the same shards (the same model gives the same
rows) and the manifest, and points ``_latest.json`` at it again.

Standard library only at import time (DAG files import this when Airflow parses them):
MLflow, numpy, pyarrow and Airflow are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nextbuy.files import atomic_write_text
from nextbuy.orchestration.airflow_tasks import project_env
from nextbuy.orchestration.names import BATCH_MANIFEST, LATEST_POINTER, PARAMS_FILE, RECOMMENDATIONS_DIR
from nextbuy.orchestration.workspace import store_defaults

log = logging.getLogger(__name__)

MAX_SHARDS = 1024  # Airflow's default max_map_length: one mapped task per shard
SHARD_DIR = re.compile(r"shard=(\d+)")
LOG_TAIL_LINES = 40
CHAMPION_XCOM = "champion"  # resolve_champion's XCom the shards and publish read


class BatchError(RuntimeError):
    """A failure a retry cannot fix (bad params, an incomplete batch): fails the task at once."""


class NoChampion(LookupError):
    """No released champion yet: nothing to recommend with."""


# --- where things are ---------------------------------------------------------------------------------------


def recommendations_dir(project: Path) -> Path:
    """``<project>/recommendations``: git-ignored, in the checkout (shared by the docker stack's workers)."""
    return Path(project).resolve() / RECOMMENDATIONS_DIR


def version_dir(root: Path, version: int | str) -> Path:
    return Path(root) / f"model_version={version}"


def shard_dir(folder: Path, shard: int) -> Path:
    """The folder batch-topk writes for ``shard`` (``shard=SSS``)."""
    return Path(folder) / f"shard={shard:03d}"


def model_uri(name: str, version: int | str) -> str:
    return f"models:/{name}/{version}"


def tracking_uri(project: Path) -> str:
    """The MLflow store the stages use: ``$MLFLOW_TRACKING_URI`` (the docker stack's server),
    else the checkout's (``store_defaults``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or store_defaults(project)["MLFLOW_TRACKING_URI"]


def batch_env(project: Path) -> dict[str, str]:
    """What ``nextbuy batch-topk`` runs with: the project's environment first on PATH, the
    checkout's code first on PYTHONPATH and its MLflow store unless the variables are set."""
    project = Path(project).resolve()
    env = project_env(project)
    env["PYTHONPATH"] = str(project / "src")
    for key, value in store_defaults(project).items():
        env[key] = os.environ.get(key) or value
    return env


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
    from nextbuy.config import load_section

    return load_section("deploy", Path(project) / PARAMS_FILE).model_name


def champion_version(name: str, store: str) -> str | None:
    """The version the ``champion`` alias of ``name`` points to once complete; None when the
    model or the alias does not exist yet. Any other registry error (an unreachable server)
    raises: a retry may fix it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from nextbuy.mlops.registry import CHAMPION, released_version

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

    from nextbuy.mlops import io
    from nextbuy.mlops.serving import ServingBundle
    from nextbuy.mlops.tracking import PROGRESS_BAR_ENV

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
        mlflow.set_tracking_uri(saved_global)
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


# --- publish ------------------------------------------------------------------------------------------------


def _read_sources_and_ranks(folder: Path):
    import numpy as np
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("*.parquet"))
    tables = [pq.read_table(p, columns=["source_id", "rank"]) for p in parts]
    if not tables:
        return parts, np.empty(0, np.int64), np.empty(0, np.int64)
    src = np.concatenate([t.column("source_id").to_numpy() for t in tables])
    rank = np.concatenate([t.column("rank").to_numpy() for t in tables])
    return parts, src.astype(np.int64), rank.astype(np.int64)


def check_shards(folder: Path, num_shards: int, n_products: int, k: int) -> list[dict[str, Any]]:
    """Every shard folder of ``folder`` is there and holds one row per (source, rank 1..k)
    for exactly its sources (``id % num_shards == shard``): rows = n_products x k, every
    source once. Returns one summary per shard; a BatchError lists every problem."""
    import numpy as np

    problems, shards = [], []
    for shard in range(num_shards):
        path = shard_dir(folder, shard)
        expected = np.arange(shard, n_products, num_shards, dtype=np.int64)
        if not path.is_dir():
            problems.append(f"{path.name}: missing")
            continue
        try:
            parts, src, rank = _read_sources_and_ranks(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds on a damaged file
            problems.append(f"{path.name}: unreadable ({err})")
            continue
        want = expected.size * k
        if src.size != want:
            problems.append(f"{path.name}: {src.size} rows, expected {want} ({expected.size} sources x {k})")
        else:
            order = np.lexsort((rank, src))
            if not (
                np.array_equal(src[order], np.repeat(expected, k))
                and np.array_equal(rank[order], np.tile(np.arange(1, k + 1), expected.size))
            ):
                problems.append(
                    f"{path.name}: not one row per (source, rank 1..{k}) for the sources "
                    f"id % {num_shards} == {shard}"
                )
        shards.append(
            {"path": path.name, "files": len(parts), "sources": int(expected.size), "rows": int(src.size)}
        )
    if problems:
        raise BatchError(f"{folder}: incomplete batch, not published:\n" + "\n".join(problems))
    return shards


def stale_entries(folder: Path, num_shards: int) -> list[Path]:
    """What no reader should find next to this run's shards: shard folders past ``num_shards``
    (an earlier run of the same version split in more shards) and the temporary folders of
    killed attempts (``.shard=...``)."""
    if not Path(folder).is_dir():
        return []
    stale = []
    for entry in sorted(Path(folder).iterdir()):
        match = SHARD_DIR.fullmatch(entry.name)
        if (match and int(match.group(1)) >= num_shards) or entry.name.startswith(".shard="):
            stale.append(entry)
    return stale


def manifest(
    champion: Mapping[str, Any], shards: list[dict[str, Any]], run_id: str, dag_id: str, now: datetime
) -> dict[str, Any]:
    keys = ("model_name", "model_version", "model_uri", "n_products", "k", "k_per_source", "num_shards")
    return {
        **{key: champion[key] for key in keys},
        "rows": sum(s["rows"] for s in shards),
        "shards": shards,
        "created_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "dag_id": dag_id,
        "run_id": run_id,
    }


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_manifest(folder: Path, content: Mapping[str, Any]) -> Path:
    path = Path(folder) / BATCH_MANIFEST
    atomic_write_text(path, _json(content))
    return path


def point_latest(root: Path, folder: Path, content: Mapping[str, Any]) -> Path:
    """``<root>/_latest.json`` := the version folder (relative to ``root``) and its manifest,
    replaced atomically: a reader sees the old pointer or the new one, never half of one."""
    folder = Path(folder)
    pointer = {"path": folder.name, "manifest": f"{folder.name}/{BATCH_MANIFEST}", **content}
    path = Path(root) / LATEST_POINTER
    atomic_write_text(path, _json(pointer))
    return path


def read_latest(root: Path) -> dict[str, Any] | None:
    """The pointer (None before the first publish); its ``path`` is relative to ``root``."""
    try:
        return json.loads((Path(root) / LATEST_POINTER).read_text())
    except FileNotFoundError:
        return None


def publish(
    champion: Mapping[str, Any], run_id: str, dag_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """Check the shards, drop stale ones, write the version's manifest, then point
    ``_latest.json`` at it. Returns the manifest."""
    folder = Path(champion["out"])
    shards = check_shards(folder, champion["num_shards"], champion["n_products"], champion["k_per_source"])
    for entry in stale_entries(folder, champion["num_shards"]):
        log.info("removing %s (not part of this run's %d shards)", entry, champion["num_shards"])
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    content = manifest(champion, shards, run_id, dag_id, now or datetime.now(UTC))
    write_manifest(folder, content)
    point_latest(folder.parent, folder, content)
    return content


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
