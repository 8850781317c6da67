#!/usr/bin/env bash
# Postgres init (docker-entrypoint-initdb.d): runs once, on the first start of an
# empty postgres-data volume. One login role and one database each for Airflow's
# metadata and MLflow's backend store. Passwords come from docker/.env through
# compose; changing them later means ALTER ROLE (or a fresh volume).
set -euo pipefail

for var in POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD; do
  value="${!var:-}"
  if [[ -z "$value" || "$value" == CHANGE_ME* ]]; then
    echo "postgres-init: $var is empty or still the docker/example.env placeholder; set it in docker/.env" >&2
    exit 1
  fi
done

# psql variables (:'name') quote the passwords; nothing is spliced into SQL text.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_password="$AIRFLOW_DB_PASSWORD" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
echo "postgres-init: databases airflow and mlflow created"
