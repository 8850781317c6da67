#!/usr/bin/env bash
# Entrypoint of nextbuy-base/postgres: on an empty $PGDATA, initdb with the superuser
# $POSTGRES_USER / $POSTGRES_PASSWORD, run /docker-entrypoint-initdb.d/*.sh and *.sql against
# a server on the Unix socket only (so a health check over TCP stays red meanwhile), stop it;
# then run the server on every address with password authentication.
set -euo pipefail
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  pwfile="$(mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
         --encoding=UTF8 -D "$PGDATA"
  rm -f "$pwfile"
  printf "host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "postgres-entrypoint: running $f"; POSTGRES_USER="$POSTGRES_USER" bash "$f" ;;
      *.sql) echo "postgres-entrypoint: running $f"; psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
