"""End to end: the DVC stages on a tiny simulated store in a temporary copy of the
project (a copy of the session's finished tiny project), then the registered champion
scores pairs; a failed stage, the gate and rollback, batch top-K, in that copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nextbuy.stage_list import dag_stages
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import copy_finished_project, project_env

pytestmark = pytest.mark.slow
MODEL = TINY_PARAMS["deploy"]["model_name"]  # the tiny store's own registry line


def run(cmd: list[str], dest: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=600)


def release_command(args: list[str], dest: Path, env: dict[str, str], monkeypatch):
    """``nextbuy ARGS`` in this process (the CLI's own entry, through typer's runner), in ``dest``
    with its MLflow store: the release commands only talk to the registry, and a subprocess of
    each would spend most of its two seconds importing MLflow again. Its exit code, stdout and
    stderr as a subprocess gives them."""
    from typer.testing import CliRunner

    from nextbuy.bench.serving_fixtures import mlflow_store
    from nextbuy.cli import app

    environ = dict(os.environ)  # what the command sets for its runs stays with it
    try:
        with monkeypatch.context() as mp, mlflow_store(env["MLFLOW_TRACKING_URI"]):
            mp.chdir(dest)
            result = CliRunner().invoke(app, args)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["nextbuy", *args], result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, finished_tiny_project):
    """A copy of the tiny project after one full `dvc repro` (shared by the tests below, in order)."""
    dest = copy_finished_project(finished_tiny_project, tmp_path_factory.mktemp("e2e"))
    return dest, project_env(dest)


def test_dvc_repro_runs_all_stages_and_registers_champion(pipeline, tiny_params):
    dest, env = pipeline

    for stage in dag_stages(ROOT, "training"):
        assert json.loads((dest / "metrics" / f"{stage}.json").read_text()), stage
    deploy = json.loads((dest / "metrics" / "deploy.json").read_text())
    assert deploy["passed"]
    assert deploy["champion_version"] == deploy["version"] == 1
    # One test AUC: calibrate's and the gate's are one definition on the same rows.
    calibrate = json.loads((dest / "metrics" / "calibrate.json").read_text())
    assert deploy["candidate"]["auc"] == pytest.approx(calibrate["test_delay_corrected"]["auc"], abs=1e-6)

    # Nothing changed, so nothing runs again.
    again = run(["dvc", "repro"], dest, env)
    assert again.returncode == 0, again.stdout
    assert "Running stage" not in again.stdout, again.stdout

    summary = run(["nextbuy", "summary"], dest, env)
    assert summary.returncode == 0
    assert "champion = v1" in summary.stdout

    score = run(
        [
            sys.executable,
            "-c",
            (
                "import mlflow, pandas as pd, sys\n"
                f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
                "pairs = pd.DataFrame({'source_id': [0, 1, 5, 10**9], 'candidate_id': [3, 4, 6, 2]})\n"
                "out = m.predict(pairs)\n"
                "out.to_json(sys.stdout, orient='records')\n"
            ),
        ],
        dest,
        env,
    )
    assert score.returncode == 0, score.stderr[-3000:]
    out = pd.DataFrame(json.loads(score.stdout))
    assert list(out.columns[:5]) == ["score", "uncertainty", "bucket", "prob_calibrated", "decision"]
    assert out["score"].between(0, 1).all()
    assert (out["uncertainty"] >= 0).all()
    assert out["cold_start"].tolist() == [False, False, False, True]

    # A blessing with lineage was written and set on the model version.
    blessing = json.loads((dest / "models" / "deploy" / "blessing.json").read_text())
    assert blessing["passed"]
    assert blessing["champion"] is None
    assert blessing["lineage"]["git_commit"] != "unknown"
    assert blessing["lineage"]["data_sha256"]
    assert blessing["lineage"]["params"]["train"] == tiny_params["train"]


def _outputs(dest: Path, stage: str) -> dict[str, bytes]:
    lock = yaml.safe_load((dest / "dvc.lock").read_text())["stages"][stage]
    files = {}
    for out in lock["outs"]:
        path = dest / out["path"]
        for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            files[str(f.relative_to(dest))] = f.read_bytes()
    return files


def test_a_failed_stage_leaves_its_last_good_outputs(pipeline, tiny_params):
    """dvc repro deletes a stage's outputs before running it: when the stage fails, its
    outputs, metrics and plots included, are back as they were (make run and the Airflow
    tasks run the same stage command through dvc repro)."""
    dest, env = pipeline
    before = _outputs(dest, "train")
    assert "metrics/train.json" in before
    assert "plots/train/loss.csv" in before
    typo = {**tiny_params, "train": {**tiny_params["train"], "epochz": 3}}
    (dest / "params.yaml").write_text(yaml.safe_dump(typo))
    failed = run(["dvc", "repro", "train"], dest, env)
    assert failed.returncode != 0
    assert "epochz" in failed.stdout + failed.stderr
    assert "back in place" in failed.stdout + failed.stderr
    assert _outputs(dest, "train") == before
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    status = run(["dvc", "status", "train"], dest, env)
    assert status.returncode == 0, status.stdout
    assert "changed outs" not in status.stdout, status.stdout


def test_make_run_puts_back_what_dvc_deleted_before_it_checked_params(pipeline, tiny_params):
    """DVC deletes a stage's outputs and only then finds its params section missing, so the
    stage command never runs to restore them: ``make run`` restores them on its way out."""
    dest, env = pipeline
    before = _outputs(dest, "train")
    (dest / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in tiny_params.items() if k != "train"}))
    failed = run(["make", "-o", ".venv/.installed", "run"], dest, env)  # the env is this one
    assert failed.returncode != 0
    assert "Parameters 'train' are missing" in failed.stdout + failed.stderr
    assert _outputs(dest, "train") == before
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    status = run(["dvc", "status", "train"], dest, env)
    assert status.returncode == 0, status.stdout
    assert "changed outs" not in status.stdout, status.stdout


def test_gate_refuses_a_worse_model_and_rollback_undoes_a_release(pipeline, tiny_params, monkeypatch):
    dest, env = pipeline
    # Gate drill: a model trained on shuffled labels is refused; the champion stays. (dvc repro
    # up to deploy: the stages after it do not judge the candidate.)
    drill = {**tiny_params, "train": {**tiny_params["train"], "shuffle_labels": True}}
    (dest / "params.yaml").write_text(yaml.safe_dump(drill))
    refused = run(["dvc", "repro", "deploy"], dest, env)
    assert refused.returncode == 0, refused.stdout[-3000:] + refused.stderr[-3000:]
    deploy = json.loads((dest / "metrics" / "deploy.json").read_text())
    assert not deploy["passed"]
    assert deploy["version"] == 2
    assert deploy["champion_version"] == 1
    assert any("champion" in r for r in deploy["reasons"]), deploy["reasons"]
    assert "REFUSED" in release_command(["summary"], dest, env, monkeypatch).stdout

    # A deliberate release, then one-command rollback.
    unforced = release_command(["promote", "2"], dest, env, monkeypatch)
    assert unforced.returncode != 0
    assert "--force" in unforced.stdout + unforced.stderr
    promoted = release_command(["promote", "2", "--force", "--reason", "gate drill"], dest, env, monkeypatch)
    assert promoted.returncode == 0, promoted.stderr
    assert "v1 → v2" in promoted.stderr, promoted.stderr
    rolled = release_command(["rollback"], dest, env, monkeypatch)
    assert rolled.returncode == 0, rolled.stderr
    assert "v2 → v1" in rolled.stderr, rolled.stderr
    from mlflow.tracking import MlflowClient

    aliases = {
        k: str(v)
        for k, v in MlflowClient(env["MLFLOW_TRACKING_URI"]).get_registered_model(MODEL).aliases.items()
    }
    assert aliases["champion"] == "1", aliases
    assert "challenger" not in aliases, aliases
    # nothing earlier to go back to
    assert release_command(["rollback"], dest, env, monkeypatch).returncode == 1


def test_batch_top_k_for_every_product_sharded(pipeline):
    dest, env = pipeline
    for shard in (0, 1):
        batch = run(
            [
                "nextbuy",
                "batch-topk",
                "--k",
                "5",
                "--out",
                "recs",
                "--shard",
                str(shard),
                "--num-shards",
                "2",
            ],
            dest,
            env,
        )
        assert batch.returncode == 0, batch.stderr[-2000:]
    recs = pd.read_parquet(dest / "recs")
    assert len(recs) == 300 * 5
    assert recs["source_id"].nunique() == 300
    assert (recs["source_id"] != recs["candidate_id"]).all()
