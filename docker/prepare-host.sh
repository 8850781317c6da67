#!/usr/bin/env bash
# Prepare a Debian bookworm host for the team stack: everything docker/base-images/build.sh,
# `docker compose` and `make stack-check` need, installed and running.
#
#   sudo bash docker/prepare-host.sh           # install what is missing, start dockerd
#   bash docker/prepare-host.sh --check        # change nothing: say what is missing (exit 1 if any)
#
# What it does, each step only when needed (a second run on a prepared host changes nothing
# and says so):
#   1. bookworm's packages `docker.io` (the engine and its CLI) and `debootstrap` (the
#      registry-free base images), with apt-get;
#   2. the compose v2 and buildx CLI plugins: bookworm has neither (its `docker-compose` is the
#      old Python v1), Debian trixie's `docker-compose` (v2) and `docker-buildx` packages run
#      on bookworm (they need only libc6 >= 2.34). They are fetched with apt from the trixie
#      suite of the host's mirror through a private apt configuration under $STATE_DIR (the
#      host's own sources and pins are not touched, so no other package ever comes from
#      trixie), apt checks their signatures and hashes, and `apt-get install ./*.deb` installs
#      them (dpkg then knows them: `apt-get remove docker-compose docker-buildx` undoes it);
#   3. /etc/docker/daemon.json, only where none exists and systemd is not running
#      (cgroupfs driver, overlay2);
#   4. a Docker engine that answers `docker info`: already running, or
#      `systemctl enable --now docker` under systemd, or else `dockerd` started by hand in the
#      background, logging to $DOCKERD_LOG, waited for until it answers (up to 120 s).
#      Without an init system nothing restarts dockerd after a reboot: run this script again.
#
# Settings (environment): DEBIAN_MIRROR (default: the first mirror in the host's apt sources),
# STATE_DIR (default /var/cache/nextbuy-prepare-host), DOCKERD_LOG (default /var/log/dockerd.log).
set -euo pipefail

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
  *) echo "prepare-host.sh: unknown argument $1 (use --check or nothing)" >&2; exit 2 ;;
esac

PLUGIN_SUITE=trixie
PLUGIN_PACKAGES=(docker-compose docker-buildx)
APT_PACKAGES=(docker.io debootstrap)
STATE_DIR="${STATE_DIR:-/var/cache/nextbuy-prepare-host}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

changed=()    # what this run did
missing=()    # what --check found missing
say() { printf 'prepare-host: %s\n' "$*"; }
die() { printf 'prepare-host: %s\n' "$*" >&2; exit 1; }

. /etc/os-release
[[ "${ID:-}" == debian && "${VERSION_CODENAME:-}" == bookworm ]] ||
  die "this script prepares Debian bookworm; this host is ${PRETTY_NAME:-unknown}. Elsewhere install Docker with the compose v2 and buildx plugins and debootstrap by the host's own means."
(( check_only || EUID == 0 )) || die "run it as root (sudo bash $0), or with --check to only look"

installed_version() {  # the installed version of a Debian package, empty when not installed
  { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } | awk '$3 == "installed" {print $4}'
}

mirror_of_host() {  # the first non-security URI of the host's apt sources (deb822 or one-line)
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '$1 == "URIs:" {print $2} $1 == "deb" {print $2}' | { grep -v security || true; } | head -n 1
}

systemd_running() { [[ -d /run/systemd/system ]]; }

# --- 1. bookworm packages -----------------------------------------------------------------------
need=()
for pkg in "${APT_PACKAGES[@]}"; do
  [[ -n "$(installed_version "$pkg")" ]] || need+=("$pkg")
done
if (( ${#need[@]} )); then
  if (( check_only )); then
    missing+=("${need[@]}")
  else
    say "installing ${need[*]} (bookworm)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
    for pkg in "${need[@]}"; do changed+=("$pkg $(installed_version "$pkg")"); done
  fi
fi

# --- 2. compose v2 and buildx plugins from trixie -----------------------------------------------
need=()
for pkg in "${PLUGIN_PACKAGES[@]}"; do
  version="$(installed_version "$pkg")"
  # bookworm's own docker-compose (1.x) is the Python v1 tool, not the `docker compose` plugin
  [[ -n "$version" && "$version" != 1.* ]] || need+=("$pkg")
done
if (( ${#need[@]} )); then
  if (( check_only )); then
    missing+=("${need[@]/%/ ($PLUGIN_SUITE)}")
  else
    mirror="${DEBIAN_MIRROR:-$(mirror_of_host)}"
    [[ -n "$mirror" ]] || die "no apt mirror found in the host's sources; set DEBIAN_MIRROR"
    apt_dir="$STATE_DIR/apt-$PLUGIN_SUITE"
    mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,etc/sources.list.d,etc/preferences.d,debs}
    : > "$apt_dir/etc/sources.list"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$PLUGIN_SUITE" > "$apt_dir/etc/sources.list.d/$PLUGIN_SUITE.sources"
    private=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
             -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
             -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
             -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
             -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
             -o "Dir::State::status=/dev/null")
    say "fetching ${need[*]} from $mirror $PLUGIN_SUITE (private apt configuration in $apt_dir)"
    apt-get "${private[@]}" update -q
    debs="$apt_dir/debs"
    rm -f "$debs"/*.deb
    # apt's download sandbox user must be able to write there
    if id _apt >/dev/null 2>&1; then chown _apt "$debs"; fi
    (cd "$debs" && apt-get "${private[@]}" download "${need[@]}")
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$debs"/*.deb
    for pkg in "${need[@]}"; do changed+=("$pkg $(installed_version "$pkg") ($PLUGIN_SUITE)"); done
  fi
fi

# --- 3. daemon.json where dockerd is started by hand --------------------------------------------
if ! systemd_running && [[ ! -e /etc/docker/daemon.json ]]; then
  if (( check_only )); then
    missing+=("/etc/docker/daemon.json")
  else
    mkdir -p /etc/docker
    printf '{"exec-opts": ["native.cgroupdriver=cgroupfs"], "storage-driver": "overlay2"}\n' \
      > /etc/docker/daemon.json
    changed+=("/etc/docker/daemon.json (cgroupfs, overlay2)")
  fi
fi

# --- 4. a running engine ------------------------------------------------------------------------
engine_answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
if ! engine_answers; then
  if (( check_only )); then
    missing+=("a running Docker engine (docker info does not answer)")
  elif systemd_running; then
    say "starting docker with systemctl"
    systemctl enable --now docker
    changed+=("docker service enabled and started (systemd)")
  else
    command -v dockerd >/dev/null || die "dockerd is not installed (docker.io should have brought it)"
    say "no systemd: starting dockerd by hand, log in $DOCKERD_LOG"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
    pid=$!
    for _ in $(seq 120); do
      engine_answers && break
      kill -0 "$pid" 2>/dev/null || die "dockerd exited; the end of $DOCKERD_LOG: $(tail -n 5 "$DOCKERD_LOG")"
      sleep 1
    done
    engine_answers || die "dockerd (pid $pid) does not answer docker info after 120 s; see $DOCKERD_LOG"
    changed+=("dockerd started by hand (pid $pid, log $DOCKERD_LOG)")
  fi
fi

# --- what the host has now ----------------------------------------------------------------------
if (( check_only )); then
  if (( ${#missing[@]} )); then
    say "missing:"; printf '  - %s\n' "${missing[@]}"
    say "run: sudo bash $0"
    exit 1
  fi
  say "host prepared: nothing missing"
else
  if (( ${#changed[@]} )); then
    say "this run changed:"; printf '  - %s\n' "${changed[@]}"
  else
    say "host already prepared: nothing changed"
  fi
fi
say "docker engine $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'), client $(docker version -f '{{.Client.Version}}' 2>/dev/null || echo '?') ($(command -v docker))"
say "$(docker compose version 2>/dev/null || echo 'docker compose: missing')"
say "$(docker buildx version 2>/dev/null || echo 'docker buildx: missing')"
say "debootstrap $(installed_version debootstrap || true)"
