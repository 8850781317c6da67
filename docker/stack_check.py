"""`make stack-check`: the team stack of docker/compose.yaml, run for real and checked.

On a throwaway copy of this checkout (a clone of HEAD) and a compose project of its own, with
free 127.0.0.1 ports and freshly generated secrets (never written into the repository):

 1. build the project image (torch's wheel from pip's configured find-links when there is one;
    the air-gapped bases of docker/base-images/build.sh when its images.env exists);
 2. `up --wait`: every service healthy;
 3. trigger `nextbuy_training` through Airflow's REST API and wait for success; its `train`
    task's log, read back through the API, must show a line at least every
    PROGRESS_GAP_LIMIT_S seconds (a silent training looks like a hang);
 4. `nextbuy@champion` in the MLflow server, its artifacts downloadable through the server
    and present in the server's artifact store;
 5. trigger `nextbuy_monitoring`, wait, and find snapshots in the Evidently UI's project;
 6. `up` again with 2 Celery workers (airflow-init must find its marker and do nothing), run
    `nextbuy_batch` (4 mapped shards) and check its tasks ran on both workers;
 7. `down -v` (always, also after a failure; KEEP_STACK=1 keeps it for a look).

Each step prints its time; any failure exits non-zero. A JSON summary (step times, each
training task's time, image size) goes to ``--out FILE`` (else STACK_CHECK_OUT, else
metrics/stack-check.json, beside the pipeline's outputs and ignored by git like them). Recorded
as a result file with its provenance (command, commit, date, machine, wall time):

    nextbuy bench record stack_check -- python docker/stack_check.py --out metrics/stack-check.json
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.request import urlopen

from nextbuy import procs
from nextbuy.orchestration.airflow_api import AirflowApi
from nextbuy.orchestration.names import BATCH_DAG_ID, MONITORING_DAG_ID, TRAINING_DAG_ID

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BASE_IMAGES_ENV = DOCKER / "base-images" / "images.env"
RUN_TIMEOUT_S = 3600.0
UP_TIMEOUT_S = 900
MODEL_NAME = "nextbuy"
MONITOR_PROJECT = "nextbuy on-call"
PROGRESS_GAP_LIMIT_S = 60.0


class CheckFailed(RuntimeError):
    pass


class Steps:
    """Prints and records each step's wall time."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.started = time.monotonic()

    @contextmanager
    def step(self, name: str):
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - started, 1)
            print(f"   {name}: {self.times[name]:.1f} s", flush=True)


def run(
    cmd: list[str], *, env: dict | None = None, capture: bool = False, timeout: float | None = None
) -> str:
    shown = " ".join(cmd)
    proc = subprocess.run(cmd, env=env, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None, stderr=None)  # fmt: skip
    if proc.returncode:
        raise CheckFailed(f"`{shown}` exited {proc.returncode}")
    return proc.stdout or ""


def fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def throwaway_env(checkout: Path, uid: int, gid: int) -> dict[str, str]:
    """docker/.env's variables for a one-off stack: generated secrets, free loopback ports."""
    values = {name: secrets.token_hex(24) for name in (
        "POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD",
        "AIRFLOW_SECRET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD")}  # fmt: skip
    values |= {
        "AIRFLOW_FERNET_KEY": fernet_key(),
        "AIRFLOW_ADMIN_USER": "admin",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/nextbuy",
        "MLFLOW_ARTIFACTS_DESTINATION": "/mlflow/artifacts",
        "NEXTBUY_UID": str(uid),
        "NEXTBUY_GID": str(gid),
        "NEXTBUY_CHECKOUT": str(checkout),
        "AIRFLOW_WORKER_REPLICAS": "1",
        # one task per worker: the batch's shards must spread over the workers to run at once
        "AIRFLOW_WORKER_CONCURRENCY": "1",
    }
    services = ("AIRFLOW_PORT", "MLFLOW_PORT", "EVIDENTLY_PORT")
    values |= {name: str(port) for name, port in zip(services, procs.free_ports(3), strict=True)}
    if BASE_IMAGES_ENV.exists():
        for line in BASE_IMAGES_ENV.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


def find_links() -> list[Path]:
    """pip's configured find-links directories (where this machine keeps torch's CPU wheel)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                          capture_output=True, text=True)  # fmt: skip
    return [Path(p) for p in proc.stdout.split() if Path(p).is_dir()] if proc.returncode == 0 else []


def torch_pin() -> str | None:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.startswith("torch=="):
            return line.split("==", 1)[1].split()[0]
    return None


def stage_torch_wheel(wheels: Path) -> str | None:
    """Copy the locked torch wheel from pip's find-links into docker/wheels/ (the build's
    find-links); None when there is none (the build then uses TORCH_INDEX_URL)."""
    pin = torch_pin()
    if pin is None:
        return None
    for directory in find_links():
        for wheel in directory.glob(f"torch-{pin}-cp311-*.whl"):
            target = wheels / wheel.name
            if not target.exists():
                shutil.copy2(wheel, target)
            return target.name
    return None


class Stack:
    """`docker compose` on docker/compose.yaml as one throwaway project."""

    def __init__(self, name: str, env_file: Path, values: dict[str, str]) -> None:
        self.name, self.env_file, self.values = name, env_file, values
        self.env = dict(os.environ, NEXTBUY_ENV_FILE=str(env_file))

    def compose(self, *args: str, capture: bool = False, timeout: float | None = None) -> str:
        cmd = ["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "--env-file", str(self.env_file),
               "-p", self.name, *args]  # fmt: skip
        return run(cmd, env=self.env, capture=capture, timeout=timeout)

    def url(self, port_key: str) -> str:
        return f"http://{procs.HOST}:{self.values[port_key]}"


def get_json(url: str) -> dict | list:
    with urlopen(url, timeout=60) as reply:
        return json.loads(reply.read())


def check_champion(stack: Stack) -> dict:
    """The champion alias in the MLflow server; its model's files through the server and in its store."""
    base = stack.url("MLFLOW_PORT")
    query = urllib.parse.urlencode({"name": MODEL_NAME, "alias": "champion"})
    version = get_json(f"{base}/api/2.0/mlflow/registered-models/alias?{query}")["model_version"]
    print(f"   {MODEL_NAME}@champion = version {version['version']} (run {version.get('run_id')})")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one line, not a bar per file
    import mlflow

    mlflow.set_tracking_uri(base)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion", dst_path=tmp))
        files = [p for p in local.rglob("*") if p.is_file()]
        if not any(p.name == "MLmodel" for p in files):
            raise CheckFailed(f"the champion's artifacts have no MLmodel: {[p.name for p in files]}")
        print(f"   downloaded through the server: {len(files)} files")
    stored = stack.compose(
        "exec", "-T", "mlflow", "find", "/mlflow/artifacts", "-name", "MLmodel", capture=True
    )
    if not stored.split():
        raise CheckFailed("no MLmodel in the MLflow server's artifact store (/mlflow/artifacts)")
    print(f"   in the server's artifact store: {len(stored.split())} MLmodel files")
    return version


def check_snapshots(stack: Stack) -> int:
    base = stack.url("EVIDENTLY_PORT")
    projects = get_json(f"{base}/api/projects")
    project = next((p for p in projects if p.get("name") == MONITOR_PROJECT), None)
    if project is None:
        raise CheckFailed(f"no Evidently project {MONITOR_PROJECT!r}: {[p.get('name') for p in projects]}")
    snapshots = get_json(f"{base}/api/projects/{project['id']}/snapshots")
    if not snapshots:
        raise CheckFailed(f"the Evidently project {MONITOR_PROJECT!r} has no snapshots")
    print(f"   Evidently project {MONITOR_PROJECT!r}: {len(snapshots)} snapshots")
    return len(snapshots)


def _docker_time(stamp: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, to the microsecond."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]}+00:00")


def check_init_skipped(stack: Stack) -> float:
    """A second `up` re-ran airflow-init; it must have found its marker and done nothing."""
    log = stack.compose("logs", "--no-color", "--no-log-prefix", "airflow-init", capture=True)
    said = [line[line.index("airflow-init:") :] for line in log.splitlines() if "airflow-init:" in line]
    if not said or "nothing to do" not in said[-1]:
        raise CheckFailed(f"airflow-init did its work again on a second up: {said[-3:]}")
    container = stack.compose("ps", "-a", "-q", "airflow-init", capture=True).split()[0]
    state = "{{.State.StartedAt}} {{.State.FinishedAt}}"
    started, finished = run(["docker", "inspect", "-f", state, container], capture=True).split()
    seconds = (_docker_time(finished) - _docker_time(started)).total_seconds()
    print(f"   airflow-init on the second up: {said[-1]!r} in {seconds:.1f} s")
    return round(seconds, 1)


def run_dag(api: AirflowApi, dag_id: str, conf: dict | None = None) -> tuple[str, list[dict]]:
    api.wait_for_dag(dag_id, UP_TIMEOUT_S)
    run_id = api.trigger(dag_id, conf)
    print(f"   {dag_id}: run {run_id}", flush=True)
    run_ = api.wait_for_run(dag_id, run_id, RUN_TIMEOUT_S)
    tis = api.task_instances(dag_id, run_id)
    states = {ti["task_id"] + ("" if ti.get("map_index", -1) < 0 else f"[{ti['map_index']}]"): ti["state"]
              for ti in tis}  # fmt: skip
    if run_["state"] != "success":
        raise CheckFailed(f"{dag_id} run {run_id} ended {run_['state']}: {states}")
    print(f"   {dag_id}: success, tasks {states}")
    return run_id, tis


def task_seconds(tis: list[dict]) -> dict[str, float]:
    """Each task's run time as Airflow recorded it (unmapped tasks; the last try)."""
    return {ti["task_id"]: round(float(ti["duration"]), 1)
            for ti in tis if ti.get("map_index", -1) < 0 and ti.get("duration") is not None}  # fmt: skip


def longest_log_silence(content: list) -> tuple[float, int]:
    """The longest time between two consecutive timestamped lines of a task log (as the logs
    endpoint returns it), and how many such lines there are."""
    stamps = sorted(datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00"))
                    for entry in content if isinstance(entry, dict) and entry.get("timestamp"))  # fmt: skip
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(stamps)]
    return round(max(gaps, default=0.0), 1), len(stamps)


def check_train_log_pace(api: AirflowApi, run_id: str, tis: list[dict]) -> dict:
    train = next(ti for ti in tis if ti["task_id"] == "train" and ti.get("map_index", -1) < 0)
    run_part = urllib.parse.quote(run_id, safe="")
    path = (f"/api/v2/dags/{TRAINING_DAG_ID}/dagRuns/{run_part}/taskInstances/train/logs/"
            f"{train['try_number']}?full_content=true")  # fmt: skip
    silence, lines = longest_log_silence(api.get(path)["content"])
    print(f"   train task log: {lines} lines, longest silence {silence:.1f} s")
    if lines < 2 or silence > PROGRESS_GAP_LIMIT_S:
        raise CheckFailed(f"the train task's log was silent for {silence:.0f} s "
                          f"(limit {PROGRESS_GAP_LIMIT_S:.0f} s, {lines} timestamped lines)")  # fmt: skip
    return {"lines": lines, "longest_silence_s": silence}


def check(stack: Stack, steps: Steps, summary: dict) -> None:
    with steps.step("build"):
        stack.compose("build", "airflow-init")  # one image serves every Python service
        image = stack.values.get("NEXTBUY_IMAGE", "nextbuy:latest")
        size = run(["docker", "image", "inspect", "-f", "{{.Size}}", image], capture=True).strip()
        summary["image_size_gib"] = round(int(size) / 2**30, 2)
        print(f"   image {image}: {summary['image_size_gib']} GiB")
    with steps.step("up, every service healthy"):
        stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S))
    api = AirflowApi(stack.url("AIRFLOW_PORT"), "admin", stack.values["AIRFLOW_ADMIN_PASSWORD"])
    with steps.step(f"{TRAINING_DAG_ID} on Celery"):
        run_id, tis = run_dag(api, TRAINING_DAG_ID)
        summary["training_tasks_s"] = task_seconds(tis)
        summary["train_log"] = check_train_log_pace(api, run_id, tis)
    with steps.step("champion and artifacts in the MLflow server"):
        summary["champion_version"] = check_champion(stack)["version"]
    with steps.step(f"{MONITORING_DAG_ID} and Evidently snapshots"):
        run_dag(api, MONITORING_DAG_ID)
        summary["evidently_snapshots"] = check_snapshots(stack)
    with steps.step("up again, 2 workers (airflow-init: nothing to do)"):
        stack.compose(
            "up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), "--scale", "airflow-worker=2"
        )
        summary["init_again_s"] = check_init_skipped(stack)
    with steps.step(f"{BATCH_DAG_ID} over 2 workers"):
        _, tis = run_dag(api, BATCH_DAG_ID, {"num_shards": 4})
        hosts = {ti["hostname"] for ti in tis if ti["task_id"] == "batch_shard"}
        print(f"   batch_shard ran on {sorted(hosts)}")
        if len(hosts) < 2:
            raise CheckFailed(f"the shards did not spread over the 2 workers: {sorted(hosts)}")
        summary["shard_hosts"] = sorted(hosts)


def require_engine() -> None:
    """A Docker engine that answers, with the compose v2 and buildx plugins: else say how to get one."""
    for cmd in (["docker", "info"], ["docker", "compose", "version"], ["docker", "buildx", "version"]):
        try:
            ok = subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if not ok:
            shown = " ".join(cmd)
            raise CheckFailed(f"`{shown}` fails: prepare the host first (sudo bash docker/prepare-host.sh)")


def owner() -> tuple[int, int]:
    """The uid/gid the image's user gets: the caller's, or 1000 when that is root (the image
    cannot make a second uid 0)."""
    uid, gid = os.getuid(), os.getgid()
    return (1000, 1000) if uid == 0 else (uid, gid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The team stack of docker/compose.yaml, run and checked.")
    default = Path(os.environ.get("STACK_CHECK_OUT", "metrics/stack-check.json"))
    parser.add_argument("--out", type=Path, default=default,
                        help="the JSON summary (step times, training task times, image size)")  # fmt: skip
    out = parser.parse_args(argv).out
    steps, summary = Steps(), {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    work = Path(tempfile.mkdtemp(prefix="nextbuy-stack-check-"))
    name = f"nextbuy-check-{os.getpid()}"
    stack, failed = None, None
    try:
        with steps.step("prepare (clone of HEAD, secrets, ports, torch wheel)"):
            require_engine()
            checkout = work / "checkout"
            run(["git", "clone", "-q", str(ROOT), str(checkout)])
            uid, gid = owner()
            if os.getuid() == 0:
                run(["chown", "-R", f"{uid}:{gid}", str(checkout)])
            values = throwaway_env(checkout, uid, gid)
            wheel = stage_torch_wheel(DOCKER / "wheels")
            if wheel:  # the wheel is there: no torch index to reach (it may well be unreachable)
                values["TORCH_INDEX_URL"] = os.environ.get("TORCH_INDEX_URL", "")
            env_file = work / "stack.env"
            env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            env_file.chmod(0o600)
            bases = "docker/base-images/images.env" if BASE_IMAGES_ENV.exists() else "registry"
            print(f"   torch wheel for the build: {wheel or 'none (TORCH_INDEX_URL)'}; bases: {bases}")
            stack = Stack(name, env_file, values)
        check(stack, steps, summary)
    except (CheckFailed, OSError, subprocess.TimeoutExpired, TimeoutError, KeyError, ValueError) as error:
        failed = f"{type(error).__name__}: {error}"
        print(f"\nstack-check FAILED: {failed}", file=sys.stderr)
        if stack is not None:
            with _suppress():
                stack.compose("ps", "-a")
                stack.compose("logs", "--tail", "40")
    finally:
        if stack is not None and not os.environ.get("KEEP_STACK"):
            with steps.step("down -v"), _suppress():
                stack.compose("down", "-v", "--remove-orphans", timeout=600)
        if not os.environ.get("KEEP_STACK"):
            shutil.rmtree(work, ignore_errors=True)
    summary |= {
        "steps_s": steps.times,
        "total_s": round(time.monotonic() - steps.started, 1),
        "failed": failed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nstack-check {'FAILED' if failed else 'passed'} in {summary['total_s']:.0f} s; summary in {out}")
    return 1 if failed else 0


@contextmanager
def _suppress():
    try:
        yield
    except (CheckFailed, subprocess.TimeoutExpired) as error:
        print(f"   (cleanup: {error})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
