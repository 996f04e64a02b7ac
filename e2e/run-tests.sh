#!/usr/bin/env bash
# `make test`: static checks, unit tests, then the local platform up and every integration and
# end-to-end test against it. Ends with one summary line "N passed, M failed".
# Usage: run-tests.sh all|static|unit|platform
set -uo pipefail
source "$(dirname "$0")/platform/lib.sh"
cd "$ROOT"

mode="${1:-all}"
passed=0 failed=0 failed_phases=()
results="$LOCAL/test-results"; mkdir -p "$results"

# run_phase NAME COMMAND... : runs a phase, keeps its output, tallies cargo's result lines.
run_phase() {
  local name="$1"; shift
  local log="$results/$name.log" start=$SECONDS
  step "$name: $*"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -hoE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  f=$(grep -hoE '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
  passed=$((passed + p)); failed=$((failed + f))
  if (( rc != 0 )); then
    failed_phases+=("$name")
    (( f == 0 )) && failed=$((failed + 1))   # a phase that failed outside a test counts once
  fi
  info "$name: exit $rc, $p passed, $f failed, $((SECONDS - start))s"
  return 0
}

static() {
  bash "$ROOT/e2e/platform/install-deps.sh"
  run_phase fmt cargo fmt --all -- --check
  run_phase clippy cargo clippy --workspace --all-targets --all-features -- -D warnings
}

unit() {
  run_phase unit cargo test --workspace --all-features --lib --bins
}

platform() {
  run_phase platform-up bash "$ROOT/e2e/platform/up.sh"
  if [[ " ${failed_phases[*]} " == *" platform-up "* ]]; then return 0; fi
  set -a; source "$LOCAL/env"; set +a
  # The Helm chart: lint, template tests, rendered manifests validated by the API server,
  # values that must be refused (charts/check.sh).
  run_phase chart bash "$ROOT/charts/check.sh"
  # The docs: the generated CRD and REST references are current, and the shell blocks of
  # docs/quickstart.md run in order against the platform and print what the page says
  # (docs/check.sh).
  run_phase docs bash "$ROOT/docs/check.sh"
  # --no-fail-fast: one failing test binary must not hide the results of the others.
  run_phase integration cargo test --workspace --all-features --no-fail-fast --test '*'
  # The side-by-side benchmark at toy size, so its scripts and peers cannot rot; it fails
  # when any contender's output differs from the reference.
  run_phase bench-smoke bash "$ROOT/bench/run-peers.sh" --smoke
  # Every Nexmark example on 20,000 events through the debug binary up.sh built (it needs no
  # platform; here it reuses that build), so the benchmark script and the examples cannot rot;
  # fails if a query fails or writes nothing.
  run_phase nexmark-smoke bash "$ROOT/bench/nexmark.sh" --smoke
  # The checkpoint benchmark at toy size (a few MB of state, 20,000 Kafka records, same debug
  # binary): state-size sampling, kill -9 and restore, stop-with-savepoint and restore 2 -> 4;
  # fails if a restored job reads more or fewer records than follow its restored position.
  run_phase checkpoints-smoke bash "$ROOT/bench/checkpoints.sh" --smoke
  # The API latency benchmark at toy rate (50 requests/s for 2 s per endpoint) against the
  # platform's api-server; fails if a request fails.
  run_phase api-bench-smoke bash "$ROOT/bench/api.sh" --smoke
  # The operator reconcile benchmark at toy size (20 KafkaTopics, 5 suspended StreamJobs);
  # fails unless every object becomes Ready and the namespace is deleted.
  run_phase reconcile-bench-smoke bash "$ROOT/bench/reconcile.sh" --smoke
}

started=$SECONDS
case "$mode" in
  all) static; unit; platform ;;
  static) static ;;
  unit) unit ;;
  platform) platform ;;
  *) die "usage: $0 all|static|unit|platform" ;;
esac

# failure_digest LOG: each failed test's own output (its panic message and what it printed), with
# backtrace frames left out and at most 60 lines a test, so the reason shows at the end of a long
# run's output and not only deep in it.
failure_digest() {
  awk '
    /^---- .* stdout ----$/ { inside = 1; lines = 0; print; next }
    inside && (/^failures:$/ || /^test result:/) { inside = 0 }
    inside && /^ +[0-9]+: / { next }
    inside && /^ +at / { next }
    inside && lines < 60 { print; lines++ }
  ' "$1"
}

echo
for phase in "${failed_phases[@]}"; do
  if grep -q '^---- .* stdout ----$' "$results/$phase.log"; then
    step "why $phase failed (from ${results#$ROOT/}/$phase.log)"
    failure_digest "$results/$phase.log"
  fi
done
if (( ${#failed_phases[@]} )); then info "failed phases: ${failed_phases[*]} (logs in ${results#$ROOT/}/)"; fi
info "total $((SECONDS - started))s"
echo "$passed passed, $failed failed"
(( ${#failed_phases[@]} == 0 ))
