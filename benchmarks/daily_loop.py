"""The daily loop on the default simulated store: release a champion at the store's origin
snapshot, then judge candidates trained on the snapshot one day later (as the daily training
DAG runs it) with the same config over several training seeds, and one trained on shuffled
labels. Each candidate is judged against the same champion (the registry is put back after
each). Writes a JSON result: per candidate, the gate's figures, its verdict and reasons, and
how many test rows the champion had learned from.

    .venv/bin/python benchmarks/daily_loop.py --out benchmarks/results/daily_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("ingest", "label-delay", "train", "calibrate", "thresholds", "deploy")


def stages(project: Path, names: tuple[str, ...], env: dict) -> None:
    for name in names:
        started = time.perf_counter()
        command = [str(Path(sys.executable).parent / "nextbuy"), name]
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"nextbuy {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        print(f"  {name}: {time.perf_counter() - started:.0f} s", flush=True)


def write_params(project: Path, base: dict, **dotted) -> None:
    params = json.loads(json.dumps(base))
    for key, value in dotted.items():
        node = params
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def gate_record(project: Path) -> dict:
    deploy = json.loads((project / "metrics" / "deploy.json").read_text())
    calibrate = json.loads((project / "metrics" / "calibrate.json").read_text())
    keys = ("version", "passed", "reasons", "notes", "champion_version", "champion_comparable",
            "not_comparable_reason", "champion_training_overlap", "candidate", "champion",
            "comparison")  # fmt: skip
    test_auc = calibrate["test_delay_corrected"]["auc"]
    return {**{k: deploy.get(k) for k in keys}, "test_auc_calibrate": test_auc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    work = Path(tempfile.mkdtemp(prefix="nextbuy-daily-"))
    sys.path.insert(0, str(ROOT / "src"))
    from nextbuy.bench.project_copy import copy_project

    project = copy_project(ROOT, work / "project", base)
    # The copy's own MLflow store (mlflow.db, mlartifacts/ in it), as make run uses.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    origin = pd.Timestamp(base["ingest"]["simulator"]["start_date"]) + pd.Timedelta(
        days=base["ingest"]["simulator"]["history_days"]
    )
    next_day = str(origin + pd.Timedelta(days=1))
    print(f"release at the origin snapshot {origin}", flush=True)
    stages(project, TRAINING, env)
    release = gate_record(project)
    saved = work / "registry"
    shutil.copytree(project / "mlartifacts", saved / "mlartifacts")
    shutil.copy(project / "mlflow.db", saved / "mlflow.db")

    def restore_registry() -> None:
        shutil.copy(saved / "mlflow.db", project / "mlflow.db")
        shutil.rmtree(project / "mlartifacts")
        shutil.copytree(saved / "mlartifacts", project / "mlartifacts")

    candidates = []
    for seed in range(args.seeds):
        print(f"candidate: snapshot {next_day}, train.seed {seed}", flush=True)
        write_params(project, base, **{"ingest.snapshot": next_day, "train.seed": seed})
        stages(project, TRAINING if seed == 0 else TRAINING[2:], env)
        candidates.append({"train_seed": seed, "shuffled_labels": False, **gate_record(project)})
        restore_registry()
    print(f"candidate: snapshot {next_day}, shuffled labels", flush=True)
    write_params(project, base, **{"ingest.snapshot": next_day, "train.shuffle_labels": True})
    stages(project, TRAINING[2:], env)
    candidates.append({"train_seed": base["train"]["seed"], "shuffled_labels": True, **gate_record(project)})
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    result = {
        "command": "python benchmarks/daily_loop.py " + " ".join(sys.argv[1:]),
        "commit": commit.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "origin_snapshot": str(origin),
        "next_snapshot": next_day,
        "tolerance": base["deploy"]["tolerance"],  # the gate's non-inferiority margin
        "confidence": base["deploy"]["confidence"],
        "release": release,
        "candidates": candidates,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'candidate':<24}{'passed':<8}{'cand auc':>10}{'champ auc':>11}{'overlap':>9}  reasons")
    print(f"{'release (origin)':<24}{release['passed']!s:<8}{release['candidate']['auc']:>10.4f}")
    for c in candidates:
        name = "shuffled labels" if c["shuffled_labels"] else f"seed {c['train_seed']}"
        champ = (c["champion"] or {}).get("auc")
        print(f"{name:<24}{c['passed']!s:<8}{c['candidate']['auc']:>10.4f}"
              f"{champ if champ is None else round(champ, 4)!s:>11}{c['champion_training_overlap']!s:>9}  "
              + "; ".join(c["reasons"]))  # fmt: skip


if __name__ == "__main__":
    main()
