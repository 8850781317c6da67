#!/usr/bin/env bash
# compose service airflow-init: one-shot, on every `docker compose up`, before any
# other Airflow component starts.
#   1. refuses to go on while a secret is empty or still the example placeholder;
#   2. stops there when airflow_init_marker.py says this very setup is done already
#      (same Airflow, scripts, admin login and database revision): a later `up` costs seconds;
#   3. migrates the Airflow metadata database (`airflow db migrate`);
#   4. creates/updates the nextbuy_dvc pool: ONE slot, so DVC runs in the shared
#      project directory never overlap, whichever worker takes them;
#   5. writes the simple auth manager's password file for the admin user, and the marker.
set -euo pipefail

fail=0
for var in POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD REDIS_PASSWORD \
           AIRFLOW_FERNET_KEY AIRFLOW_SECRET_KEY AIRFLOW_JWT_SECRET AIRFLOW_ADMIN_PASSWORD; do
  value="${!var:-}"
  if [[ -z "$value" || "$value" == CHANGE_ME* ]]; then
    echo "airflow-init: $var is empty or still the docker/example.env placeholder; set it in docker/.env" >&2
    fail=1
  fi
done
[[ $fail == 0 ]] || exit 1

python - <<'PY'
import os, sys
from cryptography.fernet import Fernet
try:
    Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"])
except Exception as exc:  # a wrong key would only surface when a connection is saved
    sys.exit(f"airflow-init: AIRFLOW_FERNET_KEY is not a Fernet key ({exc}); see docker/example.env")
PY

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if python "$here/airflow_init_marker.py" check; then
  echo "airflow-init: already done for this Airflow, admin and database; nothing to do"
  exit 0
fi

# The stage tasks run in $NEXTBUY_VENV (the image's /opt/venv, set in compose.yaml),
# so a host .venv/ in the mounted checkout is never used.

airflow db migrate
airflow pools set nextbuy_dvc 1 "One slot: serialises DVC runs in the shared project directory"

python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
user = os.environ["AIRFLOW_ADMIN_USER"]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
print(f"airflow-init: admin user {user!r} set in {path}")
PY
python "$here/airflow_init_marker.py" write
echo "airflow-init: done"
