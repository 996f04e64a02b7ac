#!/usr/bin/env bash
# `make bench-peers`: Millrace against the engines a user would pick instead, and against a
# plain rdkafka passthrough (the physical limit), on the local broker, in one run.
#
#   bash bench/run-peers.sh                 full run (500,000 records a workload, then seed latency
#                                           at 10,000 records/s; ~7 min here), writes
#                                           docs/benchmarks.md and docs/benchmarks.png
#   bash bench/run-peers.sh --smoke         2,000 records, seed workload, debug Rust builds,
#                                           exits non-zero if any contender's output is wrong
#   bash bench/run-peers.sh --records N --workloads seed,keyed --contenders passthrough,millrace
#
# Every contender is built into caches outside the repository: Python venvs and Maven build
# output under ~/.cache/millrace/bench, Maven's repository in ~/.m2, cargo's target in
# $CARGO_TARGET_DIR (~/.cache/millrace/target). See bench/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/platform/lib.sh"
cd "$ROOT"

BENCH="$CACHE/bench"
ORIG_ARGS="$*"
SMOKE=0
RECORDS=""
WORKLOADS=""
CONTENDERS=""
BUDGET=""
LATENCY_RATE=""
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --records) RECORDS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --contenders) CONTENDERS="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --latency-rate) LATENCY_RATE="$2"; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done
if ((SMOKE)); then
  CONTENDERS="${CONTENDERS:-passthrough,millrace,kafka-streams,kafka-streams-eos,flink,quix,seed-python}"
  RECORDS="${RECORDS:-2000}"; WORKLOADS="${WORKLOADS:-seed}"; BUDGET="${BUDGET:-30}"; PROFILE=debug; LATENCY_RATE="${LATENCY_RATE:-0}"
else
  RECORDS="${RECORDS:-500000}"; WORKLOADS="${WORKLOADS:-seed,keyed,window}"; BUDGET="${BUDGET:-20}"; PROFILE=release
  LATENCY_RATE="${LATENCY_RATE:-10000}"
fi
CONTENDERS="${CONTENDERS:-passthrough,millrace,millrace-fetch16m,kafka-streams,kafka-streams-eos,flink,quix,seed-python}"
mkdir -p "$BENCH"

step "Kafka"
bash e2e/platform/kafka.sh up

# venv NAME PINS... : a venv under $BENCH/NAME with exactly these pins (rebuilt when they change).
venv() {
  local name="$1"; shift
  local dir="$BENCH/$name" want="$*"
  if [[ -x "$dir/bin/python" && "$(cat "$dir/.pins" 2>/dev/null)" == "$want" ]]; then return 0; fi
  info "venv $name: $want"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  echo "$want" >"$dir/.pins"
}

step "Python contenders and the harness (venvs in ${BENCH/#$HOME/~})"
venv venv confluent-kafka==2.16.1 matplotlib==3.11.2
[[ ",$CONTENDERS," == *,quix,* ]] && venv quix quixstreams==3.28.1
[[ ",$CONTENDERS," == *,seed-python,* ]] && venv seedpy kafka-python==3.0.12 pandas==3.1.1

# mvn_build DIR : package a peer's Maven project into $BENCH/build/<name>-peer, unless the jar
# is newer than every file of the project.
mvn_build() {
  local out="$BENCH/build/$(basename "$1")-peer"
  local jar="$out/$(basename "$1")-peer-0.1.0.jar"
  if [[ -f "$jar" ]] && ! find "$1" -newer "$jar" -type f | grep -q .; then return 0; fi
  info "maven: $1"
  mvn -B -q -Dstyle.color=never -DskipTests -Dbench.build.dir="$BENCH/build/$(basename "$1")-peer" -f "$1/pom.xml" clean package \
    || die "maven build of $1 failed"
}
step "JVM contenders (Maven repository ~/.m2)"
[[ ",$CONTENDERS," == *,kafka-streams* ]] && mvn_build bench/peers/kafka-streams
[[ ",$CONTENDERS," == *,flink,* ]] && mvn_build bench/peers/flink

step "Rust contenders ($PROFILE, target ${CARGO_TARGET_DIR/#$HOME/~})"
cargo_flags=(--all-features)
[[ "$PROFILE" == release ]] && cargo_flags+=(--release)
cargo build -q "${cargo_flags[@]}" -p millrace-bench-passthrough
: >"$BENCH/millrace-build.txt"
if [[ ",$CONTENDERS," == *,millrace* ]]; then
  # The engine is reported as not available (with the reason), never as a stale number.
  if ! cargo build -q "${cargo_flags[@]}" -p millrace-worker 2>"$BENCH/millrace-build.log"; then
    echo "cargo build $PROFILE -p millrace-worker failed: $(grep -m1 -E '^error' "$BENCH/millrace-build.log" || tail -n1 "$BENCH/millrace-build.log")" \
      >"$BENCH/millrace-build.txt"
    info "$(cat "$BENCH/millrace-build.txt")"
  fi
fi

step "Benchmark: $RECORDS records, workloads $WORKLOADS"
results="$BENCH/results-$(date +%Y%m%d-%H%M%S).json"
args=(--records "$RECORDS" --workloads "$WORKLOADS" --contenders "$CONTENDERS" --budget-s "$BUDGET"
      --rust-profile "$PROFILE" --results "$results" --bootstrap "127.0.0.1:$KAFKA_PORT"
      --latency-rate "$LATENCY_RATE" --latency-s 8)
((SMOKE)) && args+=(--smoke)
"$BENCH/venv/bin/python" bench/harness/bench.py "${args[@]}"

if ((SMOKE)); then
  "$BENCH/venv/bin/python" bench/harness/report.py --results "$results" --summary-only
else
  step "Report: docs/benchmarks.md, docs/benchmarks.png"
  command="bash bench/run-peers.sh${ORIG_ARGS:+ $ORIG_ARGS}"
  "$BENCH/venv/bin/python" bench/harness/report.py --results "$results" --markdown docs/benchmarks.md \
    --plot docs/benchmarks.png --command "$command"
fi
