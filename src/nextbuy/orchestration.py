"""What the Airflow DAGs in ``dags/`` call, kept out of the DAG files so they stay
thin (which task runs after which) and so this logic is testable without Airflow.

Run-only params. A training run sets ``ingest.snapshot`` to its logical date and
applies the form's overrides by rewriting ``params.yaml`` for the duration of
the run, then puts the original back (a teardown task). The stages are plain
``dvc repro --single-item <stage>``, so ``dvc.lock`` records exactly what ran
and re-running a day finds nothing to do.

The backup file doubles as the workspace lock: both DAGs rewrite params.yaml
and run DVC in the same directory, so a run takes the lock (creates the backup
exclusively) before its first stage and gives it back at the end. A run that
finds the lock held by another *live* run waits (the set_params sensor); a lock
left by a run that is no longer running is stale: its backup is restored first.

Only the standard library and PyYAML are imported at module level: DAG files
import this module when they are parsed.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

PROJECT_DIR_ENV = "NEXTBUY_PROJECT_DIR"
PARAMS_FILE = "params.yaml"
BACKUP_FILE = ".airflow-params-backup.yaml"  # git-ignored; exists only while a run holds params.yaml
POOL = "nextbuy_dvc"  # one slot: DVC stage tasks of both DAGs never run side by side
TRAINING_STAGES = ("ingest", "label_delay", "train", "calibrate", "thresholds", "deploy")
MONITORING_STAGES = ("traffic", "monitor")
TRAINING_DAG_ID = "nextbuy_training"
MONITORING_DAG_ID = "nextbuy_monitoring"
CHAMPION_ASSET_NAME = "nextbuy_champion"
CHAMPION_ASSET_URI = "nextbuy://models/nextbuy/champion"
ALERTS_FILE = "monitoring/alerts.json"
DEPLOY_METRICS = "metrics/deploy.json"
ALERT_EXIT_CODE = 3  # nextbuy.cli.ALERT_EXIT_CODE (not imported: the CLI pulls in typer, rich, pandas)
RETRAIN_TASK, NO_RETRAIN_TASK = "retrain", "no_retrain"
# Training form fields -> the params.yaml key each one overrides (None = no override).
FORM_PARAMS = {
    "target_precision": "thresholds.target_precision",
    "epochs": "train.epochs",
    "source": "ingest.source",
    "graph_path": "ingest.graph_path",
}
LIVE_RUN_STATES = {"queued", "running"}


# --- where and how stages run ------------------------------------------------------------------------------

def project_dir(dag_file: str | os.PathLike) -> Path:
    """``$NEXTBUY_PROJECT_DIR``, else the parent of the dags/ folder holding ``dag_file``."""
    env = os.environ.get(PROJECT_DIR_ENV)
    return Path(env).resolve() if env else Path(dag_file).resolve().parent.parent


def venv_bin(project: Path) -> Path:
    """The environment the stages run in: ``$NEXTBUY_VENV`` (e.g. the docker image's
    /opt/venv), else the project's .venv/."""
    return Path(os.environ.get("NEXTBUY_VENV") or project / ".venv") / "bin"


def stage_command(stage: str, project: Path) -> str:
    """The bash a stage task runs (in the project directory): exactly what ``dvc repro``
    runs for that one stage, with the project's .venv/bin first on PATH. The rest of
    the worker's environment is inherited, so MLFLOW_TRACKING_URI passes through when
    set (else the stages use the project's mlflow.db)."""
    bin_dir = shlex.quote(str(venv_bin(project)))
    return f'export PATH={bin_dir}:"$PATH" && exec dvc repro --single-item {shlex.quote(stage)}'


def stage_task(stage: str, project: Path):
    """The Airflow task of one DVC stage: its bash, the DVC pool, retries with backoff."""
    from datetime import timedelta

    from airflow.providers.standard.operators.bash import BashOperator

    return BashOperator(
        task_id=stage,
        bash_command=stage_command(stage, project),
        cwd=str(project),
        pool=POOL,
        retries=2,
        retry_delay=timedelta(minutes=1),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=15),
        skip_on_exit_code=None,  # every non-zero exit of a stage is a failure
    )


def _project_env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(venv_bin(project)), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    return env


# --- params.yaml overrides ---------------------------------------------------------------------------------

def snapshot_iso(moment: datetime) -> str:
    """A run's logical date as the data snapshot: UTC, ISO, naive (the stages' timestamps are naive UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def training_overrides(form: Mapping[str, Any], snapshot: str | None) -> dict[str, Any]:
    """Dotted params.yaml key -> value for one training run: the snapshot, the form's
    fields that are set, then the free-form ``overrides`` (which win)."""
    out: dict[str, Any] = {}
    if snapshot is not None:
        out["ingest.snapshot"] = snapshot
    for name, key in FORM_PARAMS.items():
        if form.get(name) is not None:
            out[key] = form[name]
    out.update(form.get("overrides") or {})
    return out


def locked_section(project: Path, stage: str, section: str) -> dict | None:
    """The ``section`` of params.yaml as ``dvc.lock`` recorded it for ``stage``'s last run."""
    lock = project / "dvc.lock"
    if not lock.exists():
        return None
    recorded = ((yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {})
                .get("params", {}).get(PARAMS_FILE, {}))
    return recorded.get(section)


def monitoring_overrides(project: Path, form: Mapping[str, Any]) -> dict[str, Any]:
    """Monitoring watches traffic drawn from the store the current data was ingested
    from: pin ``ingest`` to what dvc.lock recorded for the last ingest (a training run
    put its snapshot there and restored params.yaml afterwards), then the form's overrides."""
    out: dict[str, Any] = {}
    ingest = locked_section(project, "ingest", "ingest")
    if ingest is not None:
        out["ingest"] = ingest
    out.update(form.get("overrides") or {})
    return out


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with each dotted key set (``train.epochs``; ``ingest`` alone replaces the section)."""
    out = copy.deepcopy(dict(params))
    for dotted, value in overrides.items():
        keys = str(dotted).split(".")
        if not all(keys):
            raise ValueError(f"override key {dotted!r}: empty component")
        node = out
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override key {dotted!r}: {'.'.join(keys[:i + 1])} is not a section")
            node = child
        node[keys[-1]] = copy.deepcopy(value)
    return out


def validate_params(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Every overridden section must exist and still validate (pydantic, extra keys forbidden),
    so a typo fails the first task with the field named instead of a stage halfway through."""
    from pydantic import ValidationError

    from nextbuy.config import SECTIONS

    errors = [f"unknown section {str(k).split('.')[0]!r} in override {k!r} (sections: {', '.join(SECTIONS)})"
              for k in overrides if str(k).split(".")[0] not in SECTIONS]
    for name in sorted({str(k).split(".")[0] for k in overrides} & set(SECTIONS)):
        try:
            SECTIONS[name].model_validate(params.get(name) or {})
        except ValidationError as err:
            errors.append(f"{name}: {err}")
    if errors:
        raise ValueError("invalid run overrides:\n" + "\n".join(errors))


def _finished_temp(path: Path, text: str, mode: int) -> str:
    """A fully written, fsynced temporary file next to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _atomic_write(path: Path, text: str) -> None:
    tmp = _finished_temp(path, text, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    try:
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_exclusive(path: Path, text: str) -> bool:
    """Write ``path`` atomically, only if it does not exist (hard link of a finished temp file)."""
    tmp = _finished_temp(path, text, 0o644)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_backup(project: Path) -> dict | None:
    path = project / BACKUP_FILE
    if not path.exists():
        return None
    held = yaml.safe_load(path.read_text())
    if not isinstance(held, dict) or "params_text" not in held or "owner" not in held:
        raise ValueError(f"{path} is not a params backup written by nextbuy.orchestration; "
                         "put params.yaml right by hand and delete it")
    return held


def _put_back(project: Path, held: dict) -> None:
    _atomic_write(project / PARAMS_FILE, held["params_text"])
    (project / BACKUP_FILE).unlink(missing_ok=True)


def acquire_params(project: Path, owner: Mapping[str, str], overrides: Mapping[str, Any],
                   is_live: Callable[[Mapping[str, str]], bool]) -> dict[str, Any] | None:
    """Take the workspace for ``owner`` ({dag_id, run_id}) and write params.yaml with the
    overrides; keeps the original in BACKUP_FILE. Returns the params written, or None while
    another live run holds the workspace. Re-entrant for the same owner (a retried or
    cleared task starts again from the original)."""
    owner = dict(owner)
    held = read_backup(project)
    if held is not None and held["owner"] != owner:
        if is_live(held["owner"]):
            log.info("params.yaml is held by %s; waiting", held["owner"])
            return None
        log.warning("stale params backup of %s (run no longer live): restoring params.yaml from it", held["owner"])
        _put_back(project, held)
        held = None
    original = held["params_text"] if held is not None else (project / PARAMS_FILE).read_text()
    try:
        params = apply_overrides(yaml.safe_load(original) or {}, overrides)
        validate_params(params, overrides)
    except Exception:
        if held is not None:  # our own earlier attempt left overrides in place: undo them
            _put_back(project, held)
        raise
    if held is None:
        backup = yaml.safe_dump({"owner": owner, "taken_at": snapshot_iso(datetime.now(timezone.utc)),
                                 "params_text": original}, sort_keys=False)
        if not _create_exclusive(project / BACKUP_FILE, backup):
            return None  # another run got there first
    header = (f"# Written by Airflow run {owner.get('dag_id')} / {owner.get('run_id')} for that run only; "
              f"the original is in {BACKUP_FILE} and comes back when the run ends.\n")
    _atomic_write(project / PARAMS_FILE, header + yaml.safe_dump(params, sort_keys=False))
    return params


def restore_params(project: Path, owner: Mapping[str, str]) -> str:
    """Put back the params.yaml ``owner`` replaced (a no-op when it holds nothing)."""
    held = read_backup(project)
    if held is None:
        return "no params backup: params.yaml untouched"
    if held["owner"] != dict(owner):
        log.warning("params backup belongs to %s, not to %s: left alone", held["owner"], dict(owner))
        return f"params backup belongs to {held['owner']}: untouched"
    _put_back(project, held)
    return "params.yaml restored"


def checkout_outputs(project: Path) -> str:
    """``dvc checkout``: after a failed stage, put the workspace outputs back to what
    dvc.lock records (DVC removes a stage's outputs before running it). Best effort."""
    result = subprocess.run(["dvc", "checkout"], cwd=project, env=_project_env(project), capture_output=True,
                            text=True, timeout=600)
    out = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        log.warning("dvc checkout exited %s:\n%s", result.returncode, out)
    return out


# --- Airflow task bodies (called from the @task functions of the DAG files) -------------------------------

def _owner(context: Mapping[str, Any]) -> dict[str, str]:
    return {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}


def _is_live(context: Mapping[str, Any]) -> Callable[[Mapping[str, str]], bool]:
    def is_live(owner: Mapping[str, str]) -> bool:
        try:
            state = context["ti"].get_dagrun_state(owner["dag_id"], owner["run_id"])
            # a DagRunState (str, Enum): its str() is "DagRunState.RUNNING", its value "running"
            return str(getattr(state, "value", state)) in LIVE_RUN_STATES
        except Exception as err:  # unknown run (deleted, other Airflow): nobody to wait for
            log.warning("state of %s unknown (%s): treating its lock as stale", dict(owner), err)
            return False

    return is_live


def run_snapshot(context: Mapping[str, Any]) -> str | None:
    """The logical date; for a run without one (manual trigger), when it was triggered."""
    moment = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None)
    return snapshot_iso(moment) if moment is not None else None


def set_params_task(project: Path, context: Mapping[str, Any], kind: str):
    """Body of the ``set_params`` sensor (setup task): a PokeReturnValue whose XCom is the overrides."""
    from airflow.sdk import PokeReturnValue

    form = dict(context["params"])
    if kind == "training":
        overrides = training_overrides(form, run_snapshot(context))
    else:
        overrides = monitoring_overrides(project, form)
    if form.get("reason"):
        log.info("why this run: %s", form["reason"])
    params = acquire_params(project, _owner(context), overrides, _is_live(context))
    if params is None:
        return PokeReturnValue(is_done=False)
    log.info("run-only params.yaml overrides (restored when the run ends):\n%s",
             json.dumps(overrides, indent=2, sort_keys=True, default=str))
    return PokeReturnValue(is_done=True, xcom_value={"overrides": overrides, "reason": form.get("reason")})


def restore_params_task(project: Path, context: Mapping[str, Any], stages: tuple[str, ...]) -> str:
    """Body of ``restore_params`` (teardown): original params.yaml back; after a failed
    stage also the workspace outputs that dvc.lock records."""
    message = restore_params(project, _owner(context))
    log.info(message)
    failed = context["ti"].get_ti_count(dag_id=context["dag"].dag_id, task_ids=list(stages),
                                        run_ids=[context["run_id"]], states=["failed", "upstream_failed"])
    if failed and message == "params.yaml restored":
        log.info("a stage failed: dvc checkout\n%s", checkout_outputs(project))
    return message


def gate_task(project: Path) -> dict[str, Any]:
    """After deploy: the verdict in metrics/deploy.json. A refusal raises AirflowSkipException."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    path = project / DEPLOY_METRICS
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AirflowFailException(f"{path}: no deploy verdict ({err})") from None
    summary = {k: verdict.get(k) for k in ("passed", "reasons", "version", "champion_version", "action")}
    if not verdict.get("passed"):
        reasons = "; ".join(verdict.get("reasons") or []) or "no reason recorded"
        log.warning("deploy gate REFUSED candidate v%s (champion stays v%s): %s",
                    verdict.get("version"), verdict.get("champion_version"), reasons)
        raise AirflowSkipException(f"deploy gate refused v{verdict.get('version')} "
                                   f"(champion stays v{verdict.get('champion_version')}): {reasons}")
    log.info("deploy gate passed: champion is v%s (%s)", verdict.get("champion_version"), verdict.get("action"))
    return summary


def release_extra(verdict: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """What the champion Asset event carries (read by the monitoring DAG and the UI)."""
    return {"version": verdict.get("version"), "champion_version": verdict.get("champion_version"),
            "action": verdict.get("action"), "dag_id": context["dag"].dag_id, "run_id": context["run_id"]}


def alerts_status(project: Path) -> dict[str, Any]:
    """``nextbuy alerts`` (exit 3 = alerts) plus the alert messages from monitoring/alerts.json."""
    result = subprocess.run(["nextbuy", "alerts", "--path", ALERTS_FILE], cwd=project, env=_project_env(project),
                            capture_output=True, text=True, timeout=300)
    output = (result.stdout + result.stderr).strip()
    if result.returncode not in (0, ALERT_EXIT_CODE):
        raise RuntimeError(f"nextbuy alerts exited {result.returncode}:\n{output}")
    messages = []
    if result.returncode == ALERT_EXIT_CODE:
        fired = json.loads((project / ALERTS_FILE).read_text()).get("alerts", [])
        messages = [f"{a.get('window_start')} {a.get('message')}" for a in fired]
    return {"exit_code": result.returncode, "alerts": messages, "output": output}


def branch_on_alerts_task(project: Path, context: Mapping[str, Any]) -> str:
    """Body of the ``check_alerts`` branch: RETRAIN_TASK when the monitor raised alerts
    (the trigger's conf is pushed as XCom ``retrain_conf``), else NO_RETRAIN_TASK.

    A run started by a champion release (asset-triggered) never retrains: alerts right
    after a release go to on-call, and the next scheduled check decides, so a
    persistent alert cannot loop retrain -> release -> monitor -> retrain."""
    status = alerts_status(project)
    log.info("nextbuy alerts exit %s:\n%s", status["exit_code"], status["output"])
    if not status["alerts"]:
        log.info("no alerts: nothing to do")
        return NO_RETRAIN_TASK
    dag_run = context.get("dag_run")
    run_type = str(getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", "")))
    if run_type == "asset_triggered":
        log.warning("%d alert(s) right after a champion release: not retraining automatically (the next "
                    "scheduled check decides); alerts: %s", len(status["alerts"]), status["alerts"])
        return NO_RETRAIN_TASK
    reason = (f"{MONITORING_DAG_ID} run {context['run_id']}: {len(status['alerts'])} alert(s): "
              + "; ".join(status["alerts"]))
    log.warning("retraining: %s", reason)
    context["ti"].xcom_push(key="retrain_conf", value={"reason": reason[:4000]})
    return RETRAIN_TASK


# --- make airflow: `airflow standalone` in its own process group -------------------------------------------

def airflow_env(project: Path, port: int) -> dict[str, str]:
    env = _project_env(project)
    env.setdefault("AIRFLOW_HOME", str(project / ".airflow"))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(project / "dags")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__PARALLELISM"] = env.get("AIRFLOW__CORE__PARALLELISM", "2")
    env["AIRFLOW__API__HOST"] = "127.0.0.1"
    env["AIRFLOW__API__PORT"] = str(port)
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{port}")
    # The scheduler's and triggerer's log servers (Airflow binds them to every interface; the
    # UI reads local log files anyway): their default ports, or free ones when those are taken.
    for key, default in (("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", 8793),
                         ("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", 8794)):
        env.setdefault(key, str(default if not _port_taken(default) else _free_port()))
    env[PROJECT_DIR_ENV] = str(project)
    return env


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """SIGTERM to the process group ``proc`` leads, SIGKILL after ``timeout``; True when none is left."""
    from nextbuy.bench.fixtures import group_alive

    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            if not group_alive(pgid):
                break
            time.sleep(0.2)
        if not group_alive(pgid):
            break
    proc.poll()
    return not group_alive(pgid)


def standalone(project: Path, port: int = 8080, ready_timeout: float = 300.0) -> int:
    """``airflow standalone`` for this project (SQLite under .airflow/, 127.0.0.1:port, the
    ``nextbuy_dvc`` pool), in its own session; prints URL and login; Ctrl-C or SIGTERM stops
    the whole process group."""
    from urllib.request import urlopen

    if _port_taken(port):
        print(f"port {port} is in use: `make airflow AIRFLOW__API__PORT=<free port>`", file=sys.stderr)
        return 1
    env = airflow_env(project, port)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    for cmd in (["airflow", "db", "migrate"],
                ["airflow", "pools", "set", POOL, "1", "nextbuy: one DVC stage at a time in the workspace"]):
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen(["airflow", "standalone"], env=env, start_new_session=True)  # setsid

    def stop(signum, _frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, kill, terminal closed
        signal.signal(sig, stop)
    url = f"http://127.0.0.1:{port}/"
    password_file = home / "simple_auth_manager_passwords.json.generated"
    try:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urlopen(url, timeout=2) as r:
                    if r.status < 500 and password_file.exists():
                        break
            except OSError:
                pass
            time.sleep(1)
        if proc.poll() is not None:
            print(f"airflow standalone exited with {proc.returncode}", file=sys.stderr)
            return proc.returncode or 1
        logins = json.loads(password_file.read_text()) if password_file.exists() else {}
        print("\n" + "=" * 72, f"\nAirflow UI: {url}", flush=True)
        for user, password in logins.items():
            print(f"login: {user} / {password}   (from {password_file})")
        print(f"DAGs: {project / 'dags'}; AIRFLOW_HOME={home}; Ctrl-C stops everything", "\n" + "=" * 72,
              flush=True)
        proc.wait()
        return proc.returncode or 0
    except KeyboardInterrupt:
        print("\nstopping airflow standalone (process group %d)" % proc.pid, flush=True)
        return 0
    finally:
        started = time.monotonic()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if stop_group(proc):
            print(f"stopped: no process of group {proc.pid} left ({time.monotonic() - started:.1f} s)", flush=True)
        else:
            print(f"processes of group {proc.pid} still alive", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nextbuy.orchestration")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("standalone", help="airflow standalone for this project (make airflow)")
    run.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW__API__PORT", "8080")))
    sub.add_parser("restore-params", help="put back params.yaml from a backup a dead Airflow run left")
    args = parser.parse_args(argv)
    project = Path(os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
    if args.command == "standalone":
        return standalone(project, args.port)
    held = read_backup(project)
    if held is None:
        print("no params backup: nothing to restore")
        return 0
    _put_back(project, held)
    print(f"params.yaml restored from the backup of {held['owner']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
