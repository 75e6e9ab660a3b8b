#!/usr/bin/env bash
# A Docker engine for the container tests (ctest -L docker), and the Debian
# base images they build on, made here because these machines pull nothing.
#   dockerd.sh start   use the engine at $DOCKER_HOST or /var/run/docker.sock;
#                      else start one (root; Debian's docker.io) with its own
#                      data, sockets and no default bridge: the tests use only
#                      networks they create. Then make debian:bookworm and
#                      debian:bookworm-slim with debootstrap if missing.
#   dockerd.sh stop    stop the engine if this script started it.
# Both write what the tests need to $AC_DOCKER_STATE/env (DOCKER_HOST).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
state=${AC_DOCKER_STATE:-$root/build-docker}
# The engine's sockets need a short path (108 bytes), apart from its data.
run=/tmp/agentcore-dockerd.$(id -u)
mkdir -p "$state"

log() { echo "dockerd.sh: $*" >&2; }

engine_ok() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
  if [ -n "${DOCKER_HOST:-}" ] && engine_ok; then
    echo "export DOCKER_HOST=$DOCKER_HOST" >"$state/env"; return 0
  fi
  export DOCKER_HOST=unix:///var/run/docker.sock
  if [ -S /var/run/docker.sock ] && engine_ok; then
    echo "export DOCKER_HOST=$DOCKER_HOST" >"$state/env"; return 0
  fi
  export DOCKER_HOST=unix://$run/docker.sock
  echo "export DOCKER_HOST=$DOCKER_HOST" >"$state/env"
  if [ -S "$run/docker.sock" ] && engine_ok; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    log "no Docker engine answers and starting one needs root"; exit 1
  fi
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  mkdir -p "$run" "$state/data"
  # vfs works on any filesystem (overlay on overlay does not); no iptables
  # rules and no docker0 bridge are touched on this machine.
  setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    --data-root "$state/data" --exec-root "$run/exec" --pidfile "$run/docker.pid" \
    -H "$DOCKER_HOST" >"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/started-by-tests"
  local i
  for i in $(seq 1 300); do # the engine says nothing when it is ready: ask, 30 s at most
    engine_ok && { log "started dockerd ($DOCKER_HOST)"; return 0; }
    kill -0 "$(cat "$state/started-by-tests")" 2>/dev/null || break
    sleep 0.1
  done
  log "dockerd did not start:"; tail -20 "$state/dockerd.log" >&2; exit 1
}

# debian:bookworm-slim as Docker's own is made: minbase, no documentation, no
# apt lists (the Dockerfile's apt-get update fetches them from the mirror).
base_images() {
  docker image inspect debian:bookworm debian:bookworm-slim >/dev/null 2>&1 && return 0
  local r=$state/rootfs
  rm -rf "$r"
  log "making debian:bookworm with debootstrap (minbase)"
  debootstrap --variant=minbase bookworm "$r" "$("$root/scripts/debian-mirror.sh")" \
    >"$state/debootstrap.log" 2>&1 || { tail -20 "$state/debootstrap.log" >&2; exit 1; }
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  printf 'APT::Install-Recommends "false";\n' >"$r/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
    "$r"/usr/share/man/* "$r"/usr/share/info/*
  find "$r/usr/share/doc" -type f ! -name copyright -delete
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar -C "$r" -c . | docker import - debian:bookworm >/dev/null
  docker tag debian:bookworm debian:bookworm-slim
  rm -rf "$r"
}

stop_engine() {
  local f=$state/started-by-tests pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  rm -f "$f"
  kill "$pid" 2>/dev/null || return 0
  # dockerd stops its containerd and containers, then exits: wait for it.
  timeout 30 tail --pid="$pid" -f /dev/null || kill -9 "$pid" 2>/dev/null || true
  log "stopped dockerd"
}

case "${1:-}" in
  start) start_engine; base_images ;;
  stop) stop_engine ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
