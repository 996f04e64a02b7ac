#!/usr/bin/env bash
# The Millrace API server on the local platform, as a Pod of the pod runner (e2e/manifests/api.yaml).
#   up      applies the operator manifest if it is not applied, then api.yaml; restarts the api Pod
#           when the binary is newer than it; waits until it is Ready; prints MILLRACE_API_URL and
#           MILLRACE_ADMIN_TOKEN and writes them to .local/api.env (write-env.sh adds them to .local/env)
#   down    deletes what api.yaml created (not the operator, not the namespace) and .local/api.env
#   status  one line: ready or not, the URL
# Needs the control plane, Postgres and the pod runner (make up) and a built millrace-api.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KC=("$BIN/kubectl" --kubeconfig "$LOCAL/kubeconfig" --request-timeout=10s)
NS=millrace-system
LABEL=app.kubernetes.io/name=millrace-api
BINARY="$CARGO_TARGET_DIR/debug/millrace-api"
ENV_FILE="$LOCAL/api.env"

pod_ready() {
  [[ "$("${KC[@]}" -n "$NS" get pods -l "$LABEL" \
    -o 'jsonpath={range .items[?(@.metadata.deletionTimestamp)]}x{end}{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}')" == True ]]
}
service_address() {
  "${KC[@]}" -n "$NS" get service millrace-api -o 'jsonpath={.metadata.annotations.millrace\.io/local-address}'
}
api_ready() { curl -fsS --max-time 2 "http://$(service_address):8080/readyz" | grep -qx ready; }

cmd_up() {
  [[ -f "$LOCAL/kubeconfig" ]] || die "${LOCAL#"$ROOT"/}/kubeconfig is missing: run make up first"
  [[ -x "$BINARY" ]] || die "$BINARY is missing: cargo build -p millrace-api --all-features"
  if ! "${KC[@]}" -n "$NS" get deployment millrace-operator >/dev/null 2>&1; then
    step "operator (e2e/manifests/operator.yaml)"
    "${KC[@]}" apply --server-side --force-conflicts -f "$ROOT/e2e/manifests/operator.yaml" >/dev/null
  fi
  step "millrace-api (e2e/manifests/api.yaml)"
  "${KC[@]}" apply --server-side --force-conflicts -f "$ROOT/e2e/manifests/api.yaml" >/dev/null
  # The pod runner starts the binary when the container starts: restart a Pod older than the build.
  local started
  started="$("${KC[@]}" -n "$NS" get pods -l "$LABEL" -o 'jsonpath={.items[0].status.startTime}' 2>/dev/null || true)"
  if [[ -n "$started" ]] && (( $(stat -c %Y "$BINARY") > $(date -d "$started" +%s) )); then
    info "millrace-api was rebuilt after its Pod started: restarting it"
    "${KC[@]}" -n "$NS" delete pods -l "$LABEL" --wait=false >/dev/null
  fi
  wait_for "a Ready millrace-api Pod (log: .local/pods/$NS/<pod>/api.log)" 120 pod_ready
  wait_for "millrace-api /readyz through its Service" 60 api_ready
  local url token
  url="http://$(service_address):8080"
  token="$("${KC[@]}" -n "$NS" get secret millrace-api -o 'jsonpath={.data.admin-token}' | base64 -d)"
  printf 'MILLRACE_API_URL=%s\nMILLRACE_ADMIN_TOKEN=%s\n' "$url" "$token" >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  info "millrace-api ready at $url (docs: $url/docs)"
  cat "$ENV_FILE"
}

cmd_down() {
  step "deleting millrace-api"
  "${KC[@]}" delete --ignore-not-found -f "$ROOT/e2e/manifests/api.yaml" >/dev/null
  rm -f "$ENV_FILE"
}

cmd_status() {
  if pod_ready 2>/dev/null; then
    printf '%-24s ready    %s\n' millrace-api "http://$(service_address):8080"
  else
    printf '%-24s not ready\n' millrace-api
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
