#!/usr/bin/env bash
# Air-gapped base images: builds the images docker/compose.yaml and docker/Dockerfile start
# from out of Debian packages, for a site where no image registry is reachable (only a
# Debian apt mirror, and PyPI or a mirror of it for the project image).
#
#   bash docker/base-images/build.sh            # minutes: debootstrap, then apt installs
#   # then use them: it writes docker/base-images/images.env, which
#   # make stack-check (docker/stack_check.py) and `docker compose --env-file` read:
#   #   NEXTBUY_BASE_IMAGE=nextbuy-base/python:3.11  POSTGRES_IMAGE=nextbuy-base/postgres:15
#   #   REDIS_IMAGE=nextbuy-base/redis:7
#
# What it does:
#   1. `debootstrap --variant=minbase` of Debian bookworm from the apt mirror this machine
#      already uses (DEBIAN_MIRROR overrides), the host's extra CA certificates added (a
#      TLS-intercepting egress proxy must be trusted inside builds too), then
#      `tar | docker import` -> nextbuy-base/debian:bookworm;
#   2. on top of it, from Debian packages: python 3.11 (-> nextbuy-base/python:3.11, the
#      project image's base), PostgreSQL 15 with an entrypoint that honours the official
#      image's POSTGRES_* variables and /docker-entrypoint-initdb.d (-> nextbuy-base/postgres:15),
#      redis-server 7 (-> nextbuy-base/redis:7).
# Needs root (debootstrap), a running dockerd, debootstrap. Builds use the host network
# (the apt mirror and the proxy are the host's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${DEBIAN_SUITE:-bookworm}"
prefix="${BASE_IMAGE_PREFIX:-nextbuy-base}"
out_env="${BASE_IMAGES_ENV:-$here/images.env}"

mirror_of_host() {
  # The first deb.debian.org-style URI of the host's apt sources (deb822 or one-line format).
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '$1 == "URIs:" {print $2} $1 == "deb" {print $2}' | { grep -v security || true; } | head -n 1
}
mirror="${DEBIAN_MIRROR:-$(mirror_of_host)}"
[[ -n "$mirror" ]] || { echo "build.sh: no apt mirror found; set DEBIAN_MIRROR" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed (sudo bash docker/prepare-host.sh installs it)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build.sh: no Docker engine answers (sudo bash docker/prepare-host.sh starts one)" >&2; exit 1; }

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
started=$SECONDS

if docker image inspect "$prefix/debian:$suite" >/dev/null 2>&1 && [[ -z "${REBUILD:-}" ]]; then
  step "$prefix/debian:$suite exists (REBUILD=1 to redo it)"
else
  step "debootstrap $suite from $mirror"
  rootfs="$(mktemp -d /var/tmp/nextbuy-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror"
  # The host's own CA additions (e.g. an egress proxy's): trusted by the images' TLS once
  # ca-certificates is installed (update-ca-certificates reads this directory).
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" > "$rootfs/etc/apt/sources.list"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$rootfs/etc/apt/apt.conf.d/90nextbuy"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  step "import $prefix/debian:$suite"
  tar -C "$rootfs" -c . | docker import - "$prefix/debian:$suite"
  rm -rf "$rootfs"; trap - EXIT
fi

for image in python:3.11 postgres:15 redis:7; do
  name="${image%%:*}"
  step "build $prefix/$image"
  docker build --network host --build-arg "DEBIAN_IMAGE=$prefix/debian:$suite" \
    -t "$prefix/$image" -f "$here/$name.Dockerfile" "$here"
done

cat > "$out_env" <<ENV
# Written by docker/base-images/build.sh: the compose stack on air-gapped base images.
NEXTBUY_BASE_IMAGE=$prefix/python:3.11
POSTGRES_IMAGE=$prefix/postgres:15
REDIS_IMAGE=$prefix/redis:7
ENV
step "done in $((SECONDS - started)) s; image names in $out_env"
docker image ls "$prefix/*"
