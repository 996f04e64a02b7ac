#!/usr/bin/env bash
# Millrace itself on the local platform, installed the way a user installs it: the Helm chart
# (charts/millrace) as release `millrace` in namespace millrace-system, with
# charts/millrace/ci/local-values.yaml. The operator and the API server run as Pods of the pod
# runner under the chart's own ServiceAccounts, so the chart's RBAC is what the tests exercise.
#   up      helm upgrade --install; restarts a Pod whose binary was rebuilt after it started;
#           waits until both are Ready; writes MILLRACE_API_URL and MILLRACE_ADMIN_TOKEN to
#           .local/api.env (write-env.sh adds them to .local/env)
#   down    helm uninstall (the CRDs, KafkaTopics and StreamJobs stay, as for a user)
#   status  one line per component
# Needs the control plane, Postgres and the pod runner (make up) and built binaries.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export KUBECONFIG="$LOCAL/kubeconfig"
KC=("$BIN/kubectl" --request-timeout=10s)
HELM="$BIN/helm"
NS=millrace-system
RELEASE=millrace
ENV_FILE="$LOCAL/api.env"
VALUES="$ROOT/charts/millrace/ci/local-values.yaml"

pods_ready() { # pods_ready LABEL: every live Pod with the label is Ready, and there is one
  local states
  states="$("${KC[@]}" -n "$NS" get pods -l "$1" \
    -o 'jsonpath={range .items[?(@.metadata.deletionTimestamp)]}x{end}{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')"
  [[ -n "$states" && "$(sort -u <<<"$states")" == True ]]
}
service_address() {
  "${KC[@]}" -n "$NS" get service millrace-api -o 'jsonpath={.metadata.annotations.millrace\.io/local-address}'
}
api_ready() { curl -fsS --max-time 2 "http://$(service_address):8080/readyz" | grep -qx ready; }

# Objects of the same names applied before the chart existed (e2e/manifests/*.yaml) carry no
# Helm ownership, and Helm refuses to adopt them: remove them once.
adopt_or_remove_old_objects() {
  local kind name
  for kind_name in deployment/millrace-operator deployment/millrace-api service/millrace-api secret/millrace-api \
    serviceaccount/millrace-operator serviceaccount/millrace-api role/millrace-operator-leader-election \
    rolebinding/millrace-operator-leader-election; do
    if "${KC[@]}" -n "$NS" get "$kind_name" >/dev/null 2>&1 \
      && [[ -z "$("${KC[@]}" -n "$NS" get "$kind_name" -o 'jsonpath={.metadata.annotations.meta\.helm\.sh/release-name}')" ]]; then
      info "removing $kind_name (applied before the chart)"
      "${KC[@]}" -n "$NS" delete "$kind_name" --wait=true >/dev/null
    fi
  done
  for kind_name in clusterrole/millrace-operator clusterrole/millrace-api \
    clusterrolebinding/millrace-operator clusterrolebinding/millrace-api; do
    kind="${kind_name%/*}"; name="${kind_name#*/}"
    if "${KC[@]}" get "$kind" "$name" >/dev/null 2>&1 \
      && [[ -z "$("${KC[@]}" get "$kind" "$name" -o 'jsonpath={.metadata.annotations.meta\.helm\.sh/release-name}')" ]]; then
      info "removing $kind_name (applied before the chart)"
      "${KC[@]}" delete "$kind" "$name" >/dev/null
    fi
  done
}

# The pod runner starts the binary when a container starts: restart Pods older than the build.
restart_if_rebuilt() { # restart_if_rebuilt LABEL BINARY
  local started
  started="$("${KC[@]}" -n "$NS" get pods -l "$1" -o 'jsonpath={.items[0].status.startTime}' 2>/dev/null || true)"
  if [[ -n "$started" ]] && (( $(stat -c %Y "$2") > $(date -d "$started" +%s) )); then
    info "$(basename "$2") was rebuilt after its Pod started: restarting it"
    "${KC[@]}" -n "$NS" delete pods -l "$1" --wait=false >/dev/null
  fi
}

cmd_up() {
  [[ -f "$KUBECONFIG" ]] || die "${LOCAL#"$ROOT"/}/kubeconfig is missing: run make up first"
  for b in millrace-operator millrace-api; do
    [[ -x "$CARGO_TARGET_DIR/debug/$b" ]] || die "$CARGO_TARGET_DIR/debug/$b is missing: cargo build --workspace --all-features --bins"
  done
  "${KC[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KC[@]}" apply -f - >/dev/null
  adopt_or_remove_old_objects
  # Helm installs crds/ on the first install only and never upgrades them (docs/operations.md),
  # so a checkout whose CRDs changed would run an operator that writes status fields the API
  # server's older schema refuses: apply the checkout's CRDs, as an operator of a cluster does.
  "${KC[@]}" apply --server-side --force-conflicts -f "$ROOT/charts/millrace/crds/" >/dev/null
  step "helm upgrade --install $RELEASE charts/millrace (values: charts/millrace/ci/local-values.yaml)"
  mkdir -p "$LOCAL/checkpoints"
  # MILLRACE_HELM_ARGS: more `--set` flags, e.g. another operator image for a test run.
  # shellcheck disable=SC2086
  "$HELM" upgrade --install "$RELEASE" "$ROOT/charts/millrace" -n "$NS" -f "$VALUES" \
    --set "operator.checkpointStorage=file://$LOCAL/checkpoints" ${MILLRACE_HELM_ARGS:-} \
    --wait --timeout 180s >/dev/null
  restart_if_rebuilt app.kubernetes.io/name=millrace-operator "$CARGO_TARGET_DIR/debug/millrace-operator"
  restart_if_rebuilt app.kubernetes.io/name=millrace-api "$CARGO_TARGET_DIR/debug/millrace-api"
  wait_for "a Ready millrace-operator Pod (log: .local/pods/$NS/<pod>/operator.log)" 120 pods_ready app.kubernetes.io/name=millrace-operator
  wait_for "a Ready millrace-api Pod (log: .local/pods/$NS/<pod>/api.log)" 120 pods_ready app.kubernetes.io/name=millrace-api
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
  step "helm uninstall $RELEASE (CRDs and their resources stay)"
  "$HELM" uninstall "$RELEASE" -n "$NS" --wait >/dev/null 2>&1 || true
  rm -f "$ENV_FILE"
}

cmd_status() {
  local what
  for what in operator api; do
    if pods_ready "app.kubernetes.io/name=millrace-$what" 2>/dev/null; then
      printf '%-24s ready    %s\n' "millrace-$what" "$([[ $what == api ]] && echo "http://$(service_address):8080")"
    else
      printf '%-24s not ready\n' "millrace-$what"
    fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
