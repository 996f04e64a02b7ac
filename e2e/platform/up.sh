#!/usr/bin/env bash
# `make up`: installs what is missing, builds what is stale, starts the local platform and
# writes .local/env. Idempotent: a second run only checks that everything is up.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
started=$SECONDS

step "system packages"
bash "$ROOT/e2e/platform/install-deps.sh"

step "Kubernetes, etcd, helm, kubeconform (first build from the Go module proxy takes 10-20 minutes)"
bash "$ROOT/e2e/platform/build-kube.sh"

step "Kafka $KAFKA_VERSION jars (first fetch from Maven Central takes a minute or two)"
bash "$ROOT/e2e/platform/kafka.sh" install

step "Millrace binaries (first cargo build takes several minutes)"
cargo build --workspace --all-features --bins 2>&1 | grep -vE '^\s+(Compiling|Checking|Fresh)' >&2 || true
[[ ${PIPESTATUS[0]} -eq 0 ]] || die "cargo build failed"

step "Kubernetes control plane"
bash "$ROOT/e2e/platform/kube.sh" up

step "Kafka broker"
bash "$ROOT/e2e/platform/kafka.sh" up

step "PostgreSQL"
bash "$ROOT/e2e/platform/postgres.sh" up

step "S3-compatible endpoint for checkpoint storage (moto; first install from PyPI takes a minute)"
bash "$ROOT/e2e/platform/s3.sh" up

step "pod runner"
bash "$ROOT/e2e/platform/pod-runner.sh" up

shopt -s nullglob
crds=("$ROOT"/charts/millrace/crds/*.yaml)
if (( ${#crds[@]} )); then
  step "Millrace CRDs"
  for crd in "${crds[@]}"; do kubectl --kubeconfig "$LOCAL/kubeconfig" apply --server-side --force-conflicts -f "$crd" >/dev/null; done
  kubectl --kubeconfig "$LOCAL/kubeconfig" wait --for condition=established --timeout=60s "${crds[@]/#/-f}" >/dev/null
fi

step "Millrace (helm install of charts/millrace: operator and API server as Pods of the pod runner)"
bash "$ROOT/e2e/platform/millrace.sh" up >/dev/null

step "writing .local/env"
bash "$ROOT/e2e/platform/write-env.sh"
info "platform up in $((SECONDS - started))s; \`source .local/env\` to use it, \`make status\` to see it"
