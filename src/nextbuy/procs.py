"""Processes and local ports: a server in its own process group, started, waited for
and stopped as a whole group, never by name; stop signals turned into exceptions, so a
process that is told to stop runs its clean-up once, to the end.

Standard library only: ``nextbuy.orchestration`` (imported when Airflow parses the
DAGs) uses it, and so do the benchmarks and tests.
"""

from __future__ import annotations

import _thread
import abc
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Self

HOST = "127.0.0.1"
# One pipeline run per checkout (the Makefile's RUN_LOCK): `make run` holds it for its whole
# repro and tells its stage commands so (RUN_LOCK_HELD_ENV); a stage command run by hand takes it.
RUN_LOCK = Path(".dvc") / "tmp" / "make-run.lock"
RUN_LOCK_HELD_ENV = "NEXTBUY_RUN_LOCK_HELD"
RUN_BUSY = 75  # EX_TEMPFAIL: try again once the other run is over (the Makefile's RUN_BUSY)
RUN_BUSY_MESSAGE = (
    "another make run or run-preset is running in this checkout ({lock}): nothing was touched; wait for it"
)
# What stops a process politely: Ctrl-C, kill / Airflow's timeout and mark-failed / docker stop,
# the terminal closed.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_stop_received: list[int] = []  # the stop signal the innermost ``stop_signals_raise`` block got


def stop_received() -> int | None:
    """The stop signal this process got inside ``stop_signals_raise`` (None: none, or outside)."""
    return _stop_received[-1] if _stop_received else None


class Stopped(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C raises KeyboardInterrupt (a
    BaseException, so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_signals_raise(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block the first stop signal raises (SIGINT: KeyboardInterrupt, others:
    :class:`Stopped`) and every later one is ignored, so the clean-up it starts (``except`` /
    ``finally``) runs to its end: ``make``, for one, forwards the SIGTERM its process group
    just got, and a second Ctrl-C is common. SIGXFSZ stays ignored, as Python starts with it:
    a write past ``ulimit -f`` fails with EFBIG instead of killing the process. A stop that
    lands where Python cannot raise (a ``__del__``, a weakref callback run by the garbage
    collector: "Exception ignored") is delivered again, to the code that runs next, instead
    of being lost. Outside the main thread (where signals cannot be handled) the block runs
    unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if received:
            return
        received.append(signum)
        _stop_received.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)

    unraisable = sys.unraisablehook

    def deliver_again(lost: sys.UnraisableHookArgs) -> None:
        if received and isinstance(lost.exc_value, (Stopped, KeyboardInterrupt)):
            # Sent from a new thread (not waited for): the handler runs in this (main) thread
            # once the callback is over; os.kill from here would run it at once, inside it again.
            _thread.start_new_thread(os.kill, (os.getpid(), received.pop()))
        else:
            unraisable(lost)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    sys.unraisablehook = deliver_again
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    before = len(_stop_received)
    try:
        yield
    finally:
        del _stop_received[before:]
        sys.unraisablehook = unraisable
        for sig, old in previous.items():
            signal.signal(sig, old)


def release_interrupted(err: BaseException) -> None:
    """Free what the code a stop signal interrupted still holds through ``err`` (an open SQLite
    statement, and the read lock it keeps on the database; a half-read file), so the clean-up
    that follows does not wait on its own process: its traceback is cut below the frames still
    running (the clean-up's own), and the exception it interrupted the handling of is dropped,
    so the frames the stop unwound, their locals and the closures they ran, go."""
    node = err.__traceback__
    while node is not None and node.tb_next is not None:
        try:
            node.tb_next.tb_frame.clear()  # raises for a frame still running
        except RuntimeError:
            node = node.tb_next
            continue
        node.tb_next = None
        break
    err.__context__ = err.__cause__ = None
    gc.collect()


def venv_env() -> dict[str, str]:
    """This process's environment with its venv's bin first on PATH: the ``nextbuy`` and ``dvc``
    a child runs (a DVC stage's command among them) are this project's, whatever the shell's
    PATH holds."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` different TCP ports on 127.0.0.1 that nothing listens on right now. Every socket
    stays bound until all are chosen: ports asked for one after another may come back the same
    (the system hands a closed socket's port out again)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


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
        if int(fields[2]) == pgid and (fields[0] != "Z" or _threads_alive(stat.parent)):  # state ppid pgrp
            return True
    return False


def _threads_alive(process: Path) -> bool:
    """Whether a thread of the process at /proc/PID has not exited yet. A killed multithreaded
    process (torch, pyarrow) shows its main thread as a zombie while its other threads still
    tear it down, holding its open files and their locks until the last one is gone."""
    for stat in (process / "task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def signal_and_wait(proc: subprocess.Popen, sig: int, seconds: float) -> bool:
    """Send ``sig`` to the group ``proc`` leads; True once no process of it is left."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or it stays a zombie of ours
        if not group_alive(proc.pid):
            return True
        time.sleep(0.1)
    return not group_alive(proc.pid)


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """SIGTERM to the process group ``proc`` leads, SIGKILL after ``timeout``; True when none is left."""
    if not signal_and_wait(proc, signal.SIGTERM, timeout):
        signal_and_wait(proc, signal.SIGKILL, 5.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)  # reap the leader: it may still be on its way out when the group looks empty
    return not group_alive(proc.pid)


class Started(abc.ABC):
    """What ``start`` starts and ``stop`` ends, as a context manager: stopped on leaving the
    block, and also when ``start`` fails half-way, so what it did start never outlives it."""

    @abc.abstractmethod
    def start(self) -> Self: ...

    @abc.abstractmethod
    def stop(self) -> bool: ...

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GroupServer(Started):
    """``cmd`` as the leader of its own process group (setsid), serving on 127.0.0.1:``port``.

    ``start`` returns once ``is_ready()`` (by default: the port answers); ``stop`` ends
    the whole group. Output goes to ``log_path``, or to this process's when None.
    Subclasses override ``is_ready`` for a better readiness check."""

    def __init__(
        self,
        cmd: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
    ):
        self.cmd, self.port, self.env = list(cmd), port, None if env is None else dict(env)
        self.log_path = None if log_path is None else Path(log_path)
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._on_wait: tuple[Callable[[], None], float] | None = None

    def on_wait(self, callback: Callable[[], None], every: float) -> None:
        """Call ``callback`` every ``every`` seconds while ``start`` waits (progress for a person)."""
        self._on_wait = (callback, every)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def is_ready(self) -> bool:
        return port_open(self.port)

    def start(self) -> Self:
        """Start the group and wait until ready; raises (group still running) when it is not."""
        if self.log_path is not None:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            start_new_session=True,
            stdout=self._log,
            stderr=None if self._log is None else subprocess.STDOUT,
        )
        started = time.monotonic()
        deadline, next_report = started + self.start_timeout, started
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[0]} exited with {self.proc.returncode}:\n{self.log()}")
            if self.is_ready():
                return self
            if self._on_wait is not None and time.monotonic() >= next_report + self._on_wait[1]:
                next_report = time.monotonic()
                self._on_wait[0]()
            time.sleep(0.25)
        raise TimeoutError(f"{self.cmd[0]} not ready after {self.start_timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        """The end of the server's log file (empty when it logs to this process's output)."""
        try:
            return self.log_path.read_text(errors="replace")[-6000:] if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> bool:
        """Stop the whole process group; True when nothing of it is left."""
        gone = True if self.proc is None else stop_group(self.proc, self.stop_timeout)
        if self._log is not None:
            self._log.close()
        return gone


def lock_holders(path: Path) -> list[str]:
    """The other processes that have ``path`` open ("PID command line"), from /proc: who holds the
    checkout's pipeline lock when a run is refused (empty where /proc cannot say)."""
    try:
        target = path.resolve(strict=True)
    except OSError:
        return []
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if fd_dir.parent.name == str(os.getpid()):  # the asking process opened it to try the lock
            continue
        try:
            if not any(Path(os.readlink(fd)) == target for fd in fd_dir.iterdir()):
                continue
            argv = (fd_dir.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or another user's
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        holders.append(f"{fd_dir.parent.name} {command[:200]}")
    return holders


def run_busy_message(root: Path = Path(".")) -> str:
    """Why a run was refused: the lock, and which processes hold it where /proc says."""
    holders = lock_holders(root / RUN_LOCK)
    held_by = f"; held by PID {', PID '.join(holders)}" if holders else ""
    return RUN_BUSY_MESSAGE.format(lock=RUN_LOCK) + held_by


@contextlib.contextmanager
def pipeline_lock(root: Path = Path(".")) -> Iterator[bool]:
    """Hold the checkout's pipeline lock for the block: True when held (or when a ``make run``
    holding it started this process, or ``root`` is no DVC project), False when another run
    holds it (then nothing must be touched)."""
    import fcntl  # POSIX only, as DVC's own locks: imported where the lock is taken

    if os.environ.get(RUN_LOCK_HELD_ENV) or not (root / ".dvc").is_dir():
        yield True
        return
    path = root / RUN_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # flock(1)'s lock, as `make run` takes it
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
