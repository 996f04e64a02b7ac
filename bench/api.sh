#!/usr/bin/env bash
# The control plane's latency under load: p50/p99 of `GET /v1/jobs` and `POST /v1/sql/validate`
# at a fixed request rate from an open-loop load generator on loopback (bench/http-load), against
# the api-server Pod of the local platform (installed by the Helm chart; `make up`).
#
#   bash bench/api.sh                  release build of the load generator; 1,000 requests/s for
#                                      10 s per endpoint (after 2 s of warm-up); writes the API
#                                      section of docs/benchmarks.md (<!-- api:begin/end -->)
#   bash bench/api.sh --smoke          debug build, 50 requests/s for 2 s; fails if a request
#                                      fails; writes nothing
#   bash bench/api.sh --rate 500 --seconds 20
#
# A fresh tenant owns 10 suspended jobs (the list has something to reflect; suspended, so the
# operator runs no Pods for them), created through the API and deleted at the end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/platform/lib.sh"
cd "$ROOT"

ORIG_ARGS="$*"
SMOKE=0
RATE=1000
SECONDS_MEASURED=10
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1; RATE=50; SECONDS_MEASURED=2 ;;
    --rate) RATE="$2"; shift ;;
    --seconds) SECONDS_MEASURED="$2"; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done
if ((SMOKE)); then PROFILE=debug; else PROFILE=release; fi

if [[ ! -f "$LOCAL/api.env" ]]; then
  step "the local platform (make up)"
  bash "$ROOT/e2e/platform/up.sh"
fi
set -a; source "$LOCAL/api.env"; set +a
ADMIN="$MILLRACE_ADMIN_TOKEN"
# The Pod itself, not its Service address: the pod runner's Service forwarder is a test
# stand-in for kube-proxy and not what is measured here.
pod_ip="$("$BIN/kubectl" --kubeconfig "$LOCAL/kubeconfig" -n millrace-system get pods \
  -l app.kubernetes.io/name=millrace-api -o 'jsonpath={.items[0].status.podIP}')"
[[ -n "$pod_ip" ]] || die "no millrace-api Pod: run make up"
URL="http://$pod_ip:8080"

step "Build the load generator ($PROFILE) into ${CARGO_TARGET_DIR/#$HOME/\~}"
if ((SMOKE)); then
  cargo build -q -p millrace-bench-http-load
else
  cargo build -q --release -p millrace-bench-http-load
fi
LOAD="$CARGO_TARGET_DIR/$PROFILE/bench-http-load"

work="$(mktemp -d)"
tenant="bench-api-$(date +%s)"
api() { curl -fsS -H 'Content-Type: application/json' "$@"; }
cleanup() {
  api -X DELETE -H "Authorization: Bearer $ADMIN" "$URL/v1/tenants/$tenant?force=true" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step "tenant $tenant with 10 suspended jobs"
api -X POST -H "Authorization: Bearer $ADMIN" "$URL/v1/tenants" -d "{\"name\": \"$tenant\"}" >/dev/null
key="$(api -X POST -H "Authorization: Bearer $ADMIN" "$URL/v1/tenants/$tenant/api-keys" -d '{"name": "bench"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
sql="CREATE TABLE input (v BIGINT) WITH (connector = 'generator', rows_per_second = '10');
CREATE TABLE output (k BIGINT, n BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH (connector = 'stdout', format = 'json');
INSERT INTO output SELECT v % 10 AS k, COUNT(*) AS n FROM input GROUP BY v % 10;"
python3 - "$sql" "$work/validate.json" <<'PY'
import json, sys
open(sys.argv[2], "w").write(json.dumps({"sql": sys.argv[1]}))
PY
for i in $(seq 1 10); do
  python3 - "$sql" "job-$i" <<'PY' | api -X POST -H "Authorization: Bearer $key" "$URL/v1/jobs" -d @- >/dev/null
import json, sys
print(json.dumps({"name": sys.argv[2], "sql": sys.argv[1], "parallelism": 1, "state": "suspended"}))
PY
done

run_load() { # run_load NAME METHOD PATH [BODY_FILE]
  local name="$1" method="$2" path="$3" body=()
  [[ -n "${4:-}" ]] && body=(--body-file "$4")
  info "$method $path at $RATE/s for ${SECONDS_MEASURED}s"
  BENCH_TOKEN="$key" "$LOAD" --url "$URL$path" --method "$method" "${body[@]}" \
    --rate "$RATE" --seconds "$SECONDS_MEASURED" --warmup 2 >"$work/$name.txt"
  sed 's/^/      /' "$work/$name.txt"
}
load_avg_start="$(cut -d' ' -f1-3 /proc/loadavg)"
run_load list GET "/v1/jobs"
run_load validate POST "/v1/sql/validate" "$work/validate.json"
load_avg_end="$(cut -d' ' -f1-3 /proc/loadavg)"

value() { grep "^$2=" "$work/$1.txt" | cut -d= -f2-; }
if ((SMOKE)); then
  for name in list validate; do
    if [[ "$(value "$name" errors)" != 0 ]]; then
      die "$name: $(value "$name" errors) requests failed (first: $(value "$name" first_error))"
    fi
  done
  step "API smoke passed: GET /v1/jobs p99 $(value list p99_ms) ms, POST /v1/sql/validate p99 $(value validate p99_ms) ms (debug load generator, $RATE/s)"
  exit 0
fi

section="$work/section.md"
verdict() { # verdict NAME: the target, judged on the successful requests, errors named
  local p99 errors
  p99="$(value "$1" p99_ms)"; errors="$(value "$1" errors)"
  if [[ "$errors" != 0 ]]; then
    echo "**missed**: $errors requests failed ($(value "$1" first_error | cut -c1-80)): the server does not keep up with $RATE/s"
  else
    awk -v p="$p99" 'BEGIN { print (p < 20 ? "met" : "**missed**") }'
  fi
}
{
  echo "<!-- api:begin -->"
  echo "## Control plane latency under load"
  echo
  echo "Written by \`bash bench/api.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (part of \`make bench\`); rerun it to refresh this section only."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git rev-parse --short HEAD)"
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $load_avg_start at the start, $load_avg_end at the end."
  echo "  The api-server, its Postgres, the Kubernetes API server and the load generator share these cores."
  echo "- Server: the millrace-api Pod of the local platform (a **debug** build, as the pod runner runs it; installed by the Helm chart), requested at its Pod address; the tenant has 10 (suspended) jobs, so each \`GET /v1/jobs\` lists them from the catalog, lists the tenant's StreamJobs from the Kubernetes API and reflects each one's status."
  echo "- Load: bench/http-load, open loop: a request starts every 1/$RATE s whether or not earlier ones answered; latency from the scheduled start to the end of the body; $SECONDS_MEASURED s measured after 2 s of warm-up."
  echo
  echo "| request | rate (req/s) | requests | errors | p50 (ms) | p99 (ms) | max (ms) | target p99 < 20 ms |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  for name in list validate; do
    label="GET /v1/jobs"; [[ $name == validate ]] && label="POST /v1/sql/validate"
    echo "| $label | $(value "$name" rate) | $(value "$name" requests) | $(value "$name" errors) | $(value "$name" p50_ms) | $(value "$name" p99_ms) | $(value "$name" max_ms) | $(verdict "$name") |"
  done
  echo "<!-- api:end -->"
} >"$section"
step "Writing the API section of docs/benchmarks.md"
python3 "$ROOT/bench/harness/splice_section.py" docs/benchmarks.md api "$section"
cat "$section"
