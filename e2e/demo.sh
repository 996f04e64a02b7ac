#!/usr/bin/env bash
# `make demo`: the local platform up, then the main job end to end — seed pipeline (a) from
# ../shared/SEED.md: integers from `input-topic`, drop values below 50, the average of the
# last 3 remaining values to `output-topic`. Millrace is installed by its Helm chart (make up
# does it: e2e/platform/millrace.sh); topics are KafkaTopic resources and the job is a
# StreamJob, both reconciled by the operator, which runs the job as a coordinator and a worker
# Pod of the pod runner. The demo produces input (with one malformed record), reads the
# output back and compares it with a reference computed here, shows the job's status and
# metrics (the malformed record is dead-lettered), and prints the next commands to try.
set -euo pipefail
source "$(dirname "$0")/platform/lib.sh"

RECORDS="${DEMO_RECORDS:-1000}"
NS=millrace-demo
work="$LOCAL/demo"; mkdir -p "$work"

bash "$ROOT/e2e/platform/up.sh"
export KUBECONFIG="$LOCAL/kubeconfig"
kafka() { bash "$ROOT/e2e/platform/kafka.sh" "$@"; }
topic_in_kafka() { kafka topics --list 2>/dev/null | grep -qx "$1"; }
no_topic_in_kafka() { ! kafka topics --list 2>/dev/null | grep -qxE 'input-topic|output-topic|input-topic-dlq'; }
no_job_pods() { [[ -z "$(kubectl -n "$NS" get pods -l app.kubernetes.io/instance=seed-a -o name 2>/dev/null)" ]]; }
job_running() { [[ "$(kubectl -n "$NS" get sj seed-a -o 'jsonpath={.status.phase}' 2>/dev/null)" == Running ]]; }

if kubectl get namespace "$NS" >/dev/null 2>&1; then
  step "clearing the previous demo run (job, then its topics through the operator)"
  kubectl -n "$NS" delete streamjob seed-a --ignore-not-found --wait=true >/dev/null
  kubectl -n "$NS" delete deployment seed-a --ignore-not-found --wait=true >/dev/null  # the pre-StreamJob demo's
  wait_for "the old job's Pods to go" 120 no_job_pods
  # Its checkpoints name offsets of the topics about to be re-created: a new run starts fresh.
  rm -rf "$LOCAL/checkpoints/$NS/seed-a"
  kubectl -n "$NS" delete kafkatopics --all --wait=true --timeout=120s >/dev/null
  wait_for "the old topics to leave Kafka" 120 no_topic_in_kafka
fi

step "topics: KafkaTopic resources input-topic, output-topic, input-topic-dlq"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f "$ROOT/examples/demo/seed-a.yaml"
kubectl -n "$NS" wait --for=condition=Ready kafkatopic --all --timeout=120s
for t in input-topic output-topic input-topic-dlq; do wait_for "topic $t in Kafka" 60 topic_in_kafka "$t"; done

step "the job: StreamJob seed-a (examples/seed/seed-a-rolling-average.yaml) → coordinator + worker Pods"
kubectl apply -n "$NS" -f "$ROOT/examples/seed/seed-a-rolling-average.yaml"
wait_for "StreamJob seed-a to be Running (kubectl -n $NS describe sj seed-a)" 180 job_running
kubectl -n "$NS" get sj seed-a

step "producing $RECORDS integers 0..99 (and one malformed record) to input-topic"
python3 - "$RECORDS" "$work" <<'PY'
import random, sys, pathlib
n, work = int(sys.argv[1]), pathlib.Path(sys.argv[2])
rng = random.Random(42)
values = [rng.randrange(100) for _ in range(n)]
lines = [str(v) for v in values]
lines.insert(n // 2, "not-a-number")            # must land in the dead-letter topic
(work / "input.txt").write_text("\n".join(lines) + "\n")
kept = [v for v in values if v >= 50]
expected = [sum(kept[i - 2:i + 1]) / 3 for i in range(2, len(kept))]
(work / "expected.txt").write_text("\n".join(repr(x) for x in expected) + "\n")
print(f"    {n} values, {len(kept)} kept, {len(expected)} averages expected")
PY
kafka console-producer --topic input-topic <"$work/input.txt"
expected_count=$(wc -l <"$work/expected.txt")

step "reading $expected_count averages from output-topic (60s deadline)"
kafka console-consumer --topic output-topic --from-beginning --max-messages "$expected_count" \
  --timeout-ms 60000 >"$work/output.txt" 2>"$work/consumer.log" || true
python3 - "$work" <<'PY'
import sys, pathlib
work = pathlib.Path(sys.argv[1])
expected = [float(x) for x in (work / "expected.txt").read_text().split()]
got = [float(x) for x in (work / "output.txt").read_text().split()]
bad = [i for i, (g, e) in enumerate(zip(got, expected)) if abs(g - e) > 1e-9]
print("    first averages:", ", ".join(f"{x:.2f}" for x in got[:6]), "…")
if len(got) != len(expected) or bad:
    print(f"    MISMATCH: {len(got)} of {len(expected)} averages, {len(bad)} wrong (first at {bad[:1]})")
    sys.exit(1)
print(f"    all {len(got)} averages match the reference")
PY

step "the job's metrics (records in/out, dead letters) from its worker"
pod_ip=$(kubectl -n "$NS" get pods -l app.kubernetes.io/instance=seed-a,millrace.io/role=worker -o jsonpath='{.items[0].status.podIP}')
curl -fsS "http://$pod_ip:9200/metrics" | grep -E '^millrace_worker_(source_records|sink_records|dead_lettered|consumer_lag)' | sed 's/^/    /'
kubectl get -n "$NS" streamjobs,kafkatopics,pods -o wide

step "next: try these"
cat <<EOF
    export PATH=$BIN:\$PATH KUBECONFIG=$LOCAL/kubeconfig; set -a; source $LOCAL/env; set +a
    kubectl -n $NS get sj seed-a -o wide                      # phase, workers, last checkpoint
    kubectl -n $NS patch sj seed-a --type merge -p '{"spec":{"savepointTriggerNonce":1}}'
    kubectl -n $NS get sj seed-a -o jsonpath='{.status.lastSavepoint}'; echo
    kubectl -n $NS scale sj seed-a --replicas=2                # rescale through a savepoint
    kubectl -n $NS patch sj seed-a --type merge -p '{"spec":{"state":"suspended"}}'
    curl -s \$MILLRACE_API_URL/docs                             # the REST API (tenants, topics, jobs)
    curl -s -X POST \$MILLRACE_API_URL/v1/tenants -H "Authorization: Bearer \$MILLRACE_ADMIN_TOKEN" \\
      -H 'Content-Type: application/json' -d '{"name": "acme"}'
EOF
info "job logs: .local/pods/$NS/<pod>/; the platform keeps running: make down stops it"
