"""Static checks of the team deployment in docker/ (no Docker engine needed).

What is checked: the compose stack's services, healthchecks, depends_on
conditions, 127.0.0.1-only ports, the shared project mount, secrets only as
required ${VAR:?...} references with placeholders in the committed example.env,
git/docker ignore rules for env files, the Dockerfile's shape, and that the
image's extra pins agree with requirements.lock. When the `docker compose`
plugin is installed, `docker compose config` must accept the stack too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nextbuy.orchestration.names import POOL, PROJECT_DIR_ENV

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
EXAMPLE_ENV = DOCKER / "example.env"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
PROJECT_IMAGE_SERVICES = AIRFLOW_SERVICES | {"mlflow", "evidently-ui"}
ALL_SERVICES = PROJECT_IMAGE_SERVICES | {"postgres", "redis"}
LONG_RUNNING = ALL_SERVICES - {"airflow-init"}

# Keys whose values are credentials. *_FILE keys name a path, not a secret.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|CREDENTIAL|_KEY$|_KEY_ID$|AUTH$", re.I)
REQUIRED_REF = re.compile(r"^\$\{(?P<var>[A-Z0-9_]+):\?[^}]+\}$")
VAR_REF = re.compile(r"\$\{(?P<var>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
URL_CREDENTIALS = re.compile(r"://(?P<user>[^:/@\s]*):(?P<password>[^@\s]+)@")
PLACEHOLDER = "CHANGE_ME"


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key)) and not key.upper().endswith("_FILE")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def read_env_file(path: Path, include_commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines of an env file; with include_commented, `# KEY=VALUE` too."""
    pattern = re.compile(r"^\s*(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = pattern.match(line)
        if not m or (m.group(1) and not include_commented):
            continue
        value = m.group(3).split(" #")[0].strip()  # trailing comment
        out[m.group(2)] = value
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error} with env (no shell env)."""

    def sub(m: re.Match) -> str:
        var, op, arg = m.group("var"), m.group("op"), m.group("arg")
        value = env.get(var, "")
        if op in (":-", "-"):
            return value or arg
        if op in (":?", "?"):
            if not value:
                raise AssertionError(f"required variable {var} unset: {arg}")
            return value
        return value

    return VAR_REF.sub(sub, text)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def volume_targets(service: dict) -> dict[str, str]:
    """container path -> source for short-syntax volumes."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out[v["target"]] = v.get("source", "")
        else:
            parts = v.split(":")
            # ${VAR:-..}:/path contains a ':' inside the reference
            if v.startswith("${"):
                close = v.index("}")
                source, rest = v[: close + 1], v[close + 2 :]
                parts = [source, *rest.split(":")]
            out[parts[1]] = parts[0]
    return out


def yaml_strings(node) -> list[str]:
    """Every string (keys and values) of a parsed YAML document: comments excluded."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*yaml_strings(k), *yaml_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in yaml_strings(item)]
    return [node] if isinstance(node, str) else []


def command_text(service: dict) -> str:
    cmd = service.get("command") or []
    return " ".join(cmd) if isinstance(cmd, list) else cmd


# --- the stack ----------------------------------------------------------------


def test_services_present(services):
    assert set(services) >= ALL_SERVICES, sorted(ALL_SERVICES - set(services))


def test_python_services_share_the_project_image(services):
    images = {services[name]["image"] for name in PROJECT_IMAGE_SERVICES}
    assert len(images) == 1, images
    for name in PROJECT_IMAGE_SERVICES:
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/Dockerfile", name
        assert build["context"] == "..", name


def test_airflow_services_are_celery_and_run_the_shared_project(services):
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        env = environment(svc)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"].startswith("/opt/nextbuy/"), name
        assert svc["env_file"] == "${NEXTBUY_ENV_FILE:-.env}", name  # stack_check: a throwaway one
        mounts = volume_targets(svc)
        assert "/opt/nextbuy" in mounts, f"{name}: project checkout not mounted at the WORKDIR"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
        assert env["MLFLOW_TRACKING_URI"].startswith("${MLFLOW_TRACKING_URI:-http://mlflow:5000")
    commands = {name: command_text(services[name]) for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"].startswith("airflow api-server")
    assert commands["airflow-scheduler"] == "airflow scheduler"
    assert commands["airflow-dag-processor"] == "airflow dag-processor"
    assert commands["airflow-triggerer"] == "airflow triggerer"
    assert commands["airflow-worker"] == "airflow celery worker"


def test_airflow_services_have_the_projects_airflow_settings(services):
    """The same settings as `make airflow` (a cold API server, no catch-up)."""
    from nextbuy.orchestration.names import AIRFLOW_SETTINGS

    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert {k: str(env.get(k)) for k in AIRFLOW_SETTINGS} == AIRFLOW_SETTINGS, name


def test_dags_find_the_shared_project(services):
    # nextbuy.orchestration reads NEXTBUY_PROJECT_DIR inside the containers; it must
    # be the mount target, and the host-side path must not share that name (env_file
    # hands docker/.env to the containers).
    dags = {p.name for p in (ROOT / "dags").glob("*.py")} if (ROOT / "dags").is_dir() else set()
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert environment(svc)[PROJECT_DIR_ENV] == "/opt/nextbuy", name
        assert volume_targets(svc)["/opt/nextbuy"].startswith("${NEXTBUY_CHECKOUT:-..}"), name
        assert environment(svc)["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/nextbuy/dags", name
    assert PROJECT_DIR_ENV not in read_env_file(EXAMPLE_ENV, include_commented=True)
    if dags:  # the DAGs' pool is the one airflow-init creates
        init = (DOCKER / "airflow-init.sh").read_text()
        assert re.search(rf"airflow pools set {re.escape(POOL)} 1\b", init)


def test_the_cli_finds_dvc_yaml_in_the_image():
    # The CLI's stage commands come from the dvc.yaml of the project the package is
    # installed from (nextbuy.stage_list): the image installs /opt/nextbuy editable.
    text = (DOCKER / "Dockerfile").read_text()
    assert "WORKDIR /opt/nextbuy" in text
    assert "COPY --chown=nextbuy:nextbuy . /opt/nextbuy" in text
    assert re.search(r"uv pip install [^\n]*-e \.", text)
    assert not re.search(r"^dvc\.yaml$", (ROOT / ".dockerignore").read_text(), re.M)


def test_workers_scale(services):
    worker = services["airflow-worker"]
    assert "replicas" in worker["deploy"]
    assert "container_name" not in worker  # a fixed name would forbid --scale
    assert not worker.get("ports")


def test_init_is_one_shot_migrate_and_dvc_pool(services):
    init = services["airflow-init"]
    assert init["restart"] == "no"
    script = DOCKER / "airflow-init.sh"
    assert str(script.relative_to(ROOT)) in command_text(init)
    text = script.read_text()
    assert "airflow db migrate" in text
    assert re.search(r"airflow pools set nextbuy_dvc 1\b", text)


def test_healthchecks_and_depends_on_conditions(services):
    for name in LONG_RUNNING:
        hc = services[name].get("healthcheck")
        assert hc, f"{name} has no healthcheck"
        assert hc.get("test"), f"{name} has no healthcheck"
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            cond = spec["condition"]
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep} healthy; {dep} has no healthcheck"
                )
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
    worker_deps = services["airflow-worker"]["depends_on"]
    assert worker_deps["airflow-apiserver"]["condition"] == "service_healthy"
    assert worker_deps["mlflow"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_holds_airflow_and_mlflow_databases(services):
    pg = services["postgres"]
    mounts = volume_targets(pg)
    assert mounts["/docker-entrypoint-initdb.d"].startswith("./postgres-init")
    scripts = list((DOCKER / "postgres-init").glob("*.sh"))
    assert scripts
    sql = "\n".join(s.read_text() for s in scripts)
    assert "CREATE DATABASE airflow" in sql
    assert "CREATE DATABASE mlflow" in sql
    env = environment(services["airflow-scheduler"])
    assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]


def test_mlflow_server_postgres_backend_and_served_artifact_volume(compose, services):
    svc = services["mlflow"]
    cmd = svc["command"]
    assert cmd[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in cmd
    dest = cmd[cmd.index("--artifacts-destination") + 1]
    assert dest.startswith("${MLFLOW_ARTIFACTS_DESTINATION:-/mlflow/artifacts}")
    assert volume_targets(svc)["/mlflow/artifacts"] in compose["volumes"]
    backend = environment(svc)["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql")
    assert backend.endswith("@postgres:5432/mlflow")
    allowed = cmd[cmd.index("--allowed-hosts") + 1]
    assert "mlflow:5000" in allowed  # the workers' Host header


def test_evidently_ui_serves_the_named_workspace_the_workers_fill(compose, services):
    svc = services["evidently-ui"]
    cmd = svc["command"]
    assert cmd[:3] == ["python", "-m", "nextbuy.mlops.dashboards.ui"]  # as make dashboards serves it
    workspace = cmd[cmd.index("--workspace") + 1]
    volume = volume_targets(svc)[workspace]
    assert volume in compose["volumes"]
    assert volume_targets(services["airflow-worker"]).get(workspace) == volume


def test_every_published_port_binds_loopback(services):
    env = read_env_file(EXAMPLE_ENV)
    published = 0
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
                continue
            resolved = interpolate(str(port), env)
            assert resolved.startswith("127.0.0.1:"), f"{name}: {port} -> {resolved}"
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+(/tcp)?", resolved), resolved
    assert published >= 3  # Airflow, MLflow, Evidently


# --- secrets --------------------------------------------------------------------


def test_compose_holds_no_secret_values(compose, services):
    strings = yaml_strings(compose)
    assert not [s for s in strings if PLACEHOLDER in s]
    for name, svc in services.items():
        for key, value in environment(svc).items():
            if is_secret_key(key):
                assert REQUIRED_REF.match(value), f"{name}.{key} must be a required ${{VAR:?...}} reference"
            for m in URL_CREDENTIALS.finditer(value):
                assert REQUIRED_REF.match(m.group("password")), f"{name}.{key}: literal password in a URL"
        for arg in svc.get("build", {}).get("args", {}) or {}:
            assert not is_secret_key(arg), f"{name}: secret as a build arg ({arg})"
    # Anywhere else (commands, healthchecks, anchors): no URL with a literal password.
    for s in strings:
        for m in URL_CREDENTIALS.finditer(s):
            assert m.group("password").startswith("${"), m.group(0)


def test_required_variables_are_all_in_example_env(compose):
    strings = yaml_strings(compose)
    required = {m.group("var") for s in strings for m in VAR_REF.finditer(s) if m.group("op") == ":?"}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"} <= required
    example = read_env_file(EXAMPLE_ENV)
    assert required <= set(example), sorted(required - set(example))
    for s in strings:
        interpolate(s, example)  # raises on an unset required variable


def test_example_env_has_only_placeholder_secrets():
    env = read_env_file(EXAMPLE_ENV, include_commented=True)
    secret_keys = [k for k in env if is_secret_key(k)]
    assert {
        "POSTGRES_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_SECRET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_ADMIN_PASSWORD",
    } <= set(secret_keys)
    for key in secret_keys:
        assert env[key] == "" or env[key].startswith(PLACEHOLDER), (
            f"example.env: {key} has a real-looking value"
        )
    for key, value in env.items():
        for m in URL_CREDENTIALS.finditer(value):
            assert m.group("password").startswith(PLACEHOLDER), key


def test_init_scripts_refuse_placeholders_and_parse():
    for script in [DOCKER / "airflow-init.sh", *(DOCKER / "postgres-init").glob("*.sh")]:
        text = script.read_text()
        assert f"{PLACEHOLDER}*" in text, f"{script.name} does not refuse the example placeholders"
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script


def test_env_files_ignored_by_git_but_example_committed():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git checkout")

    def ignored(path: str) -> bool:
        r = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, capture_output=True)
        assert r.returncode in (0, 1), r.stderr
        return r.returncode == 0

    assert ignored("docker/.env")
    assert ignored(".env")
    assert not ignored("docker/example.env")


def test_dockerignore_keeps_secrets_and_local_state_out():
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"**/.env", "**/*.env", ".git", ".venv"} <= patterns
    assert not any(p.startswith("!") and "env" in p for p in patterns)


# --- the image ------------------------------------------------------------------


def test_dockerfile_shape():
    text = (DOCKER / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    code = "\n".join(instructions)  # comments mention the flags too; check the commands
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert froms
    assert froms[0].split()[1] == "${BASE_IMAGE}"
    assert "ARG BASE_IMAGE=python:3.11-slim" in instructions  # overridable: air-gapped bases
    # no registry-only frontend: a `# syntax=` line pulls an image before the build starts
    assert not re.match(r"#\s*syntax\s*=", text.splitlines()[0])
    assert "WORKDIR /opt/nextbuy" in instructions
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0", "0:0")
    assert "uv pip install" in code
    assert "-r /tmp/requirements/requirements.lock" in code
    assert re.search(r"uv pip install[^\n]*--no-deps -e \.", code)  # the project itself
    lock = (ROOT / "requirements.lock").read_text()
    if re.search(r"^torch==[^\s]+\+cpu", lock, re.M):
        # torch's CPU build: a wheel in docker/wheels/ first, else an index the build names
        assert "--find-links /tmp/wheels" in code
        assert "COPY docker/wheels/ /tmp/wheels/" in instructions
        assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in instructions
        assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}' in code
        assert re.search(r"--index-strategy (unsafe-best-match|unsafe-first-match)", code)
    for line in instructions:
        if line.startswith(("ENV ", "ARG ")):
            for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line):
                assert not is_secret_key(key), f"secret baked into the image: {line}"
    assert not re.search(r"^(COPY|ADD)\s.*\.env\b", text, re.M)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def test_image_extras_agree_with_the_lock():
    lock = _pins(ROOT / "requirements.lock")
    extras = _pins(DOCKER / "requirements-docker.txt")
    for name in ("apache-airflow-providers-celery", "psycopg2-binary", "redis"):
        assert name in extras, name
    moved = {n: (lock[n], v) for n, v in extras.items() if n in lock and lock[n] != v}
    assert not moved, f"re-compile docker/requirements-docker.txt (see its .in): {moved}"
    assert lock["apache-airflow"] == "3.3.2"


# --- docker compose itself, where the plugin exists -------------------------------


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return r.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed")
def test_docker_compose_config_accepts_the_stack(tmp_path):
    # A copy, with example.env as its .env: compose reads env_file: .env, which
    # a checkout does not have (git-ignored).
    shutil.copytree(DOCKER, tmp_path / "docker", ignore=shutil.ignore_patterns(".env", "*.whl"))
    shutil.copy(EXAMPLE_ENV, tmp_path / "docker" / ".env")
    r = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            str(tmp_path / "docker" / "compose.yaml"),
            "--env-file",
            str(tmp_path / "docker" / "example.env"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    import json

    config = json.loads(r.stdout)
    for name, svc in config["services"].items():
        for port in svc.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", (name, port)
