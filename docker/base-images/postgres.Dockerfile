# PostgreSQL 15 from Debian packages, in place of postgres:17-bookworm
# (docker/base-images/build.sh). postgres-entrypoint.sh honours what compose.yaml uses of the
# official image: POSTGRES_USER / POSTGRES_PASSWORD, PGDATA, /docker-entrypoint-initdb.d.
ARG DEBIAN_IMAGE=nextbuy-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
RUN apt-get update \
 && apt-get install -y postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p "$PGDATA" /docker-entrypoint-initdb.d /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["bash", "/usr/local/bin/postgres-entrypoint.sh"]
