"""The batch DAG's logic (nextbuy.orchestration.batch) without Airflow or MLflow:
shards, the command line and its environment, the champion pinned, the checks before
publishing, the manifest and the ``_latest.json`` pointer. (No Airflow imported here: it
would configure itself before tests/dags can point it at a temporary home; the task
bodies run in tests/dags/test_dags.py.)"""

from __future__ import annotations

import itertools
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy.orchestration import batch
from nextbuy.orchestration.batch import BatchError, NoChampion
from nextbuy.orchestration.names import BATCH_MANIFEST, LATEST_POINTER, VENV_ENV

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def champion(tmp_path: Path, n_products=10, k=3, num_shards=3, version=7) -> dict:
    root = tmp_path / "recommendations"
    return {
        "model_name": "nextbuy",
        "model_version": version,
        "model_uri": f"models:/nextbuy/{version}",
        "n_products": n_products,
        "k": k,
        "k_per_source": batch.k_per_source(k, n_products),
        "num_shards": num_shards,
        "shards": batch.shard_list(num_shards),
        "out": str(batch.version_dir(root, version)),
    }


def write_shard(folder: Path, shard: int, num_shards: int, n_products: int, k: int, files: int = 2) -> None:
    """What batch-topk writes for one shard: its sources (id % num_shards == shard), k rows each."""
    sources = np.arange(shard, n_products, num_shards)
    frame = pd.DataFrame(
        {
            "source_id": np.repeat(sources, k),
            "rank": np.tile(np.arange(1, k + 1), sources.size),
            "candidate_id": (np.repeat(sources, k) + np.tile(np.arange(1, k + 1), sources.size)) % n_products,
            "score": 0.5,
        }
    )
    target = batch.shard_dir(folder, shard)
    target.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(frame), files + 1).astype(int)
    for part, (a, b) in enumerate(itertools.pairwise(bounds)):
        frame.iloc[a:b].to_parquet(target / f"part-{part:05d}.parquet", index=False)


def write_all(c: dict) -> None:
    for shard in range(c["num_shards"]):
        write_shard(Path(c["out"]), shard, c["num_shards"], c["n_products"], c["k_per_source"])


# --- shards and command line --------------------------------------------------------------------------------


def test_shard_list_is_every_shard_once():
    assert batch.shard_list(4) == [0, 1, 2, 3]
    assert batch.shard_list(1) == [0]
    for bad in (0, -1, batch.MAX_SHARDS + 1, 2.0, True, "4"):
        with pytest.raises(BatchError, match="num_shards"):
            batch.shard_list(bad)


def test_k_per_source_is_capped_by_the_catalogue_like_batch_topk():
    assert batch.k_per_source(20, 300) == 20
    assert batch.k_per_source(20, 12) == 11  # a product never recommends itself
    assert batch.k_per_source(5, 1) == 0


def test_the_shard_command_pins_the_version_and_names_the_shard():
    out = Path("/p/recommendations/model_version=7")
    assert batch.shard_command("models:/nextbuy/7", out, 20, 2, 4) == [
        "nextbuy",
        "batch-topk",
        "--k",
        "20",
        "--model",
        "models:/nextbuy/7",
        "--out",
        str(out),
        "--shard",
        "2",
        "--num-shards",
        "4",
    ]


def test_folders_are_named_as_batch_topk_writes_them(tmp_path):
    folder = batch.version_dir(tmp_path / "recommendations", 12)
    assert folder.name == "model_version=12"
    assert batch.shard_dir(folder, 3).name == "shard=003"  # serving/batch.py: shard={shard:03d}
    assert batch.recommendations_dir(tmp_path) == tmp_path.resolve() / "recommendations"


def test_shards_run_with_the_project_env_and_its_mlflow_store_unless_set(tmp_path, monkeypatch):
    monkeypatch.delenv(VENV_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ARTIFACT_ROOT", raising=False)
    env = batch.batch_env(tmp_path)
    project = tmp_path.resolve()
    assert env["PATH"].split(os.pathsep)[0] == str(project / ".venv" / "bin")
    assert env["PYTHONPATH"] == str(project / "src")
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{project / 'mlflow.db'}"
    assert batch.tracking_uri(tmp_path) == env["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert batch.batch_env(tmp_path)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert batch.tracking_uri(tmp_path) == "http://mlflow:5000"


# --- the champion, pinned -----------------------------------------------------------------------------------


def test_resolve_pins_the_champion_version(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(batch.tasks, "model_name", lambda project: "nextbuy")
    monkeypatch.setattr(batch.tasks, "champion_version", lambda name, store: "7")

    def n_products(uri, store):
        seen["uri"] = uri
        return 300

    monkeypatch.setattr(batch.tasks, "model_n_products", n_products)
    c = batch.resolve(tmp_path, 20, 4)
    assert seen["uri"] == "models:/nextbuy/7"  # the version, never the alias
    assert c == {
        "model_name": "nextbuy",
        "model_version": 7,
        "model_uri": "models:/nextbuy/7",
        "n_products": 300,
        "k": 20,
        "k_per_source": 20,
        "num_shards": 4,
        "shards": [0, 1, 2, 3],
        "out": str(tmp_path.resolve() / "recommendations" / "model_version=7"),
    }
    json.dumps(c)  # an XCom: plain JSON


def test_resolve_without_a_champion_or_with_bad_params(tmp_path, monkeypatch):
    monkeypatch.setattr(batch.tasks, "model_name", lambda project: "nextbuy")
    monkeypatch.setattr(batch.tasks, "champion_version", lambda name, store: None)
    with pytest.raises(NoChampion, match="no released champion of 'nextbuy'"):
        batch.resolve(tmp_path, 20, 4)
    for k, n in ((0, 4), (20, 0), (True, 4)):
        with pytest.raises(BatchError):
            batch.resolve(tmp_path, k, n)


def test_the_model_name_is_deploy_model_name_of_the_project(tmp_path):
    from tests.conftest import ROOT

    assert batch.model_name(ROOT) == "nextbuy"


# --- a shard ------------------------------------------------------------------------------------------------


def fake_nextbuy(project: Path, body: str) -> None:
    """A `nextbuy` on the project's .venv/bin (first on the shard's PATH)."""
    script = project / ".venv" / "bin" / "nextbuy"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\nimport os, sys\nargs = sys.argv[1:]\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_a_shard_runs_batch_topk_in_the_project_and_logs_its_output(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(VENV_ENV, raising=False)
    c = champion(tmp_path)
    fake_nextbuy(
        tmp_path,
        "out = args[args.index('--out') + 1]; shard = int(args[args.index('--shard') + 1])\n"
        "d = os.path.join(out, f'shard={shard:03d}'); os.makedirs(d)\n"
        "open(os.path.join(d, 'part-00000.parquet'), 'w').close()\n"
        "print('cwd', os.getcwd()); print('args', ' '.join(args))\n"
        "sys.stderr.write('progress 50%\\rprogress 100%\\n')",
    )
    caplog.set_level("INFO", logger=batch.__name__)
    result = batch.run_shard(tmp_path, c, 1)
    assert result == {"shard": 1, "path": str(Path(c["out"]) / "shard=001"), "files": 1}
    logged = caplog.text
    assert f"cwd {tmp_path.resolve()}" in logged
    assert "args batch-topk --k 3 --model models:/nextbuy/7" in logged
    assert "--shard 1 --num-shards 3" in logged
    assert "progress 50%" in logged
    assert "progress 100%" in logged


@pytest.mark.parametrize("code", [1, 2, 137])
def test_a_failed_shard_raises_with_the_tail_of_its_output(tmp_path, monkeypatch, code):
    """Every failure is retried (exit 2 may be a download that failed for a moment)."""
    monkeypatch.delenv(VENV_ENV, raising=False)
    fake_nextbuy(tmp_path, f"print('batch-topk: bad model'); sys.exit({code})")
    with pytest.raises(RuntimeError, match=f"shard 0 exited {code}:\nbatch-topk: bad model") as info:
        batch.run_shard(tmp_path, champion(tmp_path), 0)
    assert not isinstance(info.value, BatchError)


# --- publish ------------------------------------------------------------------------------------------------


def test_publish_writes_the_manifest_then_points_latest_at_the_version(tmp_path):
    c = champion(tmp_path, n_products=10, k=3, num_shards=3)
    write_all(c)
    content = batch.publish(c, "scheduled__1", "nextbuy_batch", now=NOW)
    folder = Path(c["out"])
    assert content == json.loads((folder / BATCH_MANIFEST).read_text())
    assert content["model_version"] == 7
    assert content["k"] == 3
    assert content["num_shards"] == 3
    assert content["rows"] == 10 * 3
    assert content["n_products"] == 10
    assert content["created_at"] == "2026-11-20T02:00:00+00:00"
    assert content["run_id"] == "scheduled__1"
    assert [s["path"] for s in content["shards"]] == ["shard=000", "shard=001", "shard=002"]
    assert [s["sources"] for s in content["shards"]] == [4, 3, 3]
    latest = batch.read_latest(folder.parent)
    assert latest["path"] == "model_version=7"
    assert latest["manifest"] == f"model_version=7/{BATCH_MANIFEST}"
    assert {k: v for k, v in latest.items() if k not in ("path", "manifest")} == content
    # The underscore files do not get in a parquet reader's way: a version, or every version.
    frame = pd.read_parquet(folder)
    assert len(frame) == 30
    assert not frame.duplicated(["source_id", "rank"]).any()
    assert len(pd.read_parquet(folder.parent)) == 30


def test_a_later_version_moves_latest_and_keeps_the_older_one(tmp_path):
    old, new = champion(tmp_path, version=7), champion(tmp_path, version=8)
    for c in (old, new):
        write_all(c)
        batch.publish(c, f"run-{c['model_version']}", "nextbuy_batch", now=NOW)
    root = Path(new["out"]).parent
    assert batch.read_latest(root)["path"] == "model_version=8"
    assert (Path(old["out"]) / BATCH_MANIFEST).exists()
    assert (Path(old["out"]) / "shard=000").is_dir()
    assert sorted(p.name for p in root.iterdir()) == [LATEST_POINTER, "model_version=7", "model_version=8"]


def test_publishing_a_version_again_is_idempotent(tmp_path):
    c = champion(tmp_path)
    write_all(c)
    first = batch.publish(c, "run-1", "nextbuy_batch", now=NOW)
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    write_all(c)  # the re-run's shards: the same rows
    second = batch.publish(c, "run-2", "nextbuy_batch", now=NOW)
    assert {**second, "run_id": "run-1"} == first
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files
    assert batch.read_latest(Path(c["out"]).parent)["run_id"] == "run-2"


def test_publish_drops_shards_of_an_earlier_split_and_killed_attempts(tmp_path):
    c = champion(tmp_path, num_shards=4)
    write_all(c)
    batch.publish(c, "run-4", "nextbuy_batch", now=NOW)
    folder = Path(c["out"])
    (folder / ".shard=001.abc123").mkdir()  # a killed attempt's temporary folder
    (folder / ".shard=001.abc123" / "part-00000.parquet").write_bytes(b"half")
    fewer = {**c, "num_shards": 2, "shards": [0, 1]}
    write_all(fewer)
    content = batch.publish(fewer, "run-2", "nextbuy_batch", now=NOW)
    assert sorted(p.name for p in folder.iterdir()) == [BATCH_MANIFEST, "shard=000", "shard=001"]
    assert content["rows"] == 10 * 3
    assert len(pd.read_parquet(folder)) == 30


def _publish_fails(c: dict, match: str) -> None:
    root = Path(c["out"]).parent
    before = batch.read_latest(root)
    with pytest.raises(BatchError, match=match):
        batch.publish(c, "run-bad", "nextbuy_batch", now=NOW)
    assert batch.read_latest(root) == before  # the pointer never moves to a bad batch
    assert not (Path(c["out"]) / BATCH_MANIFEST).exists()


def test_publish_refuses_a_missing_shard(tmp_path):
    c = champion(tmp_path, num_shards=3)
    write_shard(Path(c["out"]), 0, 3, 10, 3)
    write_shard(Path(c["out"]), 2, 3, 10, 3)
    _publish_fails(c, r"incomplete batch, not published:\nshard=001: missing")


def test_publish_refuses_wrong_rows(tmp_path):
    c = champion(tmp_path, n_products=10, k=3, num_shards=2)
    write_shard(Path(c["out"]), 0, 2, 10, 3)
    write_shard(Path(c["out"]), 1, 2, 10, 2)  # k=2 where 3 were asked
    _publish_fails(c, r"shard=001: 10 rows, expected 15 \(5 sources x 3\)")


def test_publish_refuses_a_source_twice_or_in_the_wrong_shard(tmp_path):
    c = champion(tmp_path, n_products=10, k=3, num_shards=2)
    write_all(c)
    shard = Path(c["out"]) / "shard=001"
    frame = pd.read_parquet(shard)
    frame.loc[frame["source_id"] == 3, "source_id"] = 5  # 5 twice, 3 never
    for part in shard.iterdir():
        part.unlink()
    frame.to_parquet(shard / "part-00000.parquet", index=False)
    _publish_fails(c, r"shard=001: not one row per \(source, rank 1..3\) for the sources id % 2 == 1")


def test_publish_refuses_an_unreadable_shard_and_keeps_the_last_good_pointer(tmp_path):
    good = champion(tmp_path, version=7)
    write_all(good)
    batch.publish(good, "run-7", "nextbuy_batch", now=NOW)
    bad = champion(tmp_path, version=8)
    write_all(bad)
    (Path(bad["out"]) / "shard=002" / "part-00000.parquet").write_bytes(b"not parquet")
    _publish_fails(bad, r"shard=002: unreadable")
    assert batch.read_latest(Path(bad["out"]).parent)["model_version"] == 7


def test_an_empty_registry_has_no_champion(tmp_path):
    """A store where nothing is registered yet: None (the run is skipped), not an error."""
    assert batch.champion_version("nextbuy", f"sqlite:///{tmp_path / 'mlflow.db'}") is None


def test_an_unreachable_registry_is_an_error_not_a_missing_champion(monkeypatch):
    """Retried by Airflow; never mistaken for "nothing released yet" (a skipped run)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        batch.champion_version("nextbuy", "http://127.0.0.1:9")
