#!/usr/bin/env bash
# `make demo`: the local platform up, then the main job. Today the main job is the foundation
# demo (examples/demo/): a Deployment whose Pods the pod runner runs as real millrace-worker
# processes. The seed pipeline replaces it when the stream engine lands.
set -euo pipefail
source "$(dirname "$0")/platform/lib.sh"

bash "$ROOT/e2e/platform/up.sh"
export KUBECONFIG="$LOCAL/kubeconfig"

step "deploying examples/demo/worker-deployment.yaml"
kubectl apply -f "$ROOT/examples/demo/worker-deployment.yaml"
step "waiting for the Deployment to roll out (the pod runner starts real processes)"
kubectl -n millrace-demo rollout status deployment/demo-worker --timeout=180s

step "the Pods, each a local process on its own loopback address"
kubectl -n millrace-demo get pods -o wide
for ip in $(kubectl -n millrace-demo get pods -l app.kubernetes.io/name=demo-worker -o jsonpath='{.items[*].status.podIP}'); do
  printf '    %s:9200/healthz -> %s\n' "$ip" "$(curl -fsS "http://$ip:9200/healthz")"
done
step "through the Service, by the name in the pod runner's hosts file"
svc_ip=$(awk '$2 == "demo-worker.millrace-demo.svc.cluster.local" {print $1}' "$LOCAL/pods/hosts")
printf '    demo-worker.millrace-demo.svc (%s):9200/readyz -> %s\n' "$svc_ip" "$(curl -fsS "http://$svc_ip:9200/readyz")"
info "logs: .local/pods/millrace-demo/<pod>/worker.log; stop with: make down"
