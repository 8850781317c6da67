"""nextbuy."""

import os as _os

# Usage telemetry off in every entry point (the CLI, the stage commands dvc runs, Airflow
# tasks, notebooks importing the package), not only inside make targets: MLflow, DVC and
# Evidently would otherwise phone home and write state under ~/.config. setdefault: a user
# who explicitly opts in keeps their choice. Subprocesses (dvc, mlflow) inherit them.
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}
for _name, _value in TELEMETRY_OFF.items():
    _os.environ.setdefault(_name, _value)
