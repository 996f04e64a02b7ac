#!/usr/bin/env bash
# Checks the Helm chart (charts/millrace), as `make test` does in its `chart` phase:
#   1. `helm lint --strict` with each values file of charts/millrace/ci/;
#   2. the template tests of charts/millrace/tests/ (helm-unittest, built by build-kube.sh);
#   3. `helm template` with each ci/ values file, validated by the real local kube-apiserver
#      (`kubectl apply --dry-run=server --validate=strict`: unknown or mistyped fields fail);
#   4. values the schema or the templates must refuse, each with its message.
# Needs the local platform's API server (`make up`) for step 3; KUBECONFIG from .local/env.
set -euo pipefail
source "$(dirname "$0")/../e2e/platform/lib.sh"

CHART="$ROOT/charts/millrace"
HELM="$BIN/helm"
UNITTEST="$BIN/helm-unittest"
KUBECTL="$BIN/kubectl"
export KUBECONFIG="${KUBECONFIG:-$LOCAL/kubeconfig}"
NS=millrace-chart-check
for tool in "$HELM" "$UNITTEST" "$KUBECTL"; do
  [[ -x "$tool" ]] || die "$tool is missing: run e2e/platform/build-kube.sh (make up does)"
done
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
failures=0
fail() { printf '    FAILED: %s\n' "$*"; failures=$((failures + 1)); }

step "helm lint --strict"
for values in "$CHART"/ci/*-values.yaml; do
  if "$HELM" lint --strict "$CHART" -f "$values" >"$work/lint.log" 2>&1; then
    info "ok   $(basename "$values")"
  else
    cat "$work/lint.log"; fail "helm lint with $(basename "$values")"
  fi
done

step "template tests (charts/millrace/tests/, helm-unittest)"
if "$UNITTEST" "$CHART" >"$work/unittest.log" 2>&1; then
  grep -E '^(Test Suites|Tests):' "$work/unittest.log" | sed 's/^/    /'
else
  cat "$work/unittest.log"; fail "helm-unittest"
fi

step "rendered manifests validated by the API server (dry run, strict)"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
for values in "$CHART"/ci/*-values.yaml; do
  name="$(basename "$values" -values.yaml)"
  out="$work/$name.yaml"
  if ! "$HELM" template "chk-$name" "$CHART" -n "$NS" -f "$values" >"$out" 2>"$work/template.log"; then
    cat "$work/template.log"; fail "helm template with $name"; continue
  fi
  if "$KUBECTL" apply --dry-run=server --validate=strict -f "$out" >"$work/apply.log" 2>&1; then
    info "ok   $name: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s%s×%s", sep, $3, $1; sep=", "}'))"
  else
    cat "$work/apply.log"; fail "the API server refused the manifests rendered with $name"
  fi
done
"$KUBECTL" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true

step "values that must be refused"
refused() { # refused "WHAT" "EXPECTED MESSAGE" helm-template-args…
  local what="$1" expected="$2"; shift 2
  if "$HELM" template chk "$CHART" "$@" >/dev/null 2>"$work/refused.log"; then
    fail "$what was accepted"
  elif grep -qF -- "$expected" "$work/refused.log"; then
    info "ok   $what: $(grep -F -- "$expected" "$work/refused.log" | head -1 | sed 's/^Error: //' | cut -c1-140)"
  else
    cat "$work/refused.log"; fail "$what was refused without the message '$expected'"
  fi
}
local_values=(-f "$CHART/ci/local-values.yaml")
refused "no Kafka bootstrap" "kafka.bootstrapServers is required" --set api.enabled=false
refused "a bootstrap without a port" "/kafka/bootstrapServers': 'kafka' does not match pattern" --set kafka.bootstrapServers=kafka --set api.enabled=false
refused "an unknown value" "additional properties 'replica' not allowed" "${local_values[@]}" --set operator.replica=2
refused "zero operator replicas" "/operator/replicas': minimum: got 0" "${local_values[@]}" --set operator.replicas=0
refused "two replicas without leader election" "needs operator.leaderElection" "${local_values[@]}" \
  --set operator.replicas=2 --set operator.leaderElection=false
refused "the API without a database" "api.database.url or api.database.existingSecret is required" \
  --set kafka.bootstrapServers=kafka:9092 --set api.adminToken.value=0123456789abcdef
refused "a short admin token" "at least 16 characters" "${local_values[@]}" --set api.adminToken.value=short

if ((failures)); then die "chart checks: $failures failed"; fi
step "chart checks passed"
