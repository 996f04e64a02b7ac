#!/usr/bin/env bash
# Checkpoint benchmark of `millrace-worker run`, in three parts:
#   1. state    checkpoint duration, alignment and snapshot time against keyed-state size: the
#               generator into a non-windowed GROUP BY k (COUNT, SUM) over an unbounded key
#               range, so the state grows by one row per input row; every completed checkpoint
#               is sampled from /metrics (plus the process's RSS) until 3 checkpoints of at
#               least the largest --sizes have completed (or --max-rss-mb / the time limit);
#   2. recovery kill -9 of a job on Kafka input mid-way, restart with the same checkpoint
#               folder: time to restored, to processing again, to the first new checkpoint,
#               and how many records were read twice;
#   3. rescale  a stop-with-savepoint at parallelism 2 (POST /v1/savepoints), restart at 4 with
#               --restore-from: savepoint duration, time to restored and processing.
#
#   bash bench/checkpoints.sh            release build; writes the checkpoint section of
#                                        docs/benchmarks.md (<!-- checkpoints:begin/end -->)
#   bash bench/checkpoints.sh --smoke    debug build, tiny state and input, seconds; checks the
#                                        record counts after each restore; writes nothing
#   Options: --sizes 100,1000 (MB of checkpointed state; 1 MB = 10^6 bytes) --max-rss-mb N
#            --records N (Kafka input of parts 2 and 3) --parts state,recovery,rescale
#            --state-limit SECONDS (the state job's time limit; default 1200)
#            --worker PATH (a prebuilt millrace-worker; skips the build)
#
# Kafka: the broker at $KAFKA_BOOTSTRAP when set, else the local one (e2e/platform/kafka.sh up).
# Every wait polls with a deadline; every process and topic the script starts is removed on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/platform/lib.sh"
cd "$ROOT"

ORIG_ARGS="$*"
SMOKE=0 SIZES="" MAX_RSS_MB="" STATE_LIMIT="" RECORDS="" PARTS="state,recovery,rescale" WORKER=""
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --sizes) SIZES="$2"; shift ;;
    --max-rss-mb) MAX_RSS_MB="$2"; shift ;;
    --records) RECORDS="$2"; shift ;;
    --parts) PARTS="$2"; shift ;;
    --state-limit) STATE_LIMIT="$2"; shift ;;
    --worker) WORKER="$2"; shift ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
  shift
done
mem_available_mb=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
if ((SMOKE)); then
  PROFILE=debug; SIZES="${SIZES:-1,2}"; RECORDS="${RECORDS:-20000}"; KEYS=1000
  STATE_INTERVAL=500ms KAFKA_INTERVAL=500ms STATE_LIMIT_S=120 WAIT_S=120
else
  PROFILE=release; SIZES="${SIZES:-100,1000}"; RECORDS="${RECORDS:-4000000}"; KEYS=1000000
  STATE_INTERVAL=5s KAFKA_INTERVAL=1s STATE_LIMIT_S=1200 WAIT_S=600
fi
STATE_LIMIT_S="${STATE_LIMIT:-$STATE_LIMIT_S}"
# The state job stops growing once its RSS passes this (half the memory available at the start).
MAX_RSS_MB="${MAX_RSS_MB:-$((mem_available_mb / 2))}"
# Records produced after the kill / the savepoint, so the restored job has input even when the
# first job had read everything.
MORE=$((RECORDS / 10))

# --- build ---------------------------------------------------------------------------------
if [[ -n "$WORKER" ]]; then
  worker="$WORKER"
else
  step "Build millrace-worker ($PROFILE) into $CARGO_TARGET_DIR"
  # The same cargo invocations as nexmark.sh and run-peers.sh, so their builds are reused.
  if [[ "$PROFILE" == release ]]; then
    cargo build --all-features --release -p millrace-worker
  else
    cargo build --workspace --all-features --bins
  fi
  worker="$CARGO_TARGET_DIR/$PROFILE/millrace-worker"
fi
[[ -x "$worker" ]] || die "no binary at $worker"

# --- Kafka and the harness venv (the one run-peers.sh builds, same pins) ---------------------
BENCH="$CACHE/bench"
venv_dir="$BENCH/venv" venv_pins="confluent-kafka==2.16.1 matplotlib==3.11.2"
if [[ ! -x "$venv_dir/bin/python" || "$(cat "$venv_dir/.pins" 2>/dev/null)" != "$venv_pins" ]]; then
  step "venv $venv_dir: $venv_pins"
  rm -rf "$venv_dir"; mkdir -p "$BENCH"
  python3 -m venv "$venv_dir"
  # shellcheck disable=SC2086
  "$venv_dir/bin/pip" install -q --disable-pip-version-check $venv_pins
  echo "$venv_pins" >"$venv_dir/.pins"
fi
if [[ ",$PARTS," == *,recovery,* || ",$PARTS," == *,rescale,* ]]; then
  if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    bash e2e/platform/kafka.sh up
    KAFKA_BOOTSTRAP="$(bash e2e/platform/kafka.sh env | cut -d= -f2-)"
  fi
fi
kafka() { timeout 300 "$venv_dir/bin/python" bench/checkpoints_kafka.py "$1" "$KAFKA_BOOTSTRAP" "${@:2}"; }

# --- processes, cleanup ------------------------------------------------------------------------
RUN_ID="bench-checkpoints-$(date +%s)-$RANDOM"
work="$(mktemp -d "${TMPDIR:-/tmp}/$RUN_ID.XXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then kafka delete "$RUN_ID" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
# alive PID : the process runs (a zombie, exited but not yet reaped, does not).
alive() { [[ -r "/proc/$1/stat" ]] && [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_worker LOG ARGS... : starts `millrace-worker run ARGS` on a fresh ops port; sets PID and PORT.
start_worker() {
  local log="$1"; shift
  PORT="$(free_port)"
  "$worker" --ops-addr "127.0.0.1:$PORT" run "$@" >"$log" 2>&1 &
  PID=$!
  pids+=("$PID")
}

# stop_worker PID LOG GRACE_S : SIGTERM (a job with checkpoints stops at one), SIGKILL after GRACE_S.
stop_worker() {
  local pid="$1" log="$2" deadline=$((SECONDS + $3))
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    info "pid $pid did not stop within $3 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || { info "exit status $? ($log):"; tail -n 3 "$log" >&2; }
}

# scrape PORT : /metrics into $work/metrics; fails while the endpoint does not answer.
scrape() { curl -sf --max-time 2 "http://127.0.0.1:$1/metrics" >"$work/metrics.tmp" && mv "$work/metrics.tmp" "$work/metrics"; }
# metric NAME [LABEL_TEXT] [sum|max] : of the last scrape; prints nothing when the metric is absent.
metric() {
  awk -v name="$1" -v label="${2:-}" -v how="${3:-sum}" '
    ($1 == name || index($1, name "{") == 1) && (label == "" || index($1, label)) {
      v = $2 + 0; s += v; if (!seen || v > m) m = v; seen = 1 }
    END { if (seen) printf "%.0f\n", (how == "max" ? m : s) }' "$work/metrics"
}
job_json() { curl -sf --max-time 2 "http://127.0.0.1:$1/v1/job"; }
json_field() { python3 -c 'import json, sys
v = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    v = v.get(part) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"; }

# fail_with LOG MESSAGE : the worker's last log lines, then the error.
fail_with() { info "last lines of $1:"; tail -n 8 "$1" >&2; die "$2"; }

# source_position URL_OR_DIR : the sum of a snapshot's next source offsets (its `_metadata`).
source_position() {
  python3 - "${1#file://}/_metadata" <<'EOF'
import json, sys
meta = json.load(open(sys.argv[1]))
print(sum(sum(s["nextOffsets"].values()) for s in meta["sources"]))
EOF
}
# latest_checkpoint DIR : the folder of the newest completed checkpoint (the one with _metadata).
latest_checkpoint() {
  local dir
  dir="$(find "$1" -maxdepth 2 -name _metadata -path '*/chk-*' -printf '%h\n' | sort -t- -k2 -n | tail -n 1)"
  [[ -n "$dir" ]] || return 1
  echo "$dir"
}

# watch_restore PORT PID LOG WANT_RECORDS START_MS PREFIX : polls a restored job until it has read
# WANT_RECORDS records; writes PREFIX_{ops,running,processing,checkpoint,done}_ms (since START_MS)
# into $work/times, or fails at the deadline. Running = /v1/job says RUNNING with restoredFrom set.
watch_restore() {
  local port="$1" pid="$2" log="$3" want="$4" start="$5" prefix="$6"
  local ops="" running="" processing="" checkpoint="" completed records=0 deadline=$((SECONDS + WAIT_S)) t
  while :; do
    alive "$pid" || fail_with "$log" "the restored job ($prefix) exited"
    ((SECONDS < deadline)) || fail_with "$log" "$prefix: read $records of $want records within ${WAIT_S}s"
    if scrape "$port"; then
      t=$(($(now_ms) - start))
      [[ -z "$ops" ]] && ops=$t
      if [[ -z "$running" ]] && job_json "$port" >"$work/job.json" 2>/dev/null \
          && [[ "$(json_field phase <"$work/job.json")" == RUNNING ]] \
          && [[ -n "$(json_field checkpoints.restoredFrom <"$work/job.json")" ]]; then
        running=$t
      fi
      records="$(metric millrace_worker_source_records_total)"; records="${records:-0}"
      [[ -z "$processing" ]] && ((records > 0)) && processing=$t
      completed="$(metric millrace_worker_checkpoints_completed_total)"
      [[ -z "$checkpoint" ]] && ((${completed:-0} > 0)) && checkpoint=$t
      if ((records >= want)) && [[ -n "$checkpoint" && -n "$running" ]]; then
        ((records == want)) || fail_with "$log" "$prefix: the restored job read $records records, expected $want"
        printf '%s_ops_ms=%s\n%s_running_ms=%s\n%s_processing_ms=%s\n%s_checkpoint_ms=%s\n%s_done_ms=%s\n' \
          "$prefix" "$ops" "$prefix" "$running" "$prefix" "$processing" "$prefix" "$checkpoint" "$prefix" "$t" >>"$work/times"
        return 0
      fi
    fi
    sleep 0.05
  done
}

# A keyed updating aggregate reading TOPIC from the start, its changelog written to /dev/null.
kafka_job_sql() {
  cat <<EOF
CREATE TABLE input (k BIGINT, v BIGINT)
  WITH (connector = 'kafka', topic = '$1', format = 'json', scan_startup_mode = 'earliest', group_id = '$1');
CREATE TABLE totals (k BIGINT, n BIGINT, total BIGINT)
  WITH (connector = 'file', path = '/dev/null', format = 'json');
INSERT INTO totals SELECT k, COUNT(*) AS n, SUM(v) AS total FROM input GROUP BY k;
EOF
}

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$work/times"
: >"$work/state.tsv"
state_note=""

# --- 1. checkpoint time against state size -----------------------------------------------------
part_state() {
  IFS=, read -ra sizes <<<"$SIZES"
  local largest=$((${sizes[-1]} * 1000000))
  step "state: generator → GROUP BY k over an unbounded key range, checkpoints every $STATE_INTERVAL, until 3 checkpoints ≥ ${sizes[-1]} MB (RSS limit $MAX_RSS_MB MB)"
  cat >"$work/state.sql" <<'EOF'
CREATE TABLE gen (k BIGINT, v BIGINT)
  WITH (connector = 'generator', min = '0', max = '1000000000000000', seed = '7');
CREATE TABLE totals (k BIGINT, n BIGINT, total BIGINT)
  WITH (connector = 'file', path = '/dev/null', format = 'json');
INSERT INTO totals SELECT k, COUNT(*) AS n, SUM(v) AS total FROM gen GROUP BY k;
EOF
  local log="$work/state.log"
  start_worker "$log" -f "$work/state.sql" --parallelism 2 --checkpoint-dir "file://$work/state-chk" \
    --checkpoint-interval "$STATE_INTERVAL" --checkpoints-retained 1
  local pid=$PID port=$PORT last=0 at_largest=0 deadline=$((SECONDS + STATE_LIMIT_S)) rss_kb=0
  local id bytes written duration align snap records held
  while :; do
    alive "$pid" || fail_with "$log" "the state job exited"
    if ((SECONDS >= deadline)); then state_note="stopped at the time limit (${STATE_LIMIT_S}s)"; break; fi
    rss_kb="$(ps -o rss= -p "$pid" | tr -d ' ')"
    if ((rss_kb / 1024 > MAX_RSS_MB)); then state_note="stopped at the RSS limit ($MAX_RSS_MB MB)"; break; fi
    if scrape "$port"; then
      id="$(metric millrace_worker_last_checkpoint_id)"; id="${id:-0}"
      if ((id > last)); then
        last=$id
        bytes="$(metric millrace_worker_last_checkpoint_bytes)"
        written="$(metric millrace_worker_last_checkpoint_bytes_written)"
        duration="$(metric millrace_worker_last_checkpoint_duration_ms)"
        align="$(metric millrace_worker_checkpoint_alignment_ms '' max)"
        snap="$(metric millrace_worker_checkpoint_snapshot_ms '' max)"
        records="$(metric millrace_worker_source_records_total)"
        held="$(metric millrace_worker_process_state_bytes)"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$bytes" "${written:--}" "$duration" \
          "${align:--}" "${snap:--}" "$((rss_kb / 1024))" "${records:-0}" "${held:--}" >>"$work/state.tsv"
        info "checkpoint $id: $((bytes / 1000000)) MB state, ${duration} ms (alignment ${align:-?} ms, snapshot ${snap:-?} ms), RSS $((rss_kb / 1024)) MB"
        ((bytes >= largest)) && at_largest=$((at_largest + 1))
        ((at_largest >= 3)) && break
      fi
    fi
    sleep 0.2
  done
  [[ -n "$state_note" ]] && info "$state_note"
  stop_worker "$pid" "$log" "$WAIT_S"
  [[ -s "$work/state.tsv" ]] || die "the state job completed no checkpoint"
}

# --- 2. recovery after kill -9 -----------------------------------------------------------------
part_recovery() {
  local topic="$RUN_ID-recovery" dir="$work/recovery-chk" log1="$work/recovery-1.log" log2="$work/recovery-2.log"
  step "recovery: $RECORDS records over $KEYS keys on $topic (4 partitions), checkpoints every $KAFKA_INTERVAL, kill -9 mid-way"
  kafka create "$topic" 4
  kafka produce "$topic" 0 "$RECORDS" "$KEYS"
  kafka_job_sql "$topic" >"$work/recovery.sql"
  start_worker "$log1" -f "$work/recovery.sql" --parallelism 2 --checkpoint-dir "file://$dir" \
    --checkpoint-interval "$KAFKA_INTERVAL"
  local pid=$PID port=$PORT records=0 done=0 deadline=$((SECONDS + WAIT_S))
  # Killed once it has completed 2 checkpoints and read half the input.
  while :; do
    alive "$pid" || fail_with "$log1" "the recovery job exited before the kill"
    ((SECONDS < deadline)) || fail_with "$log1" "recovery: no 2 checkpoints and $((RECORDS / 2)) records within ${WAIT_S}s"
    if scrape "$port"; then
      records="$(metric millrace_worker_source_records_total)"; records="${records:-0}"
      done="$(metric millrace_worker_checkpoints_completed_total)"; done="${done:-0}"
      ((done >= 2 && records >= RECORDS / 2)) && break
    fi
    sleep 0.05
  done
  local state_bytes
  state_bytes="$(metric millrace_worker_last_checkpoint_bytes)"
  kill -9 "$pid"
  local killed_ms
  killed_ms=$(now_ms)
  wait "$pid" 2>/dev/null || true
  local chk position checkpoint_ms
  chk="$(latest_checkpoint "$dir")" || die "recovery: no completed checkpoint in $dir"
  position="$(source_position "$chk")"
  checkpoint_ms="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["completedAtMs"])' "$chk/_metadata")"
  info "killed at ≥ $records records read; latest checkpoint ${chk##*/} at position $position, $((killed_ms - checkpoint_ms)) ms before the kill"
  kafka produce "$topic" "$RECORDS" "$MORE" "$KEYS"
  local start
  start=$(now_ms)
  start_worker "$log2" -f "$work/recovery.sql" --parallelism 2 --checkpoint-dir "file://$dir" \
    --checkpoint-interval "$KAFKA_INTERVAL"
  watch_restore "$PORT" "$PID" "$log2" $((RECORDS + MORE - position)) "$start" recovery
  stop_worker "$PID" "$log2" "$WAIT_S"
  printf 'recovery_killed_at=%s\nrecovery_position=%s\nrecovery_checkpoint=%s\nrecovery_checkpoint_age_ms=%s\nrecovery_state_bytes=%s\n' \
    "$records" "$position" "${chk##*/chk-}" "$((killed_ms - checkpoint_ms))" "$state_bytes" >>"$work/times"
}

# --- 3. rescale 2 → 4 from a savepoint ---------------------------------------------------------
part_rescale() {
  local topic="$RUN_ID-rescale" log1="$work/rescale-1.log" log2="$work/rescale-2.log"
  step "rescale: $RECORDS records over as many keys on $topic (4 partitions); parallelism 2, stop with a savepoint, restore at 4"
  kafka create "$topic" 4
  kafka produce "$topic" 0 "$RECORDS" "$RECORDS"
  kafka_job_sql "$topic" >"$work/rescale.sql"
  start_worker "$log1" -f "$work/rescale.sql" --parallelism 2 --checkpoint-dir "file://$work/rescale-chk-2" \
    --checkpoint-interval 1h
  local pid=$PID port=$PORT records=0 deadline=$((SECONDS + WAIT_S))
  # The savepoint is taken once the job has read all the input (its state is every key).
  while :; do
    alive "$pid" || fail_with "$log1" "the rescale job exited before the savepoint"
    ((SECONDS < deadline)) || fail_with "$log1" "rescale: $records of $RECORDS records read within ${WAIT_S}s"
    if scrape "$port"; then
      records="$(metric millrace_worker_source_records_total)"; records="${records:-0}"
      ((records >= RECORDS)) && break
    fi
    sleep 0.1
  done
  local requested id status="" location="file://$work/savepoint"
  requested=$(now_ms)
  id="$(curl -sf --max-time 10 -X POST -H 'content-type: application/json' \
    -d "{\"targetDirectory\": \"$location\", \"stop\": true}" \
    "http://127.0.0.1:$port/v1/savepoints" | json_field id)" || fail_with "$log1" "POST /v1/savepoints failed"
  # Complete when GET /v1/savepoints/{id} says COMPLETED, or, should the stopped job have
  # exited between two polls, when the target folder has its `_metadata` (written last).
  deadline=$((SECONDS + WAIT_S))
  while [[ "$status" != COMPLETED ]]; do
    ((SECONDS < deadline)) || fail_with "$log1" "savepoint $id not COMPLETED within ${WAIT_S}s"
    if curl -sf --max-time 2 "http://127.0.0.1:$port/v1/savepoints/$id" >"$work/savepoint.json"; then
      status="$(json_field status <"$work/savepoint.json")"
      [[ "$status" == FAILED ]] && fail_with "$log1" "savepoint failed: $(json_field error <"$work/savepoint.json")"
      [[ "$status" == COMPLETED ]] && location="$(json_field location <"$work/savepoint.json")"
    elif ! alive "$pid"; then
      [[ -f "$work/savepoint/_metadata" ]] || fail_with "$log1" "the job exited without writing savepoint $id"
      status=COMPLETED
    fi
    [[ "$status" == COMPLETED ]] || sleep 0.05
  done
  local completed
  completed=$(now_ms)
  deadline=$((SECONDS + WAIT_S))
  while alive "$pid"; do
    ((SECONDS < deadline)) || fail_with "$log1" "the job did not stop after its savepoint within ${WAIT_S}s"
    sleep 0.05
  done
  local exited
  exited=$(now_ms)
  wait "$pid" || fail_with "$log1" "the job stopped with a savepoint exited non-zero"
  local position bytes
  position="$(source_position "$location")"
  bytes="$(du -sb "${location#file://}" | cut -f1)"
  info "savepoint $location: $((completed - requested)) ms, $bytes bytes, position $position"
  kafka produce "$topic" "$RECORDS" "$MORE" "$RECORDS"
  local start
  start=$(now_ms)
  start_worker "$log2" -f "$work/rescale.sql" --parallelism 4 --restore-from "$location" \
    --checkpoint-dir "file://$work/rescale-chk-4" --checkpoint-interval "$KAFKA_INTERVAL"
  watch_restore "$PORT" "$PID" "$log2" $((RECORDS + MORE - position)) "$start" rescale
  stop_worker "$PID" "$log2" "$WAIT_S"
  printf 'rescale_savepoint_ms=%s\nrescale_exit_ms=%s\nrescale_savepoint_bytes=%s\nrescale_position=%s\n' \
    "$((completed - requested))" "$((exited - requested))" "$bytes" "$position" >>"$work/times"
}

IFS=, read -ra parts <<<"$PARTS"
for part in "${parts[@]}"; do
  case "$part" in
    state) part_state ;;
    recovery) part_recovery ;;
    rescale) part_rescale ;;
    *) die "unknown part $part (state, recovery, rescale)" ;;
  esac
done
cat "$work/times" >&2

if ((SMOKE)); then
  step "Checkpoint smoke passed: ${parts[*]}"
  exit 0
fi

# --- the section of docs/benchmarks.md ---------------------------------------------------------
section="$work/section.md"
python3 - "$work/state.tsv" "$work/times" "$SIZES" "$state_note" >"$work/tables.md" <<'EOF'
import sys
state_tsv, times_file, sizes, note = sys.argv[1:]
rows = [line.rstrip("\n").split("\t") for line in open(state_tsv) if line.strip()]
t = dict(line.strip().split("=", 1) for line in open(times_file) if "=" in line)
mb = lambda b: f"{int(b) / 1e6:,.1f}"
if rows:
    targets = [int(s) * 1_000_000 for s in sizes.split(",")]
    marks = {}
    for target in targets:
        hits = [r[0] for r in rows if int(r[1]) >= target][:3]
        for h in hits:
            marks.setdefault(h, f"≥ {target // 1_000_000} MB")
    has_written = any(r[2] != "-" for r in rows)
    print("| checkpoint | state (MB) | written (MB) | duration (ms) | alignment (ms) | snapshot (ms) | RSS (MB) | rows read | state in memory (MB) | in memory / key (B) | RSS / key (B) | size point |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cid, b, w, d, a, s, rss, rec = r[:8]
        held = r[8] if len(r) > 8 else "-"
        written = mb(w) if w != "-" else "–"
        keys = max(int(rec), 1)
        in_memory = mb(held) if held != "-" else "–"
        per_key = f"{int(held) / keys:,.0f}" if held != "-" else "–"
        rss_per_key = f"{int(rss) * 1_048_576 / keys:,.0f}"
        print(f"| {cid} | {mb(b)} | {written} | {int(d):,} | {a} | {s} | {int(rss):,} | {int(rec):,} | {in_memory} | {per_key} | {rss_per_key} | {marks.get(cid, '')} |")
    print()
    if not has_written:
        print("*written*: this build has no `last_checkpoint_bytes_written` metric (incremental checkpoints")
        print("are not in it): every checkpoint writes the full state.")
    if note:
        print(f"The state job {note}.")
    print()
if "recovery_done_ms" in t:
    replay = int(t["recovery_killed_at"]) - int(t["recovery_position"])
    print("| recovery after kill -9 | |")
    print("| --- | --- |")
    print(f"| state at the kill (last checkpoint) | {mb(t['recovery_state_bytes'])} MB |")
    print(f"| restored checkpoint | {t['recovery_checkpoint']}, completed {int(t['recovery_checkpoint_age_ms']):,} ms before the kill |")
    print(f"| records read at the kill (last sample) / restored position | {int(t['recovery_killed_at']):,} / {int(t['recovery_position']):,} |")
    print(f"| replayed (read again after the restore) | ≥ {replay:,} |")
    print(f"| restart → ops endpoint up | {int(t['recovery_ops_ms']):,} ms |")
    print(f"| restart → restored and RUNNING | {int(t['recovery_running_ms']):,} ms |")
    print(f"| restart → first record processed | {int(t['recovery_processing_ms']):,} ms |")
    print(f"| restart → first new checkpoint completed | {int(t['recovery_checkpoint_ms']):,} ms |")
    print(f"| restart → every record read (replay + rest of the input) | {int(t['recovery_done_ms']):,} ms |")
    print()
if "rescale_done_ms" in t:
    print("| rescale 2 → 4 from a savepoint | |")
    print("| --- | --- |")
    print(f"| savepoint size | {mb(t['rescale_savepoint_bytes'])} MB |")
    print(f"| POST /v1/savepoints → COMPLETED | {int(t['rescale_savepoint_ms']):,} ms |")
    print(f"| POST /v1/savepoints → process exited | {int(t['rescale_exit_ms']):,} ms |")
    print(f"| start at parallelism 4 → ops endpoint up | {int(t['rescale_ops_ms']):,} ms |")
    print(f"| start → restored and RUNNING | {int(t['rescale_running_ms']):,} ms |")
    print(f"| start → first record processed | {int(t['rescale_processing_ms']):,} ms |")
    print(f"| start → first checkpoint completed | {int(t['rescale_checkpoint_ms']):,} ms |")
    print(f"| start → every record after the savepoint read | {int(t['rescale_done_ms']):,} ms |")
    print()
EOF
{
  echo "<!-- checkpoints:begin -->"
  echo "## Checkpoints: size, recovery, rescale"
  echo
  echo "Written by \`bash bench/checkpoints.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (part of \`make bench\`); rerun it to refresh this"
  echo "section only."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- worker || echo ' (with uncommitted changes)')"
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) memory;"
  echo "  load average (1/5/15 min) $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end. Shared with other"
  echo "  builds and noisy: one run, read the figures as orders of magnitude. Checkpoints go to a local disk (\`file://\`)."
  if [[ -n "$WORKER" ]]; then
    echo "- Build: $(rustc --version), the prebuilt binary \`${WORKER/#$HOME/~}\` (\`--worker\`)."
  else
    echo "- Build: $(rustc --version), release profile (\`cargo build --release --all-features -p millrace-worker\`)."
  fi
  echo
  echo "**State size.** \`millrace-worker run --parallelism 2 --checkpoint-interval $STATE_INTERVAL --checkpoints-retained 1\` on"
  echo "\`connector = 'generator'\` (k, v uniform in [0, 10^15], so nearly every row is a new key) into"
  echo "\`SELECT k, COUNT(*), SUM(v) … GROUP BY k\` (the updating aggregate; its changelog goes to a file sink on"
  echo "/dev/null). The state grows while it runs; every completed checkpoint is listed, read from \`/metrics\` as"
  echo "soon as it completes: *state* \`millrace_worker_last_checkpoint_bytes\` (Arrow IPC bytes of the state"
  echo "files), *written* \`millrace_worker_last_checkpoint_bytes_written\` (when the build has it), *duration*"
  echo "\`millrace_worker_last_checkpoint_duration_ms\` (trigger to completion), *alignment* / *snapshot* the largest"
  echo "\`millrace_worker_checkpoint_alignment_ms\` / \`millrace_worker_checkpoint_snapshot_ms\` over the stages,"
  echo "*RSS* of the process (ps) when the checkpoint was seen, *rows read* \`millrace_worker_source_records_total\`"
  echo "(≈ keys: the key range is 10^15), *state in memory* \`millrace_worker_process_state_bytes\` (what the"
  echo "operators count against \`state.max-bytes\`), per key: that and the RSS divided by the rows read."
  echo
  echo "**Recovery and rescale.** Input: $RECORDS JSON records \`{k, v}\` on a fresh 4-partition topic of the local"
  echo "Kafka broker (recovery: over $KEYS keys; rescale: every record a new key, so the savepoint holds $RECORDS"
  echo "keys), into the same GROUP BY (Kafka source, \`scan_startup_mode = 'earliest'\`)."
  echo "Recovery: parallelism 2, checkpoints every $KAFKA_INTERVAL; \`kill -9\` once 2 checkpoints are complete and half"
  echo "the input is read; $MORE more records are produced; the same command is started again (same"
  echo "\`--checkpoint-dir\`). Rescale: parallelism 2 reads all the input, then \`POST /v1/savepoints {\"stop\": true}\`;"
  echo "$MORE more records; \`--parallelism 4 --restore-from <location>\`. Times are from the new process's start"
  echo "(spawn), polled every 50 ms: *ops endpoint up* = \`/metrics\` answers; *restored and RUNNING* = \`GET /v1/job\`"
  echo "says \`RUNNING\` with \`restoredFrom\` set; *first record processed* = \`source_records_total\` > 0 (so past the"
  echo "restored position); *every record read* = it equals the records after the restored position (checked:"
  echo "exactly that many, no loss, no extra). *Replayed* = records the killed process had read (its last"
  echo "\`/metrics\` sample, a lower bound) minus the checkpoint's position: read twice."
  echo
  cat "$work/tables.md"
  echo "<!-- checkpoints:end -->"
} >"$section"

step "Writing the checkpoint section of docs/benchmarks.md"
python3 "$ROOT/bench/harness/splice_section.py" docs/benchmarks.md checkpoints "$section"
cat "$section"
