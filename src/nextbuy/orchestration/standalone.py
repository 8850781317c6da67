"""``nextbuy airflow standalone`` (``make airflow``): ``airflow standalone`` for this
project (SQLite under .airflow/, 127.0.0.1:port, the DVC pool) in its own process
group; prints URL and login; Ctrl-C or SIGTERM stops the whole group."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn
from urllib.request import urlopen

from nextbuy import procs
from nextbuy.orchestration.airflow_tasks import project_env
from nextbuy.orchestration.names import AIRFLOW_SETTINGS, POOL, PROJECT_DIR_ENV

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
LOG_FILE = "standalone.log"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, terminal closed
# The scheduler's and triggerer's log servers: Airflow binds them to every interface.
LOG_SERVER_PORTS = {
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": 8793,
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": 8794,
}


def cli_env(project: Path) -> dict[str, str]:
    """What an Airflow command of this project's ``make airflow`` runs with (its home, DAGs, settings)."""
    env = project_env(project)
    env.setdefault("AIRFLOW_HOME", str(project / ".airflow"))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(project / "dags")
    for key, value in AIRFLOW_SETTINGS.items():
        env.setdefault(key, value)
    return env


def airflow_env(project: Path, port: int) -> dict[str, str]:
    env = cli_env(project)
    env["AIRFLOW__CORE__PARALLELISM"] = env.get("AIRFLOW__CORE__PARALLELISM", "2")
    env["AIRFLOW__API__HOST"] = procs.HOST
    env["AIRFLOW__API__PORT"] = str(port)
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://{procs.HOST}:{port}")
    # The UI reads local log files anyway: the default ports, or free ones when those are taken.
    for key, default in LOG_SERVER_PORTS.items():
        env.setdefault(key, str(default if not procs.port_open(default) else procs.free_port()))
    env[PROJECT_DIR_ENV] = str(project)
    return env


def _answers(url: str) -> bool:
    try:
        with urlopen(url, timeout=2) as reply:
            return reply.status < 500
    except OSError:
        return False


class AirflowStandalone(procs.GroupServer):
    """``airflow standalone``, ready once the UI answers and the admin password is written."""

    def __init__(self, env: dict[str, str], port: int, ready_timeout: float):
        home = Path(env["AIRFLOW_HOME"])
        super().__init__(
            ["airflow", "standalone"],
            port,
            env=env,
            log_path=home / LOG_FILE,  # its output is long; this terminal gets progress lines
            start_timeout=ready_timeout,
            stop_timeout=30.0,
        )
        self.password_file = home / PASSWORDS_FILE

    def is_ready(self) -> bool:
        """The UI answers, the login exists, and the execution API (what task runners call)
        has answered once: its cold first request is spent here, not on the first task."""
        ready = self.password_file.exists() and _answers(f"{self.url}/")
        return ready and _answers(f"{self.url}/execution/health")

    def print_login(self, project: Path) -> None:
        assert self.env is not None  # __init__ passes one
        logins = json.loads(self.password_file.read_text()) if self.password_file.exists() else {}
        print("\n" + "=" * 72, f"\nAirflow UI: {self.url}/", flush=True)
        for user, password in logins.items():
            print(f"login: {user} / {password}   (from {self.password_file})")
        print(
            f"DAGs: {project / 'dags'}; AIRFLOW_HOME={self.env['AIRFLOW_HOME']}\n"
            f"Airflow's own output: {self.log_path}\nCtrl-C stops everything",
            "\n" + "=" * 72,
            flush=True,
        )


# The database migrated (what `airflow db migrate` runs) and the pool the stage tasks share (what
# `airflow pools set` writes), in one process: each `airflow` command spends about two seconds of
# CPU importing Airflow before it does anything.
PREPARE = (
    "import sys\n"
    "from airflow.models.pool import Pool\n"
    "from airflow.utils.db import upgradedb\n"
    "upgradedb()\n"
    "Pool.create_or_update_pool(sys.argv[1], slots=1, description=sys.argv[2], include_deferred=False)\n"
)
POOL_DESCRIPTION = "nextbuy: one DVC stage at a time in the workspace"


def _prepare(env: dict[str, str]) -> None:
    """The database and the pool the stage tasks share."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"migrating the Airflow database, creating the pool {POOL} ...", end=" ", flush=True)
    cmd = [sys.executable, "-c", PREPARE, POOL, POOL_DESCRIPTION]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"{time.monotonic() - started:.0f} s", flush=True)


def _report_waiting(server: AirflowStandalone, every: float = 15.0) -> None:
    """While the servers start (minutes on a loaded host), say what is awaited."""
    started = time.monotonic()

    def report() -> None:
        waited = time.monotonic() - started
        missing = [
            name
            for name, ok in (
                ("login file", server.password_file.exists()),
                ("UI", _answers(f"{server.url}/")),
                ("execution API", _answers(f"{server.url}/execution/health")),
            )
            if not ok
        ]
        print(f"  {waited:4.0f} s: waiting for {', '.join(missing) or 'the servers'} ...", flush=True)

    server.on_wait(report, every)


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def _stop(server: AirflowStandalone) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    if server.proc is None:
        return
    started = time.monotonic()
    if server.stop():
        print(
            f"stopped: no process of group {server.proc.pid} left ({time.monotonic() - started:.1f} s)",
            flush=True,
        )
    else:
        print(f"processes of group {server.proc.pid} still alive", file=sys.stderr)


def standalone(project: Path, port: int = 8080, ready_timeout: float = 300.0) -> int:
    """Run Airflow for this project until it exits or is interrupted; the exit status."""
    if procs.port_open(port):
        print(f"port {port} is in use: `make airflow AIRFLOW__API__PORT=<free port>`", file=sys.stderr)
        return 1
    env = airflow_env(project, port)
    _prepare(env)
    server = AirflowStandalone(env, port, ready_timeout)
    print(
        "starting airflow standalone (scheduler, DAG processor, triggerer, API server; "
        "minutes on a busy host) ...",
        flush=True,
    )
    _report_waiting(server)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    try:
        try:
            server.start()
        except TimeoutError:
            print(f"the UI is not answering after {ready_timeout:.0f} s; going on", file=sys.stderr)
        assert server.proc is not None  # start() spawned it (a timeout leaves it running)
        server.print_login(project)
        return server.proc.wait() or 0
    except RuntimeError as err:  # it exited before it was ready
        assert server.proc is not None  # only a spawned process exits
        print(err, file=sys.stderr)
        return server.proc.returncode or 1
    except KeyboardInterrupt:
        if server.proc is not None:
            print(f"\nstopping airflow standalone (process group {server.proc.pid})", flush=True)
        return 0
    finally:
        _stop(server)
