#!/usr/bin/env bash
# Bring up, idempotently, the real services fleetlet's tests and demo need, and write their addresses to
# .services.env:
#   - a Docker engine: the one DOCKER_HOST (or /var/run/docker.sock) points at if it answers, otherwise a private
#     dockerd from Debian's docker.io under .services/docker;
#   - a local registry mirror (Debian's docker-registry) holding busybox, so `docker pull busybox` works offline;
#   - busybox:latest, built from Debian's busybox-static (there is no Docker Hub here);
#   - etcd from Debian's etcd-server: a single member on 127.0.0.1:2379 (FLEETLET_ETCD_URL), for trying
#     `fleetlet agent --registry etcd://127.0.0.1:2379`; `etcd-cluster` also starts a 3-member cluster on loopback
#     (FLEETLET_ETCD_CLUSTER_URL), for trying failover by hand. The binary is FLEETLET_ETCD_BIN: the etcd tests start
#     members of their own (fresh data, free ports) and kill them, and use neither of these.
# Usage: scripts/services.sh [up|etcd-cluster|down|env]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.services"
ENV_FILE="$ROOT/.services.env"
REGISTRY_ADDR=${FLEETLET_REGISTRY_ADDR:-127.0.0.1:5000}
DOCKER_DIR="$STATE/docker"
# Unix socket paths are limited to 108 bytes; a deep checkout falls back to a short path.
SOCK="$DOCKER_DIR/docker.sock"
if [ ${#SOCK} -gt 100 ]; then SOCK="/run/fleetlet-$(echo "$ROOT" | sha1sum | cut -c1-8)/docker.sock"; fi

ETCD_DIR="$STATE/etcd"
ETCD_HOST=127.0.0.1
ETCD_PORT=${FLEETLET_ETCD_PORT:-2379}
# The 3-member cluster: client ports; each member's peer port is its client port + 1.
ETCD_CLUSTER_PORTS=(22379 22479 22579)

log() { echo "services: $*" >&2; }

need_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || missing+=(busybox-static)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v curl >/dev/null || missing+=(curl)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v openssl >/dev/null || missing+=(openssl)  # the etcd TLS tests make their certificates with it
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

docker_answers() {  # $1: DOCKER_HOST
  DOCKER_HOST="$1" timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start_registry() {
  if curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; then return; fi
  mkdir -p "$STATE/registry"
  cat > "$STATE/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
http:
  addr: $REGISTRY_ADDR
YAML
  log "starting registry mirror on $REGISTRY_ADDR"
  nohup docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry/log" 2>&1 &
  echo $! > "$STATE/registry/pid"
  for _ in $(seq 100); do
    curl -fsS "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1 && return
    sleep 0.1
  done
  log "registry did not come up; see $STATE/registry/log"; exit 1
}

start_dockerd() {
  local host="unix://$SOCK"
  if docker_answers "$host"; then echo "$host"; return; fi
  mkdir -p "$DOCKER_DIR" "$(dirname "$SOCK")"
  log "starting a private dockerd at $host"
  nohup dockerd \
    --data-root "$DOCKER_DIR/data" --exec-root "$DOCKER_DIR/exec" \
    --host "$host" --pidfile "$DOCKER_DIR/dockerd.pid" \
    --storage-driver vfs --registry-mirror "http://$REGISTRY_ADDR" \
    >"$DOCKER_DIR/log" 2>&1 &
  for _ in $(seq 300); do
    docker_answers "$host" && { echo "$host"; return; }
    sleep 0.1
  done
  log "dockerd did not come up; see $DOCKER_DIR/log"; tail -20 "$DOCKER_DIR/log" >&2; exit 1
}

ensure_busybox() {  # $1: DOCKER_HOST
  export DOCKER_HOST="$1"
  if ! docker image inspect busybox:latest >/dev/null 2>&1; then
    if ! docker pull -q busybox:latest >/dev/null 2>&1; then
      log "building busybox:latest from Debian's busybox-static"
      local rootfs="$STATE/busybox-rootfs" bin
      bin=$(command -v busybox)
      rm -rf "$rootfs"; mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
      cp "$bin" "$rootfs/bin/busybox"
      for applet in $("$rootfs/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
      done
      echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
      echo "root:x:0:" > "$rootfs/etc/group"
      tar -C "$rootfs" -cf "$STATE/busybox.tar" .
      docker import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' "$STATE/busybox.tar" busybox:latest >/dev/null
    fi
  fi
  # The mirror serves docker.io/library/busybox, so `docker pull busybox` works with no internet.
  if ! curl -fsS "http://$REGISTRY_ADDR/v2/library/busybox/tags/list" 2>/dev/null | grep -q latest; then
    docker tag busybox:latest "$REGISTRY_ADDR/library/busybox:latest"
    docker push -q "$REGISTRY_ADDR/library/busybox:latest" >/dev/null
    docker rmi -f "$REGISTRY_ADDR/library/busybox:latest" >/dev/null
  fi
}

etcd_answers() {  # $1: client port
  curl -fsS -X POST -d '{"key":"AA=="}' "http://$ETCD_HOST:$1/v3/kv/range" >/dev/null 2>&1
}

spawn_etcd() {  # $1: name, $2: client port, $3: the initial cluster (name=peer URL,...)
  local dir="$ETCD_DIR/$1"
  mkdir -p "$dir"
  nohup etcd --name "$1" --data-dir "$dir/data" \
    --listen-client-urls "http://$ETCD_HOST:$2" --advertise-client-urls "http://$ETCD_HOST:$2" \
    --listen-peer-urls "http://$ETCD_HOST:$(($2 + 1))" --initial-advertise-peer-urls "http://$ETCD_HOST:$(($2 + 1))" \
    --initial-cluster "$3" --logger zap --log-level warn >"$dir/log" 2>&1 &
  echo $! > "$dir/pid"
}

wait_etcd() {  # $1: client port, $2: name (for the log's path)
  for _ in $(seq 200); do
    etcd_answers "$1" && return
    sleep 0.1
  done
  log "etcd $2 did not come up; see $ETCD_DIR/$2/log"; tail -20 "$ETCD_DIR/$2/log" >&2; exit 1
}

start_etcd() {
  if etcd_answers "$ETCD_PORT"; then return; fi
  log "starting etcd on $ETCD_HOST:$ETCD_PORT"
  spawn_etcd single "$ETCD_PORT" "single=http://$ETCD_HOST:$((ETCD_PORT + 1))"
  wait_etcd "$ETCD_PORT" single
}

start_etcd_cluster() {
  if etcd_answers "${ETCD_CLUSTER_PORTS[0]}"; then return; fi
  local initial="" i
  for i in 0 1 2; do initial+="${initial:+,}m$i=http://$ETCD_HOST:$((ETCD_CLUSTER_PORTS[i] + 1))"; done
  log "starting a 3-member etcd cluster on $ETCD_HOST:${ETCD_CLUSTER_PORTS[*]}"
  for i in 0 1 2; do spawn_etcd "m$i" "${ETCD_CLUSTER_PORTS[i]}" "$initial"; done  # all at once: a quorum
  for i in 0 1 2; do wait_etcd "${ETCD_CLUSTER_PORTS[i]}" "m$i"; done
}

etcd_cluster_url() {
  local hosts="" port
  for port in "${ETCD_CLUSTER_PORTS[@]}"; do hosts+="${hosts:+,}$ETCD_HOST:$port"; done
  echo "etcd://$hosts"
}

write_env() {
  printf 'DOCKER_HOST=%s\nFLEETLET_REGISTRY_MIRROR=http://%s\nFLEETLET_ETCD_BIN=%s\nFLEETLET_ETCD_URL=%s\n' \
    "$1" "$REGISTRY_ADDR" "$(command -v etcd)" "etcd://$ETCD_HOST:$ETCD_PORT" > "$ENV_FILE"
  if etcd_answers "${ETCD_CLUSTER_PORTS[0]}"; then
    printf 'FLEETLET_ETCD_CLUSTER_URL=%s\n' "$(etcd_cluster_url)" >> "$ENV_FILE"
  fi
}

up() {
  mkdir -p "$STATE"
  # Packages first: installing docker.io may start the system's engine, which is then used rather than a second one.
  need_packages
  local host=""
  for candidate in "${DOCKER_HOST:-}" unix:///var/run/docker.sock; do
    [ -n "$candidate" ] && docker_answers "$candidate" && { host=$candidate; break; }
  done
  start_registry
  if [ -z "$host" ]; then host=$(start_dockerd); fi
  ensure_busybox "$host"
  start_etcd
  write_env "$host"
  log "ready: $(tr '\n' ' ' < "$ENV_FILE")"
}

etcd_cluster() {
  up
  start_etcd_cluster
  write_env "$(sed -n 's/^DOCKER_HOST=//p' "$ENV_FILE")"
  log "ready: $(tr '\n' ' ' < "$ENV_FILE")"
}

down() {
  for pidfile in "$DOCKER_DIR/dockerd.pid" "$STATE/registry/pid" "$ETCD_DIR"/*/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
  done
  rm -f "$ENV_FILE"
}

case "${1:-up}" in
  up) up ;;
  etcd-cluster) etcd_cluster ;;
  down) down ;;
  env) cat "$ENV_FILE" ;;
  *) echo "usage: $0 [up|etcd-cluster|down|env]" >&2; exit 2 ;;
esac
