#!/usr/bin/env bash
# The operator's reconcile latency with many objects (bench/reconcile-load): 1,000 KafkaTopics,
# then 200 StreamJobs, applied at once into a fresh namespace of the local platform, each timed
# from its apply to Ready=True as a watch sees it; the operator's own reconcile-duration
# histogram over the run beside it; then the namespace's deletion (1,000 topic finalizers).
#
#   bash bench/reconcile.sh            1,000 topics + 200 jobs; writes the reconcile section of
#                                      docs/benchmarks.md (<!-- reconcile:begin/end -->)
#   bash bench/reconcile.sh --smoke    20 topics + 5 jobs; fails unless all are Ready; writes nothing
#   bash bench/reconcile.sh --topics 500 --jobs 100
#
# The full run sets the operator to the chart's default resync period for its duration (the local
# platform's is shorter, for the tests) and restores the local values after it.
# The jobs are created suspended: each is validated and planned by the operator (the engine's
# planner) and becomes Ready without Pods; this machine cannot run 400 job Pods.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/platform/lib.sh"
cd "$ROOT"

ORIG_ARGS="$*"
SMOKE=0
TOPICS=1000
JOBS=200
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1; TOPICS=20; JOBS=5 ;;
    --topics) TOPICS="$2"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done

if [[ ! -f "$LOCAL/kubeconfig" ]]; then
  step "the local platform (make up)"
  bash "$ROOT/e2e/platform/up.sh"
fi
export KUBECONFIG="$LOCAL/kubeconfig"
kubectl=("$BIN/kubectl" --kubeconfig "$KUBECONFIG")

# operator_is_leader: the Running operator Pod holds the leader Lease.
operator_is_leader() {
  local pod holder
  pod="$("${kubectl[@]}" -n millrace-system get pods -l app.kubernetes.io/name=millrace-operator \
    --field-selector status.phase=Running -o 'jsonpath={.items[*].metadata.name}')"
  holder="$("${kubectl[@]}" -n millrace-system get lease millrace-operator -o 'jsonpath={.spec.holderIdentity}')"
  [[ -n "$holder" && "$pod" == "$holder" ]]
}
# The full run measures the operator at the chart's default resync period (the local platform
# uses a short one, charts/millrace/ci/local-values.yaml, so that tests see drift repaired
# quickly; every KafkaTopic is looked at again once a period, which is load at 1,000 topics).
work="$(mktemp -d)"
values_changed=0
on_exit() {
  rm -rf "$work"
  if ((values_changed)); then
    step "the operator back at the local platform's values"
    bash "$ROOT/e2e/platform/millrace.sh" up >/dev/null
  fi
}
trap on_exit EXIT
if ((!SMOKE)); then
  resync="$(awk '/^operator:/ {o = 1; next} /^[^ #]/ {o = 0} o && /^  resyncSeconds:/ {print $2; exit}' \
    charts/millrace/values.yaml)"
  [[ -n "$resync" ]] || die "no operator.resyncSeconds in charts/millrace/values.yaml"
  step "the operator at the chart's default resync period (${resync} s) for this run"
  values_changed=1
  MILLRACE_HELM_ARGS="--set operator.resyncSeconds=$resync" bash "$ROOT/e2e/platform/millrace.sh" up >/dev/null
  wait_for "the restarted operator Pod to hold the leader Lease" 120 operator_is_leader
fi
operator_flags="$("${kubectl[@]}" -n millrace-system get deploy millrace-operator \
  -o 'jsonpath={.spec.template.spec.containers[0].args[*]}')"
pod_ip="$("${kubectl[@]}" -n millrace-system get pods -l app.kubernetes.io/name=millrace-operator \
  --field-selector status.phase=Running -o 'jsonpath={.items[0].status.podIP}')"
[[ -n "$pod_ip" ]] || die "no running millrace-operator Pod: run make up"

step "Build the reconcile load (debug) into ${CARGO_TARGET_DIR/#$HOME/\~}"
cargo build -q -p millrace-bench-reconcile-load
LOAD="$CARGO_TARGET_DIR/debug/bench-reconcile"

namespace="bench-reconcile-$(date +%s)"
step "$TOPICS KafkaTopics, then $JOBS StreamJobs, in namespace $namespace"
load_avg_start="$(cut -d' ' -f1-3 /proc/loadavg)"
"$LOAD" --namespace "$namespace" --topics "$TOPICS" --jobs "$JOBS" \
  --metrics-url "http://$pod_ip:9100/metrics" | tee "$work/result.txt" | sed 's/^/      /'
load_avg_end="$(cut -d' ' -f1-3 /proc/loadavg)"
value() { grep "^$1=" "$work/result.txt" | cut -d= -f2-; }

if ((SMOKE)); then
  step "reconcile smoke passed: $TOPICS topics p99 $(value topics_p99_ms) ms, $JOBS jobs p99 $(value jobs_p99_ms) ms to Ready"
  exit 0
fi

section="$work/section.md"
{
  echo "<!-- reconcile:begin -->"
  echo "## Operator reconcile latency"
  echo
  echo "Written by \`bash bench/reconcile.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (part of \`make bench\`); rerun it to refresh this section only."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git rev-parse --short HEAD)"
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $load_avg_start at the start, $load_avg_end at the end."
  echo "  The operator (a **debug** build, as the pod runner runs it), the kube-apiserver, etcd, Kafka and the load share these cores."
  echo "- Operator flags: \`$operator_flags\` (the chart's default resync period; every KafkaTopic is looked at again once a period)."
  echo "- Load: $TOPICS KafkaTopics (1 partition each, created in the real Kafka), then $JOBS StreamJobs (suspended: validated and planned, no Pods), applied with 32 requests in flight; latency from the start of each apply to the first watch event showing Ready=True."
  echo
  echo "| objects | created | Ready | p50 to Ready (ms) | p99 to Ready (ms) | max (ms) | all Ready after (s) | reconciles | one reconcile p50 / p99 (histogram bucket, s) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  echo "| KafkaTopics | $(value topics_created) | $(value topics_ready) | $(value topics_p50_ms) | $(value topics_p99_ms) | $(value topics_max_ms) | $(value topics_all_ready_s) | $(value kafkatopic_reconciles) | ≤ $(value kafkatopic_reconcile_p50_le_s) / ≤ $(value kafkatopic_reconcile_p99_le_s) |"
  echo "| StreamJobs | $(value jobs_created) | $(value jobs_ready) | $(value jobs_p50_ms) | $(value jobs_p99_ms) | $(value jobs_max_ms) | $(value jobs_all_ready_s) | $(value streamjob_reconciles) | ≤ $(value streamjob_reconcile_p50_le_s) / ≤ $(value streamjob_reconcile_p99_le_s) |"
  echo
  echo "Deleting the namespace (every KafkaTopic's finalizer deleting its topic in Kafka) took $(value cleanup_s) s."
  echo "<!-- reconcile:end -->"
} >"$section"
step "Writing the reconcile section of docs/benchmarks.md"
python3 "$ROOT/bench/harness/splice_section.py" docs/benchmarks.md reconcile "$section"
cat "$section"
