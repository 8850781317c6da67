"""A server in its own process group: started, waited for, stopped as a whole group."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from nextbuy import procs


def test_free_port_is_free():
    port = procs.free_port()
    assert not procs.port_open(port)


def test_ports_chosen_together_are_all_different_and_free():
    for _ in range(50):  # one after another, the system often hands the same port out again
        ports = procs.free_ports(5)
        assert len(set(ports)) == 5
    assert not any(procs.port_open(p) for p in ports)


def test_http_server_group_starts_answers_and_stops_entirely(tmp_path):
    port = procs.free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", procs.HOST, "--directory", str(tmp_path)]
    server = procs.GroupServer(cmd, port, log_path=tmp_path / "server.log", start_timeout=30, stop_timeout=5)
    with server:
        pgid = server.proc.pid
        assert procs.port_open(port)
        assert procs.group_alive(pgid)
    assert server.proc.returncode is not None
    assert not procs.group_alive(pgid)
    assert not procs.port_open(port)


def test_a_group_deaf_to_sigterm_is_killed(tmp_path):
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"up"  # the handler is in place
    started = time.monotonic()
    assert procs.stop_group(proc, timeout=0.5)
    assert time.monotonic() - started < 5
    assert not procs.group_alive(proc.pid)
    proc.stdout.close()


def test_a_server_that_exits_early_is_reported_with_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('no luck'); sys.exit(4)"]
    server = procs.GroupServer(cmd, procs.free_port(), log_path=tmp_path / "log", start_timeout=30)
    with pytest.raises(RuntimeError, match=r"exited with 4(.|\n)*no luck"), server:
        pass
    assert not procs.group_alive(server.proc.pid)


def test_importing_the_package_turns_telemetry_off_in_every_entry_point():
    import subprocess
    import sys

    from nextbuy import TELEMETRY_OFF

    env = {k: v for k, v in __import__("os").environ.items() if k not in TELEMETRY_OFF}
    code = (
        "import nextbuy, os, json; print(json.dumps({k: os.environ.get(k) for k in nextbuy.TELEMETRY_OFF}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert __import__("json").loads(out.stdout) == TELEMETRY_OFF
    # A user's explicit choice stands.
    env["DO_NOT_TRACK"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert __import__("json").loads(out.stdout)["DO_NOT_TRACK"] == "0"


def test_the_first_stop_signal_raises_and_later_ones_leave_the_clean_up_alone():
    """make forwards the SIGTERM its group just got: the second must not cut the clean-up short."""
    import os
    import signal

    cleaned, before = [], signal.getsignal(signal.SIGTERM)

    def stopped_twice_while_cleaning() -> None:
        with procs.stop_signals_raise():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                cleaned.append(True)

    with pytest.raises(procs.Stopped) as stopped:
        stopped_twice_while_cleaning()
    assert stopped.value.signum == signal.SIGTERM
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) == before


def test_what_a_stopped_query_still_holds_is_released_before_the_clean_up_writes(tmp_path):
    """A stop in the middle of a SELECT leaves its statement open in the unwound frames, and
    with it a read lock on the SQLite file: the clean-up's own write would wait for it."""
    import signal
    import sqlite3

    db = tmp_path / "store.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE runs (status TEXT)")
        setup.executemany("INSERT INTO runs VALUES (?)", [("RUNNING",), ("FINISHED",)])
    reader, writer = sqlite3.connect(db), sqlite3.connect(db, timeout=0.1)

    def query_stopped_half_way() -> None:
        rows = reader.execute("SELECT status FROM runs")
        rows.fetchone()  # the statement is open: a read lock on the file

        def load() -> None:  # a closure over the open cursor, as SQLAlchemy's row loading is
            try:
                raise AttributeError(rows)  # an attribute fallback, as SQLAlchemy's
            except AttributeError:
                raise procs.Stopped(signal.SIGTERM) from None  # the stop lands while handling it

        load()

    try:
        query_stopped_half_way()
    except procs.Stopped as err:
        writer.execute("UPDATE runs SET status = 'KILLED' WHERE status = 'RUNNING'")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.commit()
        procs.release_interrupted(err)
        writer.commit()  # the clean-up's write goes through
    assert sqlite3.connect(db).execute("SELECT status FROM runs").fetchall() == [("KILLED",), ("FINISHED",)]
    reader.close()
    writer.close()


def test_a_stop_that_lands_in_a_finalizer_is_delivered_again_not_lost(capfd):
    """Python ignores what a ``__del__`` or a weakref callback raises ("Exception ignored"): a
    SIGTERM handled there would let the stage run on to its end."""
    import os
    import signal

    class StoppedWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs here, inside the finalizer

    def stage(finished: list[bool]) -> None:
        with procs.stop_signals_raise():
            StoppedWhileCollected()  # collected at once
            for _ in range(100):
                time.sleep(0.01)
            finished.append(True)

    finished: list[bool] = []
    hook = sys.unraisablehook
    with pytest.raises(procs.Stopped):
        stage(finished)
    assert finished == []
    assert "Exception ignored" not in capfd.readouterr().err
    assert sys.unraisablehook is hook


def test_a_process_whose_main_thread_exited_is_alive_until_its_last_thread_is_gone():
    """As a killed torch process: the main thread is a zombie while another thread still runs
    (and holds the process's files and locks); the group is gone only after it."""
    script = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(3,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"  # the main thread ends, the other one runs on
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the main thread never exited"
            time.sleep(0.05)
        assert procs.group_alive(proc.pid)
        proc.wait(timeout=10)
        assert not procs.group_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
