"""The scripts of docker/ that run inside or around the stack: the light health checks, the
airflow-init marker, stack_check's throwaway settings, and the air-gapped base-image build
(what can be checked without a Docker engine; `make stack-check` runs the rest for real)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from nextbuy import procs

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BASES = DOCKER / "base-images"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load("healthcheck")
marker = _load("airflow_init_marker")
stack_check = _load("stack_check")


class _Status(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(int(self.path.strip("/")))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = HTTPServer((procs.HOST, 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{procs.HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_check_passes_below_500_and_fails_on_errors_or_nothing_listening(http_server):
    assert healthcheck.main(["url", f"{http_server}/200"]) == 0
    assert healthcheck.main(["url", f"{http_server}/404"]) == 0  # it answers: it is up
    assert healthcheck.main(["url", f"{http_server}/503"]) == 1
    assert healthcheck.main(["url", f"http://{procs.HOST}:{procs.free_port()}/"]) == 1


def test_process_check_finds_a_running_command_line_and_not_itself():
    sleeper = subprocess.Popen(["sleep", "30"])
    cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
    deadline = time.monotonic() + 10
    while not cmdline.read_bytes() and time.monotonic() < deadline:  # until exec is done
        time.sleep(0.01)
    try:
        assert healthcheck.main(["process", "sleep", "30"]) == 0
        assert healthcheck.main(["process", "sleep", "no-such-word-anywhere"]) == 1
        # run as a script, its own command line (which holds the words) does not count
        own = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), "process", "zzz-unique-word"])
        assert own.returncode == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    assert healthcheck.main([]) == 2


@pytest.fixture
def init_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json"))
    monkeypatch.setenv("AIRFLOW_ADMIN_USER", "admin")
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "first")
    revision = {"value": "abc123"}
    monkeypatch.setattr(marker, "database_revision", lambda: revision["value"])
    (tmp_path / "passwords.json").write_text("{}")
    return tmp_path, revision


def test_init_marker_skips_only_the_very_same_setup(init_env, monkeypatch):
    tmp_path, revision = init_env
    assert marker.main(["check"]) == 1  # never initialised
    assert marker.main(["write"]) == 0
    assert marker.main(["check"]) == 0  # the next `up`: nothing to do
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "changed")
    assert marker.main(["check"]) == 1  # a new admin password is written again
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "first")
    revision["value"] = None  # a fresh, empty metadata database (e.g. after down -v)
    assert marker.main(["check"]) == 1
    revision["value"] = "abc123"
    (tmp_path / "passwords.json").unlink()
    assert marker.main(["check"]) == 1


def test_airflow_init_checks_the_marker_before_any_airflow_command():
    lines = (DOCKER / "airflow-init.sh").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.startswith("#"))
    steps = ('marker.py" check', "airflow db migrate", 'marker.py" write')
    check, migrate, write = (code.index(step) for step in steps)
    assert check < migrate < write


def _required_variables() -> set[str]:
    lines = (DOCKER / "compose.yaml").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", code))


def test_throwaway_settings_fill_every_required_variable_with_fresh_secrets(tmp_path):
    one = stack_check.throwaway_env(tmp_path, 1000, 1000)
    two = stack_check.throwaway_env(tmp_path, 1000, 1000)
    assert _required_variables() <= set(one)
    assert not any(value.startswith("CHANGE_ME") for value in one.values())
    Fernet(one["AIRFLOW_FERNET_KEY"])  # a valid key
    assert one["AIRFLOW_ADMIN_PASSWORD"] != two["AIRFLOW_ADMIN_PASSWORD"]
    ports = [one[k] for k in ("AIRFLOW_PORT", "MLFLOW_PORT", "EVIDENTLY_PORT")]
    assert len(set(ports)) == 3
    assert all(not procs.port_open(int(p)) for p in ports)
    assert one["NEXTBUY_CHECKOUT"] == str(tmp_path)


def test_the_torch_wheel_is_staged_from_pips_find_links(tmp_path, monkeypatch):
    pin = stack_check.torch_pin()
    links = tmp_path / "links"
    links.mkdir()
    (links / f"torch-{pin}-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"wheel")
    (tmp_path / "wheels").mkdir()
    monkeypatch.setattr(stack_check, "find_links", lambda: [links])
    name = stack_check.stage_torch_wheel(tmp_path / "wheels")
    assert name
    assert (tmp_path / "wheels" / name).read_bytes() == b"wheel"
    monkeypatch.setattr(stack_check, "find_links", lambda: [])
    assert stack_check.stage_torch_wheel(tmp_path / "wheels") is None


def test_base_images_build_names_what_compose_and_the_dockerfile_take():
    compose = (DOCKER / "compose.yaml").read_text()
    for variable in ("NEXTBUY_BASE_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE"):
        assert "${" + variable + ":-" in compose, variable
    script = (BASES / "build.sh").read_text()
    for line in ("NEXTBUY_BASE_IMAGE=$prefix/python:3.11", "POSTGRES_IMAGE=$prefix/postgres:15",
                 "REDIS_IMAGE=$prefix/redis:7"):  # fmt: skip
        assert line in script
    assert "debootstrap --variant=minbase" in script
    assert "docker import" in script
    assert subprocess.run(["bash", "-n", str(BASES / "build.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(BASES / "postgres-entrypoint.sh")]).returncode == 0
    for name in ("python", "postgres", "redis"):
        text = (BASES / f"{name}.Dockerfile").read_text()
        assert "FROM ${DEBIAN_IMAGE}" in text
        assert "apt-get install" in text


def test_every_health_check_is_a_light_one():
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        assert "airflow jobs check" not in test, name
        assert "inspect ping" not in test, name
        if name not in ("postgres", "redis") and test:
            assert "/opt/nextbuy/docker/healthcheck.py" in test, name
    mlflow = services["mlflow"]
    assert "--workers" in mlflow["command"]
    assert "UVICORN_TIMEOUT_WORKER_HEALTHCHECK" in mlflow["environment"]


def test_docker_times_with_nanoseconds_parse_to_the_microsecond():
    started = stack_check._docker_time("2026-11-23T01:38:30.670135123Z")
    finished = stack_check._docker_time("2026-11-23T01:38:35Z")
    assert (finished - started).total_seconds() == pytest.approx(4.329865)


def test_the_training_tasks_times_are_airflows_own_per_task():
    tis = [
        {"task_id": "set_params", "map_index": -1, "duration": 1.04},
        {"task_id": "train", "map_index": -1, "duration": 2160.049},
        {"task_id": "batch_shard", "map_index": 0, "duration": 5.0},  # mapped: not a stage task
        {"task_id": "monitor", "map_index": -1, "duration": None},  # did not run
    ]
    assert stack_check.task_seconds(tis) == {"set_params": 1.0, "train": 2160.0}


def test_the_train_logs_longest_silence_is_measured_between_timestamped_lines():
    content = [
        {"event": "::group::Log message source details", "sources": ["/logs/x.log"]},  # no time
        {"timestamp": "2026-11-28T07:15:00.000000Z", "event": "> nextbuy train"},
        {"timestamp": "2026-11-28T07:15:30.500000Z", "event": "member 1/1: epoch 1/8"},
        {"timestamp": "2026-11-28T07:16:45.500000+00:00", "event": "epoch 1/8 (30 s, 2 min left)"},
        {"timestamp": "2026-11-28T07:17:00.000000Z", "event": "train done"},
    ]
    assert stack_check.longest_log_silence(content) == (75.0, 4)
    assert stack_check.longest_log_silence(["a line that did not parse"]) == (0.0, 0)


def _shell_lines(markdown: str) -> list[str]:
    """The lines of a page's ```bash blocks, in page order."""
    return [line for block in re.findall(r"```bash\n(.*?)```", markdown, re.S) for line in block.splitlines()]


def test_a_bare_host_meets_the_host_preparation_before_any_command_that_needs_it():
    lines = _shell_lines((ROOT / "docs" / "how-to" / "team-stack.md").read_text())
    first = next(i for i, line in enumerate(lines) if "docker/prepare-host.sh" in line)
    needs_it = ("docker ", "base-images/build.sh", "make stack-check")
    assert not [line for line in lines[:first] if any(word in line for word in needs_it)]
    assert any("base-images/build.sh" in line for line in lines[first:])
    readme = (ROOT / "README.md").read_text()
    assert "docker/prepare-host.sh" in readme


def test_host_preparation_refuses_an_unknown_argument_and_parses():
    script = DOCKER / "prepare-host.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    refused = subprocess.run(["bash", str(script), "--yes"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "unknown argument --yes" in refused.stderr


def test_the_stack_check_says_how_to_prepare_a_host_without_compose(tmp_path, monkeypatch):
    fake = tmp_path / "docker"  # an engine that answers, without the compose plugin
    fake.write_text('#!/bin/sh\n[ "$1" = info ] && exit 0\necho "unknown command: docker $1" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(stack_check.CheckFailed, match=r"docker compose version.*prepare-host\.sh"):
        stack_check.require_engine()
