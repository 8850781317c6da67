"""`make run` holds the checkout while it runs: a second one is refused before it touches anything
(DVC's lock would refuse its repro, but restoring outputs after that failure would rewrite what
the first run is writing)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) not installed")


@pytest.mark.parametrize("target", ["run", "run-preset PRESET=presets/tiny.yaml"])
def test_a_second_make_run_is_refused_while_one_holds_the_checkout(tmp_path, target):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    # An environment that counts as installed: the stamp newer than what it is made from.
    (tmp_path / "benchmarks").mkdir()
    for made_from in ("pyproject.toml", "benchmarks/pyproject.toml", "requirements.lock", "stamp"):
        (tmp_path / made_from).write_text("")
        time.sleep(0.01)
    lock = tmp_path / ".dvc" / "tmp" / "make-run.lock"
    lock.parent.mkdir(parents=True)
    first = subprocess.Popen(["flock", str(lock), "sleep", "60"])  # the run in progress
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "the stand-in run never took the lock"
            time.sleep(0.05)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".git" not in p.parts)
        second = subprocess.run(
            ["make", *target.split(), "STAMP=stamp"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".git" not in p.parts)
    finally:
        first.kill()
        first.wait()
    assert second.returncode != 0
    assert "another make run or run-preset is running in this checkout" in second.stdout + second.stderr
    assert after == before


def test_a_stage_command_run_by_hand_is_refused_while_a_make_run_holds_the_checkout(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nextbuy.cli import app
    from nextbuy.procs import RUN_BUSY, RUN_LOCK, RUN_LOCK_HELD_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RUN_LOCK_HELD_ENV, raising=False)
    (tmp_path / RUN_LOCK).parent.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    first = subprocess.Popen(["flock", str(tmp_path / RUN_LOCK), "sleep", "60"])  # the make run
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(tmp_path / RUN_LOCK), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "the stand-in run never took the lock"
            time.sleep(0.05)
        refused = CliRunner().invoke(app, ["train"])
        # the run's own stage commands are told the lock is theirs
        monkeypatch.setenv(RUN_LOCK_HELD_ENV, "1")
        theirs = CliRunner().invoke(app, ["train", "--params", "nope.yaml"])
    finally:
        first.kill()
        first.wait()
    assert refused.exit_code == RUN_BUSY, refused.output
    said = " ".join(refused.output.split())
    assert "another make run or run-preset is running in this checkout" in said
    assert f"held by PID {first.pid} flock" in said  # who to wait for, or to look at
    assert not (tmp_path / "models").exists()
    assert theirs.exit_code == 2, theirs.output  # it ran: and refused the missing params file


def test_the_makefile_and_the_stage_commands_name_the_same_lock():
    from nextbuy.procs import RUN_BUSY, RUN_BUSY_MESSAGE, RUN_LOCK

    makefile = (ROOT / "Makefile").read_text()
    assert f"RUN_LOCK := {RUN_LOCK.as_posix()}" in makefile
    assert f"RUN_BUSY := {RUN_BUSY}" in makefile
    assert RUN_BUSY_MESSAGE.format(lock="$(RUN_LOCK)") in makefile
