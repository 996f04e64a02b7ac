#!/usr/bin/env bash
# Shared by every platform script: where things live, how we log, start and stop daemons.
# Sourced, never run. Scripts using it must `set -euo pipefail` themselves.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="${MILLRACE_LOCAL:-$ROOT/.local}"
CACHE="${MILLRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/millrace}"
BIN="$CACHE/bin"
RUN="$LOCAL/run"
LOGS="$LOCAL/logs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export GOPATH="${GOPATH_MILLRACE:-$CACHE/go}"
export GOCACHE="$CACHE/go-build"
export GOMODCACHE="$CACHE/go/pkg/mod"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export PATH="$BIN:$PATH"

# Versions of every platform part, in one place.
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
HELM_UNITTEST_VERSION="${HELM_UNITTEST_VERSION:-v1.1.2}"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"

# Ports (loopback only).
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${PG_PORT:-15432}"

mkdir -p "$LOCAL" "$CACHE" "$BIN" "$RUN" "$LOGS"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND... : polls COMMAND until it succeeds.
wait_for() {
  local desc="$1" timeout="$2"; shift 2
  local start=$SECONDS next_note=$((SECONDS + 10))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= timeout )); then
      printf 'error: timed out after %ss waiting for %s\n' "$timeout" "$desc" >&2
      return 1
    fi
    if (( SECONDS >= next_note )); then info "still waiting for $desc ($((SECONDS - start))s)"; next_note=$((SECONDS + 10)); fi
    sleep 0.5
  done
}

# is_running NAME : the daemon NAME started by start_daemon is alive.
is_running() {
  local pidfile="$RUN/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start_daemon NAME COMMAND... : starts COMMAND detached, logs to $LOGS/NAME.log, pid in $RUN/NAME.pid.
start_daemon() {
  local name="$1"; shift
  if is_running "$name"; then info "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  (
    # Close every inherited descriptor above stderr (locks, the caller's pipes) so the daemon
    # never holds them: `out=$(make up 2>&1)` or a piped CI log would otherwise never end.
    for fd in $(ls "/proc/$BASHPID/fd"); do
      if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$RUN/$name.pid"
  info "$name started (pid $!, log ${LOGS#$ROOT/}/$name.log)"
}

# stop_daemon NAME [GRACE_SECONDS] : SIGTERM the daemon's process group, SIGKILL after the grace period.
stop_daemon() {
  local name="$1" grace="${2:-15}" pidfile="$RUN/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    info "$name stopped"
  fi
  rm -f "$pidfile"
}
