#!/usr/bin/env bash
# Engine-only Nexmark: every examples/nexmark query through `millrace-worker run`, no Kafka,
# the built-in Nexmark generator as source and the query's file sink pointed at /dev/null.
#
#   bash bench/nexmark.sh              release build; each query once at parallelism 1 and 2;
#                                      writes the Nexmark section of docs/benchmarks.md
#                                      (between <!-- nexmark:begin --> and <!-- nexmark:end -->)
#   bash bench/nexmark.sh --smoke      debug build, 20,000 events a query, output to temporary
#                                      files that must not be empty; exits non-zero if a query
#                                      fails; writes nothing
#   bash bench/nexmark.sh --queries q0,q1 --events 5000000 --parallelism 1
#   bash bench/nexmark.sh --worker PATH   a prebuilt release millrace-worker (skips the build)
#
# The script rewrites each example's `events = '…'` and `path = '…'` options on a copy of the
# SQL (the examples stay runnable as they are). Measured with /usr/bin/time: wall time, CPU
# (user + sys, the whole process: generator, operators, sink encoding), peak RSS.
# Events are the global Nexmark sequence (persons, auctions and bids), as Flink's figures count.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/platform/lib.sh"
cd "$ROOT"

ORIG_ARGS="$*"
SMOKE=0
QUERIES=""
EVENTS=""
PARALLELISMS=""
WORKER=""
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --queries) QUERIES="$2"; shift ;;
    --events) EVENTS="$2"; shift ;;
    --parallelism) PARALLELISMS="$2"; shift ;;
    --worker) WORKER="$2"; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done
if [[ -z "$QUERIES" ]]; then
  QUERIES="$(find examples/nexmark -name 'q*.sql' -printf '%f\n' | sed 's/\.sql$//' | sort -V | paste -sd, -)"
fi
PARALLELISMS="${PARALLELISMS:-1,2}"
if ((SMOKE)); then PROFILE=debug; else PROFILE=release; fi

# Events per query at full size, so every run lasts a few seconds here.
default_events() {
  case "$1" in
    q2) echo 50000000 ;;                 # writes 1 bid in ~120: mostly generator
    q10|q21|q22) echo 10000000 ;;        # text functions and wide JSON rows
    q16|q17) echo 10000000 ;;            # updating aggregates: one upsert per changed key per batch
    q3) echo 10000000 ;;                 # regular join: every person and auction stays in state
    q20) echo 1000000 ;;                 # regular join: every bid stays in state (no TTL)
    q5|q7) echo 10000000 ;;              # the bid stream generated twice (no self-joins yet)
    q9) echo 1000000 ;;                  # regular join: every auction and bid stays in state (no TTL)
    q18|q19) echo 10000000 ;;            # Top-N: one or ten bids kept per key
    *) echo 20000000 ;;
  esac
}

# Flink 1.13's published throughput per core (events/s/core), nexmark/nexmark README,
# "Benchmark Results": 8 TaskManagers on 3 machines, checkpoints every 3 min, RocksDB.
flink_per_core() {
  case "$1" in
    q0) echo "155.02 K" ;; q1) echo "157.94 K" ;; q2) echo "175.21 K" ;; q10) echo "57.81 K" ;;
    q11) echo "39.7 K" ;; q12) echo "75.67 K" ;; q14) echo "161.23 K" ;; q21) echo "98.49 K" ;;
    q22) echo "129.96 K" ;; q3) echo "152 K" ;; q5) echo "22.14 K" ;; q7) echo "12.33 K" ;; q8) echo "146 K" ;; q20) echo "19 K" ;; q9) echo "14 K" ;; *) echo "–" ;;
  esac
}

if [[ -n "$WORKER" ]]; then
  worker="$WORKER"
else
  step "Build millrace-worker ($PROFILE) into $CARGO_TARGET_DIR"
  # The same cargo invocations as run-peers.sh (release) and the platform's up.sh (debug), so
  # `make bench` and `make test` reuse those builds.
  if [[ "$PROFILE" == release ]]; then
    build=(cargo build --all-features --release -p millrace-worker)
  else
    build=(cargo build --workspace --all-features --bins)
  fi
  "${build[@]}"
  worker="$CARGO_TARGET_DIR/$PROFILE/millrace-worker"
fi
[[ -x "$worker" ]] || die "no binary at $worker"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.tsv"
: >"$results"
failed=()
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

IFS=, read -ra queries <<<"$QUERIES"
IFS=, read -ra parallelisms <<<"$PARALLELISMS"
for q in "${queries[@]}"; do
  sql="examples/nexmark/$q.sql"
  [[ -f "$sql" ]] || die "no $sql"
  if ((SMOKE)); then n="${EVENTS:-20000}"; else n="${EVENTS:-$(default_events "$q")}"; fi
  for p in "${parallelisms[@]}"; do
    out="/dev/null"
    ((SMOKE)) && out="$work/$q-p$p.json"
    grep -q "events = '[0-9]*'" "$sql" || die "$sql has no events = '…' option to rewrite"
    sed -e "s/events = '[0-9]*'/events = '$n'/" -e "s|path = '[^']*'|path = '$out'|" "$sql" >"$work/$q.sql"
    step "$q: $n events, parallelism $p"
    if /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
        "$worker" run -f "$work/$q.sql" --parallelism "$p" --ops-addr 127.0.0.1:0 >"$work/$q-p$p.log" 2>&1; then
      read -r wall user sys rss_kb <"$work/time"
      if ((SMOKE)) && [[ ! -s "$out" ]]; then
        info "FAIL: $q wrote no rows"; failed+=("$q/p$p"); continue
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$q" "$p" "$n" "$wall" "$user" "$sys" "$rss_kb" >>"$results"
      info "wall ${wall}s, cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s, peak RSS $((rss_kb / 1024)) MB"
    else
      info "FAIL: $q (parallelism $p); last lines of its log:"
      tail -n 5 "$work/$q-p$p.log" >&2
      failed+=("$q/p$p")
    fi
  done
done

if ((SMOKE)); then
  if ((${#failed[@]})); then die "Nexmark smoke failed: ${failed[*]}"; fi
  step "Nexmark smoke: ${#queries[@]} queries at parallelism $PARALLELISMS passed"
  exit 0
fi

section="$work/section.md"
{
  echo "<!-- nexmark:begin -->"
  echo "## Engine-only Nexmark"
  echo
  echo "Written by \`bash bench/nexmark.sh${ORIG_ARGS:+ ${ORIG_ARGS//$HOME/\~}}\` (part of \`make bench\`); rerun it to refresh this"
  echo "section only. No Kafka: the built-in Nexmark generator (\`connector = 'nexmark'\`, docs/engine.md)"
  echo "feeds each query of \`examples/nexmark/\`, and the query's file sink writes JSON to /dev/null."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- worker examples || echo ' (with uncommitted changes)')"
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load average (1/5/15 min) $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
  echo "  The machine is shared with other builds and noisy: one run per cell, compare within this table only."
  echo "- Build: $(rustc --version), release profile. Command per cell: \`millrace-worker run -f <query with events and path rewritten> --parallelism P\`, under \`/usr/bin/time\`."
  echo "- **events** are the whole Nexmark sequence (1 person, 3 auctions, 46 bids per 50), as in Flink's figures;"
  echo "  the bid queries read 92 % of them as rows. **events/s** = events / wall time (process start to exit);"
  echo "  **events/s per core** = events / CPU-seconds (user + sys of the whole process: generator, operators,"
  echo "  JSON encoding of the sink). **peak RSS**: /usr/bin/time's maximum resident set."
  echo "- **Flink 1.13 per core**: the nexmark/nexmark README's published \"Throughput/Cores\" (100 M events,"
  echo "  8 TaskManagers on 3 8-core machines, exactly-once checkpoints every 3 min, RocksDB, a blackhole sink)."
  echo "  Not the same conditions: Millrace runs no checkpoints yet and one process; the figures are beside"
  echo "  ours for scale, not as a race."
  echo
  echo "| query | parallelism | events | wall (s) | CPU (s) | events/s | events/s per core | peak RSS (MB) | Flink 1.13 per core |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  while IFS=$'\t' read -r q p n wall user sys rss_kb; do
    python3 - "$q" "$p" "$n" "$wall" "$user" "$sys" "$rss_kb" "$(flink_per_core "$q")" <<'EOF'
import sys
q, p, n, wall, user, sys_s, rss_kb, flink = sys.argv[1:]
n, wall, cpu = int(n), float(wall), float(user) + float(sys_s)
def rate(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} K"
print(f"| {q} | {p} | {n:,} | {wall:.2f} | {cpu:.2f} | {rate(n / max(wall, 1e-9))} | "
      f"{rate(n / max(cpu, 1e-9))} | {int(rss_kb) // 1024} | {flink} |")
EOF
  done <"$results"
  if ((${#failed[@]})); then echo; echo "Failed: ${failed[*]}"; fi
  echo
  echo "q5 and q7 generate the bid stream twice (two tables over the same sequence: no self-joins yet);"
  echo "**events** counts the sequence once."
  echo
  echo "Not run: the queries that need retractions or lookup joins (q4, q6, q13); see"
  echo "\"The Nexmark examples\" in docs/engine.md."
  echo "<!-- nexmark:end -->"
} >"$section"

step "Writing the Nexmark section of docs/benchmarks.md"
python3 "$ROOT/bench/harness/splice_section.py" docs/benchmarks.md nexmark "$section"
if ((${#failed[@]})); then die "failed: ${failed[*]}"; fi
