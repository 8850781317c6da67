"""Shared fixtures: the repo root, the shared real data, a tiny simulator config, the tiny
project after one full ``dvc repro`` (built once per test session)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

# `make test` runs one pytest process per core (xdist), and many tests start pipeline stages as
# subprocesses: one math thread per process (torch, BLAS), inherited by every child, keeps them
# from competing for the same cores; oversubscribed, torch's threads spin and a tiny training
# costs several times the CPU. Set before anything imports torch or numpy.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402 - after the thread settings above

from nextbuy.presets import params_with  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CORA_NPZ = SHARED_DATA / "cora_ml" / "cora_ml.npz"

# The tiny store of presets/tiny.yaml on top of the repo's params.yaml: every knob set.
TINY_PARAMS = params_with(ROOT / "presets" / "tiny.yaml", ROOT / "params.yaml")


@pytest.fixture
def tiny_params() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def cora_npz() -> Path:
    if not CORA_NPZ.exists():
        pytest.skip(f"{CORA_NPZ} not present (shared data only on dev/CI machines)")
    return CORA_NPZ


@pytest.fixture(scope="session")
def finished_tiny_project(tmp_path_factory) -> Path:
    """The project on the tiny store after one full ``dvc repro``, run once per test session:
    under xdist in the folder all workers share (the parent of each worker's own), the first
    worker to ask builds it and the others wait. Never changed: tests copy it
    (``tests.helpers.copy_finished_project``)."""
    from tests.helpers import finished_project

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return finished_project(shared, TINY_PARAMS)


@pytest.fixture(scope="session")
def mlflow_schema(tmp_path_factory) -> Path:
    """An MLflow SQLite store at MLflow's latest schema holding no experiment, made once per
    test process by MLflow itself. MLflow migrates a new store file through every one of its
    schema migrations (about 0.7 CPU-s); a copy of this one is the same store at once."""
    from mlflow.tracking import MlflowClient

    from tests.helpers import without_default_experiment

    db = tmp_path_factory.mktemp("mlflow-schema") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    without_default_experiment(db)
    return db


@pytest.fixture(scope="session")
def new_mlflow_store(mlflow_schema: Path):
    """``new_mlflow_store(path)``: a new MLflow store at the SQLite file ``path`` (which must not
    exist yet), as MLflow would create it there; returns its tracking URI. MLflow adds the
    Default experiment, with its artifacts beside the store's user, when it first opens it."""
    import shutil

    def create(path: Path) -> str:
        assert not path.exists(), f"{path} exists: a new store only"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mlflow_schema, path)
        return f"sqlite:///{path}"

    return create


@pytest.fixture
def store(tmp_path, monkeypatch, new_mlflow_store):
    """A project dir (the cwd) with its own MLflow store; a client on it. Process state put back."""
    from mlflow.tracking import MlflowClient

    from nextbuy.bench.serving_fixtures import mlflow_store
    from nextbuy.mlops import tracking
    from nextbuy.release.first_release import FIRST_RELEASE_ENV

    for key in (tracking.RUN_CONTEXT_ENV, FIRST_RELEASE_ENV):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)  # recorded: restored (absent) afterwards
    monkeypatch.chdir(tmp_path)
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    with mlflow_store(uri):
        tracking.configure(tmp_path)
        yield MlflowClient()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a Spark session (the ``local_spark`` fixture: a JVM, seconds before
    its first job) is end to end: marked ``slow``, run by `make test-e2e`.

    Files holding end-to-end (``slow``) tests first, each file's tests in their own order:
    `make test` hands whole files to its workers in this order (xdist ``--dist loadfile``), so
    the long files start at once and the short ones fill in around them, instead of one long
    file running alone at the end. Of the files that copy ``finished_tiny_project`` only the
    first comes at the front, to build it while the other worker runs the next long files;
    the others come after those, when it is built, instead of waiting for it. The standalone
    cluster's file comes last of all: its session replaces the Spark tests' local one, which is
    then never started again."""
    for item in items:
        if "local_spark" in item.fixturenames:
            item.add_marker(pytest.mark.slow)
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    users = [item.path for item in items if "finished_tiny_project" in item.fixturenames]
    builder = users[0] if users else None

    def rank(item: pytest.Item) -> int:
        if item.path == builder:
            return 0
        if item.path in users:
            return 2
        if item.nodeid.startswith(SPARK_CLUSTER_TESTS):
            return 4
        return 1 if item.path in slow_files else 3

    items.sort(key=rank)


@pytest.hookimpl(trylast=True)  # after the runner's teardown: the file's fixtures are gone
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """At the end of each test file: collect its garbage, then freeze what is left (``gc.freeze``).

    A test process holds millions of long-lived objects (torch, MLflow, Airflow, pandas, each
    file's imports); every full collection scanned them all again, and full collections come
    more often the more there are. Frozen, they are never scanned again: on tests/mlops,
    tests/stages and tests/domain in one process this took 98 -> 85 CPU-s of user time.
    Objects still alive at a file's end are left to reference counting from then on (the
    file's garbage is collected first)."""
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


# One JVM runs the Spark engine's tests: every file of tests/engines/spark goes to the same xdist
# worker (its session-scoped local session; a JVM start and warm-up cost about ten CPU-seconds).
SPARK_TESTS = "tests/engines/spark/"
SPARK_CLUSTER_TESTS = "tests/engines/spark/test_standalone.py"


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: pytest without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` (``make test``), with tests/engines/spark handed out as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SparkTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SPARK_TESTS if scope.startswith(SPARK_TESTS) else scope

    return SparkTogether(config, log)
