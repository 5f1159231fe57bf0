#!/usr/bin/env bash
# `make run` and `make stop`: fleet's hello_world under a fleetlet agent running in the background.
#   run:  start an agent (state in .run/, its log in .run/agent.log) with configs/fleetlet.toml's metadata, start
#         configs/units/hello_world.service through the CLI, wait until it is active and running, show list-units
#         and its journal's Hello World lines. An agent this script started earlier is reused.
#   stop: destroy the unit, wait until its container is stopped, then stop the agent.
# Usage: scripts/demo.sh run|stop
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN="$ROOT/.run"
STATE="$RUN/state"
PID_FILE="$RUN/agent.pid"
LOG="$RUN/agent.log"
FLEETLET="$ROOT/.venv/bin/fleetlet"
UNIT="$ROOT/configs/units/hello_world.service"
NAME=hello_world.service
# Unix socket paths are limited to 108 bytes; a deep checkout keeps its state under /tmp instead.
if [ ${#STATE} -gt 90 ]; then STATE="/tmp/fleetlet-demo-$(echo "$ROOT" | sha1sum | cut -c1-8)"; fi
export FLEETLET_ENDPOINT="unix://$STATE/fleetlet.sock"
# The agent listens on a loopback port too; 49153 is the default, and a busy one is the likeliest clash.
LISTEN=${FLEETLET_DEMO_LISTEN:-127.0.0.1:49153}

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
die() { echo "make run: $*" >&2; exit 1; }

agent_running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

wait_for() {  # $1: seconds, $2...: a command that succeeds when the wait is over
  local bound=$1; shift
  local deadline=$((SECONDS + bound))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

hello_running() { "$FLEETLET" list-units --no-legend | grep -q "^$NAME.*active.*running"; }
hello_greets() { "$FLEETLET" journal --lines 50 "$NAME" | grep -q "Hello World"; }

run() {
  mkdir -p "$RUN" "$STATE"
  if agent_running; then
    say "An agent started by make run is already running (pid $(cat "$PID_FILE")); using it."
  else
    say "Starting fleetlet agent (state in $STATE, log in $LOG)"
    # setsid: the agent outlives this script and make, as a daemon would, until `make stop`.
    setsid "$FLEETLET" agent --config "$ROOT/configs/fleetlet.toml" --state-dir "$STATE" --listen "$LISTEN" \
      >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    wait_for 30 "$FLEETLET" list-machines || { tail -n 20 "$LOG" >&2; die "the agent did not answer within 30 s"; }
  fi
  "$FLEETLET" list-machines

  say "fleetlet start $(realpath --relative-to="$ROOT" "$UNIT")"
  "$FLEETLET" start "$UNIT"
  wait_for 120 hello_running || { tail -n 20 "$LOG" >&2; die "$NAME is not running after 120 s"; }

  say "fleetlet list-units"
  "$FLEETLET" list-units
  wait_for 30 hello_greets || die "no Hello World in the journal of $NAME after 30 s"
  say "fleetlet journal $NAME"
  "$FLEETLET" journal --lines 5 "$NAME"

  say "It keeps running in the background. Try:"
  cat <<EOT
  export FLEETLET_ENDPOINT=$FLEETLET_ENDPOINT
  .venv/bin/fleetlet status $NAME
  .venv/bin/fleetlet journal -f $NAME
  .venv/bin/fleetlet list-unit-files
Stop it all with: make stop
EOT
}

stop() {
  if ! agent_running; then
    echo "make stop: no agent started by make run is running"
    return 0
  fi
  "$FLEETLET" destroy "$NAME" 2>/dev/null || true
  # Gone from list-units: its actor has stopped the container, so the agent can go without leaving it behind.
  wait_for 60 sh -c "! '$FLEETLET' list-units --no-legend | grep -q '^$NAME'" || echo "make stop: $NAME still listed" >&2
  local pid
  pid=$(cat "$PID_FILE")
  kill -TERM "$pid"
  wait_for 60 sh -c "! kill -0 $pid" || die "the agent (pid $pid) did not stop within 60 s"
  rm -f "$PID_FILE"
  echo "make stop: agent stopped"
}

case "${1:-}" in
  run) run ;;
  stop) stop ;;
  *) echo "usage: $0 run|stop" >&2; exit 2 ;;
esac
