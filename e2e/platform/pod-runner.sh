#!/usr/bin/env bash
# The pod runner (docs/pod-runner.md): Millrace's kubelet + kube-scheduler + kube-proxy
# stand-in, which registers Node `local` and runs Pods as local processes.
#   up      builds the workspace binaries, starts millrace-pod-runner, waits for Node `local` Ready
#   down    stops it (SIGTERM: containers get their grace period, then SIGKILL); Pods stay in the API
#   status  one line: running or stopped, pid, ops address
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec 9>&2 # wait_for silences its probe; probes report a dead runner through fd 9

NAME=pod-runner
KUBECONFIG_ADMIN="$LOCAL/kubeconfig"
PODS_DIR="$LOCAL/pods"
OPS_ADDR="${POD_RUNNER_OPS_ADDR:-127.0.0.1:10250}"
# Longer than the runner's own --shutdown-grace (10s) plus its 5s margin, so it stops its
# containers itself instead of being SIGKILLed with them still running.
STOP_GRACE="${POD_RUNNER_STOP_GRACE:-30}"

alive() {
  is_running "$NAME" && return 0
  {
    printf 'error: %s exited; last lines of %s:\n' "$NAME" "${LOGS#$ROOT/}/$NAME.log"
    tail -n 25 "$LOGS/$NAME.log" 2>/dev/null | sed 's/^/    /'
  } >&9
  exit 1
}
runner_ready() { alive && curl -fsS --max-time 2 "http://$OPS_ADDR/readyz" | grep -qx ready; }
node_ready() {
  alive && [[ "$("$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=3s get node local \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

cmd_up() {
  [[ -f "$KUBECONFIG_ADMIN" ]] || die "${KUBECONFIG_ADMIN#$ROOT/} is missing: start the control plane first (e2e/platform/kube.sh up)"
  step "Millrace binaries (cargo build, target ${CARGO_TARGET_DIR/#$HOME/\~})"
  # Same flags as up.sh, so both share one set of build artifacts.
  if ! (cd "$ROOT" && cargo build --workspace --all-features --bins 2>&1) \
    | { grep -vE '^\s+(Compiling|Checking|Fresh|Blocking)' >&2 || true; }; then
    die "cargo build failed"
  fi
  step "pod runner (Node local, Pods under ${PODS_DIR#$ROOT/})"
  mkdir -p "$PODS_DIR"
  # Restart a runner built from older sources so `up` always runs the current code.
  if is_running "$NAME" && [[ "$CARGO_TARGET_DIR/debug/millrace-pod-runner" -nt "$RUN/$NAME.pid" ]]; then
    info "binary is newer than the running runner: restarting it"
    stop_daemon "$NAME" "$STOP_GRACE"
  fi
  start_daemon "$NAME" env KUBECONFIG="$KUBECONFIG_ADMIN" NO_COLOR=1 RUST_LOG="${RUST_LOG:-info,kube=warn}" \
    "$CARGO_TARGET_DIR/debug/millrace-pod-runner" \
    --kubeconfig "$KUBECONFIG_ADMIN" \
    --node-name local \
    --pods-dir "$PODS_DIR" \
    --images "$ROOT/e2e/pod-images.yaml" \
    --bin-dir "$CARGO_TARGET_DIR/debug" \
    --ops-addr "$OPS_ADDR"
  wait_for "pod runner /readyz on $OPS_ADDR" 120 runner_ready
  wait_for "Node local Ready" 60 node_ready
  info "pod runner ready: logs in ${LOGS#$ROOT/}/$NAME.log, Pod folders in ${PODS_DIR#$ROOT/}"
}

cmd_down() {
  if is_running "$NAME"; then step "stopping the pod runner (containers get up to ${STOP_GRACE}s)"; fi
  stop_daemon "$NAME" "$STOP_GRACE"
}

cmd_status() {
  if is_running "$NAME"; then
    printf '%-24s running  pid %-8s http://%s/metrics  pods in %s\n' "$NAME" "$(cat "$RUN/$NAME.pid")" "$OPS_ADDR" "${PODS_DIR#$ROOT/}"
  else
    printf '%-24s stopped  %-12s http://%s/metrics\n' "$NAME" "" "$OPS_ADDR"
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
