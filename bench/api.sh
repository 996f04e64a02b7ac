#!/usr/bin/env bash
# The control plane's latency under load: p50/p99 of `GET /v1/jobs` and `POST /v1/sql/validate`
# at a fixed request rate from an open-loop load generator on loopback (bench/http-load).
#
# The api-server measured is this checkout's, started here as a process on 127.0.0.1 (a
# release build for the measurement, as it would be deployed; the pod runner only runs debug
# builds) against the local platform's Postgres and Kubernetes API (`make up`): its catalog is
# a database of its own on the platform's Postgres server, created here and dropped at the
# end, so the platform's own millrace-api Pod and its catalog are not touched.
#
#   bash bench/api.sh                  release builds of the api-server and the load generator;
#                                      1,000 requests/s for 10 s per endpoint (after 2 s of
#                                      warm-up); writes the API section of docs/benchmarks.md
#                                      (<!-- api:begin/end -->)
#   bash bench/api.sh --smoke          debug builds, 50 requests/s for 2 s; fails if a request
#                                      fails; writes nothing
#   bash bench/api.sh --rate 500 --seconds 20
#
# A fresh tenant owns 10 suspended jobs (the list has something to show; suspended, so the
# operator runs no Pods for them), created through the API and deleted at the end. The bench
# waits until the operator's status of every job has reached the catalog (the api-server's
# StreamJob watch), so each listed job carries a reflected status.
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

if [[ ! -f "$LOCAL/env" ]]; then
  step "the local platform (make up)"
  bash "$ROOT/e2e/platform/up.sh"
fi
set -a; source "$LOCAL/env"; set +a
[[ -n "${DATABASE_URL:-}" && -f "${KUBECONFIG:-}" ]] || die "DATABASE_URL or KUBECONFIG missing from ${LOCAL#"$ROOT"/}/env: run make up"

step "Build the api-server and the load generator ($PROFILE) into ${CARGO_TARGET_DIR/#$HOME/\~}"
if ((SMOKE)); then
  # As make up builds them (so, within make test, nothing is rebuilt).
  cargo build -q --workspace --all-features --bins
else
  cargo build -q --release --all-features -p millrace-api -p millrace-bench-http-load
fi
SERVER_BIN="$CARGO_TARGET_DIR/$PROFILE/millrace-api"
LOAD="$CARGO_TARGET_DIR/$PROFILE/bench-http-load"

work="$(mktemp -d)"
stamp="$(date +%s)-$$"
tenant="bench-api-$stamp"
database="millrace_bench_api_${stamp//-/_}"
bench_db_url="$(python3 - "$DATABASE_URL" "$database" <<'PY'
import sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(url._replace(path="/" + sys.argv[2])))
PY
)"
ADMIN="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$port"
server_pid=""
api() { curl -fsS -H 'Content-Type: application/json' "$@"; }
cleanup() {
  if [[ -n "$server_pid" ]]; then
    api -X DELETE -H "Authorization: Bearer $ADMIN" "$URL/v1/tenants/$tenant?force=true" >/dev/null 2>&1 || true
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step "millrace-api ($PROFILE) on $URL, catalog database $database"
psql -q "$DATABASE_URL" -c "CREATE DATABASE $database" >/dev/null
MILLRACE_ADMIN_TOKEN="$ADMIN" MILLRACE_LISTEN_ADDR="127.0.0.1:$port" DATABASE_URL="$bench_db_url" \
  KUBECONFIG="$KUBECONFIG" RUST_LOG=warn "$SERVER_BIN" >"$work/api-server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  curl -fsS --max-time 1 "$URL/readyz" 2>/dev/null | grep -qx ready && break
  kill -0 "$server_pid" 2>/dev/null || { tail -20 "$work/api-server.log" >&2; die "millrace-api exited"; }
  sleep 0.1
done
curl -fsS --max-time 1 "$URL/readyz" | grep -qx ready || { tail -20 "$work/api-server.log" >&2; die "millrace-api not ready after 30 s"; }

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
info "waiting (up to 60 s) for the operator's status of the 10 jobs to reach the list"
reflected=0
for _ in $(seq 1 120); do
  reflected="$(api -H "Authorization: Bearer $key" "$URL/v1/jobs" \
    | python3 -c 'import json,sys; print(sum(1 for j in json.load(sys.stdin)["items"] if j["status"]["phase"] == "Suspended"))')"
  ((reflected == 10)) && break
  sleep 0.5
done
((reflected == 10)) || die "only $reflected of 10 jobs show the operator's Suspended phase in GET /v1/jobs after 60 s (is the operator running? see $work/api-server.log)"

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
  step "API smoke passed: GET /v1/jobs p99 $(value list p99_ms) ms, POST /v1/sql/validate p99 $(value validate p99_ms) ms (debug api-server and load generator, $RATE/s)"
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
  echo "- Server: this checkout's millrace-api, **$PROFILE** build (\`cargo build --release --all-features -p millrace-api\`, $(rustc --version | cut -d' ' -f1-2)), started by the bench as a process on 127.0.0.1 with its own catalog database on the platform's Postgres and the platform's Kubernetes API (the pod runner can only run debug builds, and the platform's Pod serves other work). Default settings: 16 Postgres connections, the StreamJob watch and the 30 s resync running."
  echo "- Data: a tenant with 10 suspended jobs, each with a status the operator wrote and the watch reflected. \`GET /v1/jobs\` = the API-key lookup plus one catalog query (rows, current versions, latest savepoints), no Kubernetes call. \`POST /v1/sql/validate\` = the key lookup plus planning a 3-statement job (two CREATE TABLE, an INSERT with GROUP BY) with the engine's planner on every request: there is no result cache, so the same SQL text each time is planned each time."
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
