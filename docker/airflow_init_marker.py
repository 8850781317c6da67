"""Whether airflow-init has already set up this very stack (docker/airflow-init.sh).

    python airflow_init_marker.py check   # exit 0: done before, nothing to do; 1: run the init
    python airflow_init_marker.py write   # after a successful init

The marker (in the airflow-auth volume, beside the password file) holds a fingerprint of what
the init depends on: the Airflow version, the init scripts, the admin login, and the metadata
database's migration revision, read straight from Postgres (no Airflow import: seconds, not
the minute `airflow db check-migrations` takes on a loaded host). A new image, a changed
password or a fresh database (e.g. after `down -v`) changes it, and the init runs again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (HERE / "airflow-init.sh", Path(__file__).resolve())


def passwords_file() -> Path:
    return Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])


def database_revision() -> str | None:
    """The Alembic revision of Airflow's metadata database, None when there is none yet."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    login = {"host": url.host, "port": url.port or 5432, "user": url.username, "password": url.password}
    try:
        with psycopg2.connect(**login, dbname=url.database, connect_timeout=10) as db, db.cursor() as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            row = cursor.fetchone()
            return row[0] if row else None
    except psycopg2.Error:
        return None


def fingerprint() -> str:
    parts = [
        importlib.metadata.version("apache-airflow"),
        *(hashlib.sha256(path.read_bytes()).hexdigest() for path in SCRIPTS),
        os.environ["AIRFLOW_ADMIN_USER"],
        hashlib.sha256(os.environ["AIRFLOW_ADMIN_PASSWORD"].encode()).hexdigest(),
        str(database_revision()),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def main(argv: list[str]) -> int:
    path = passwords_file().with_name("nextbuy-init.json")
    if argv == ["check"]:
        if not passwords_file().exists():
            return 1  # the password file went missing: write it again
        try:
            recorded = json.loads(path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            return 1
        return 0 if recorded == fingerprint() else 1
    if argv == ["write"]:
        path.write_text(json.dumps({"fingerprint": fingerprint()}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
