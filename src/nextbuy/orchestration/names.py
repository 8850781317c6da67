"""Names the DAGs, the task bodies and the docker stack agree on, declared once."""

PROJECT_DIR_ENV = "NEXTBUY_PROJECT_DIR"  # where the DAGs find the project (docker: the shared mount)
VENV_ENV = "NEXTBUY_VENV"  # the environment stages run in (docker: /opt/venv), else <project>/.venv
PARAMS_FILE = "params.yaml"
BACKUP_FILE = ".airflow-params-backup.yaml"  # git-ignored; exists only while a run holds params.yaml
POOL = "nextbuy_dvc"  # one slot: DVC stage tasks of both DAGs never run side by side (docker/airflow-init.sh)

# dvc.yaml's meta.dag values, and the DAG that runs the stages marked with each.
TRAINING, MONITORING = "training", "monitoring"
TRAINING_DAG_ID = "nextbuy_training"
MONITORING_DAG_ID = "nextbuy_monitoring"
BATCH_DAG_ID = "nextbuy_batch"  # top-K for every product with the champion (batch)

CHAMPION_ASSET_NAME = "nextbuy_champion"
CHAMPION_ASSET_URI = "nextbuy://models/nextbuy/champion"
ALERTS_FILE = "monitoring/alerts.json"
DEPLOY_METRICS = "metrics/deploy.json"
RETRAIN_TASK, NO_RETRAIN_TASK = "retrain", "no_retrain"
# The batch DAG's outputs, under the project checkout (git-ignored): one folder per model version,
# its manifest inside, and the pointer to the last one published. The underscore: parquet
# readers skip those files, so a version folder (or the whole tree) still reads as a dataset.
RECOMMENDATIONS_DIR = "recommendations"
BATCH_MANIFEST = "_manifest.json"
LATEST_POINTER = "_latest.json"

TASK_RETRIES = 3  # every task of every DAG (airflow_tasks.default_args)
# Airflow settings of this project, for `make airflow` and the docker stack alike
# (environment variables; tests/test_docker.py checks compose sets the same).
# A task runner waits up to 60 s per call to the execution API and retries 10 times:
# a cold API server's first answer can take 40+ s on a small, loaded host.
AIRFLOW_SETTINGS = {
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
    "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": "30",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # A paused DAG stays off; unpausing starts no run for past days (see orchestration/plugin.py).
    "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
}
