"""`nextbuy bench preset`: the whole pipeline on a preset's store, as `make run-preset` runs it
(a DVC experiment of `presets/<name>.yaml` over params.yaml), and what it released.

Meant to be recorded (`nextbuy bench record NAME -- nextbuy bench preset --preset ... --out
F.json`): the record's wall time and peak memory are then the whole run's, the peak being the
largest single process (every stage is one). The JSON holds the store's figures the stages
wrote: what ingest read and cleaned, the exposures, training time and memory, the gate's
verdict and test figures (one training seed: a pipeline run), and the monitor's alerts.
params.yaml is put back as it was (the experiment itself stays in DVC's list).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from nextbuy import paths
from nextbuy.mlops import io
from nextbuy.presets import set_param_flags
from nextbuy.procs import venv_env


def run(out: Path, preset: Path, params_file: str = "params.yaml") -> dict:
    params = Path(params_file)
    before = params.read_text()
    flags = set_param_flags(preset, params)
    started = time.perf_counter()
    try:
        env = venv_env()  # the stages' `nextbuy <stage>` are this venv's
        subprocess.run(["nextbuy", "check-dvc-lock"], check=True, env=env)
        subprocess.run(["dvc", "exp", "run", *flags], check=True, env=env)
    finally:
        params.write_text(before)
    seconds = time.perf_counter() - started
    ingest, train, deploy, monitor = (
        io.read_json(paths.metrics_file(name)) for name in ("ingest", "train", "deploy", "monitor")
    )
    figures = {
        "preset": str(preset),
        "pipeline_seconds": round(seconds, 1),
        "data": {
            "snapshot": ingest["snapshot"],
            "exposures": ingest.get("exposures"),
            "products": ingest["products"],
            "edges": ingest["edges"],
            "impressions": ingest["impressions"],
            "cleaning": ingest["cleaning"],
        },
        "train": {k: train[k] for k in ("train_seconds", "peak_memory_mb", "epochs_run", "train_examples")},
        "deploy": {
            "model_name": deploy["model_name"],
            "version": deploy["version"],
            "passed": deploy["passed"],
            "action": deploy["action"],
            "reasons": deploy.get("reasons", []),
            "test": deploy.get("candidate"),
        },
        "monitor": {k: monitor.get(k) for k in ("windows", "alerts", "naive_alerts", "first_alert")},
    }
    io.write_json(figures, out)
    return figures
