#!/usr/bin/env bash
# A local single-node Apache Kafka (KRaft: one process is broker and controller) on loopback.
#
#   kafka.sh install        fetch Kafka $KAFKA_VERSION's jars from Maven Central (once, cached)
#   kafka.sh up             install if needed, format storage once, start, wait until it serves
#   kafka.sh down           stop it (graceful: controlled shutdown)
#   kafka.sh status         one line: running/starting/stopped (exit 0 either way)
#   kafka.sh reset          down, then wipe its data (.local/kafka)
#   kafka.sh env            print KAFKA_BOOTSTRAP=...
#   kafka.sh topics ARGS…   Kafka's TopicCommand against the local broker, e.g.
#                           kafka.sh topics --create --topic t --partitions 3
#   kafka.sh console-producer ARGS…   ConsoleProducer  (--bootstrap-server is added)
#   kafka.sh console-consumer ARGS…   ConsoleConsumer  (--bootstrap-server is added)
#   kafka.sh tool CLASS ARGS…         any other Kafka main class, on Kafka's classpath
#
# Jars live in $CACHE/kafka-$KAFKA_VERSION/lib (outside the repository); the broker's
# config, data and cluster id in .local/kafka; its log in .local/logs/kafka.log.
# The committed inputs are kafka/pom.xml, kafka/log4j2.properties, kafka/server.properties.in.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE="$ROOT/e2e/platform/kafka"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
LIB="$KAFKA_HOME/lib"
STAMP="$KAFKA_HOME/.installed"
KDIR="$LOCAL/kafka"
KDATA="$KDIR/data"
KCONF="$KDIR/server.properties"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
# Maven's local repository: Maven's default (~/.m2) unless MAVEN_REPO_LOCAL says otherwise.
MVN_REPO_ARGS=()
[[ -n "${MAVEN_REPO_LOCAL:-}" ]] && MVN_REPO_ARGS=("-Dmaven.repo.local=$MAVEN_REPO_LOCAL")

exec 3>&2  # probes run by wait_for have their stderr silenced; fd 3 still reaches the user

# Serialize up/down/reset (fd 8) and install (fd 7) between concurrent callers. Fds 3, 7, 8
# are closed for the daemon, or it would hold the lock, and the caller's stderr pipe, forever.
lock() { exec 8>"$RUN/kafka.lock"; flock -w 600 8 || die "another kafka.sh is still busy (lock $RUN/kafka.lock)"; }

# What the install depends on: a change to any of these re-runs it.
install_key() { printf '%s\n' "$KAFKA_VERSION"; cat "$HERE/pom.xml"; }

installed() { [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(install_key | sha256sum)" ]]; }

cmd_install() {
  if installed; then return 0; fi
  mkdir -p "$KAFKA_HOME"
  exec 7>"$KAFKA_HOME/.lock"
  flock -w 600 7 || die "another kafka.sh install is still busy"
  if installed; then return 0; fi
  command -v java >/dev/null || die "java not found (run e2e/platform/install-deps.sh)"
  command -v mvn >/dev/null || die "mvn not found (run e2e/platform/install-deps.sh)"
  step "Installing Kafka $KAFKA_VERSION jars into ${KAFKA_HOME/#$HOME/\~}"
  local start=$SECONDS tmp="$KAFKA_HOME/lib.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$KAFKA_HOME"
  # copy-dependencies writes nothing into the repository: only the jars, into $tmp.
  mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" "${MVN_REPO_ARGS[@]}" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" </dev/null 2>&1 \
    | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2 \
    || { rm -rf "$tmp"; die "maven could not fetch Kafka $KAFKA_VERSION"; }
  rm -rf "$HERE/target"
  # Sanity: the classes we run are there, and one log4j version for api, core and binding.
  ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar "$tmp"/kafka-tools-"$KAFKA_VERSION".jar >/dev/null \
    || die "Kafka jars missing after maven"
  local v; v="$(cd "$tmp" && ls log4j-api-*.jar log4j-core-*.jar log4j-slf4j2-impl-*.jar \
    | sed -E 's/^log4j-(api|core|slf4j2-impl)-(.*)\.jar$/\2/' | sort -u)"
  [[ "$(wc -l <<<"$v")" == 1 ]] || die "log4j jars disagree on the version: ${v//$'\n'/ }"
  ls "$tmp"/slf4j-api-2.*.jar >/dev/null 2>&1 || die "slf4j-api 2.x missing: the log4j binding would be ignored"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  install_key | sha256sum >"$STAMP"
  info "$(ls "$LIB" | wc -l) jars: kafka $KAFKA_VERSION, log4j $v, $(cd "$LIB" && ls slf4j-api-*.jar | sed 's/\.jar$//') ($((SECONDS - start))s)"
}

# java_opts server|tool : sets JOPTS, the JVM options for the broker or for a CLI tool.
java_opts() {
  JOPTS=(-Dlog4j2.configurationFile="$HERE/log4j2.properties" -Djava.awt.headless=true)
  if [[ "$1" == server ]]; then
    # shellcheck disable=SC2206
    JOPTS+=($KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
      -XX:+ExplicitGCInvokesConcurrent -Dmillrace.log.level=INFO -Dmillrace.log.target=SYSTEM_OUT)
  else
    # Short-lived CLI: start fast, small heap, only warnings (on stderr).
    JOPTS+=(-Xms32m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
      -Dmillrace.log.level="${KAFKA_TOOL_LOG_LEVEL:-WARN}" -Dmillrace.log.target=SYSTEM_ERR)
  fi
}

# ktool CLASS ARGS… : run a Kafka CLI main class.
ktool() { java_opts tool; java "${JOPTS[@]}" -cp "$LIB/*" "$@"; }

port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rendered_config() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_DATA_DIR@|$KDATA|g" \
      "$HERE/server.properties.in"
}

render_config() {
  mkdir -p "$KDIR" "$KDATA"
  rendered_config >"$KCONF.tmp"
  mv "$KCONF.tmp" "$KCONF"
}

format_storage() {
  [[ -f "$KDATA/meta.properties" ]] && return 0
  local id
  if [[ -s "$KDIR/cluster.id" ]]; then id="$(cat "$KDIR/cluster.id")"
  else
    id="$(ktool kafka.tools.StorageTool random-uuid | tail -n 1)"
    [[ "$id" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid gave '$id'"
    echo "$id" >"$KDIR/cluster.id"
  fi
  step "Formatting Kafka storage (cluster id $id)"
  ktool kafka.tools.StorageTool format --standalone -t "$id" -c "$KCONF" >"$LOGS/kafka-format.log" 2>&1 \
    || { cat "$LOGS/kafka-format.log" >&2; die "kafka storage format failed"; }
}

# Readiness probe for wait_for: the broker logged its startup line since $LOG_OFFSET and
# accepts connections. A broker that died fails the whole script at once with its last log.
LOG_OFFSET=0
kafka_ready() {
  if ! is_running kafka; then
    { echo "error: kafka exited while starting; last lines of ${LOGS#"$ROOT"/}/kafka.log:"
      tail -n 40 "$LOGS/kafka.log"; } >&3
    rm -f "$RUN/kafka.pid"
    exit 1
  fi
  if [[ "$LOG_OFFSET" -ge 0 ]]; then
    tail -c +"$((LOG_OFFSET + 1))" "$LOGS/kafka.log" | grep 'Kafka Server started' >/dev/null || return 1
  fi
  port_open "$KAFKA_PORT"
}

cmd_up() {
  if is_running kafka; then
    [[ -f "$KCONF" ]] && [[ "$(rendered_config)" == "$(cat "$KCONF")" ]] \
      || die "kafka is running with another configuration (ports or template changed): run e2e/platform/kafka.sh down, then up"
    if port_open "$KAFKA_PORT"; then
      info "kafka already running (pid $(cat "$RUN/kafka.pid")) at $KAFKA_BOOTSTRAP"
      return 0
    fi
  fi
  if ! is_running kafka; then
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      port_open "$p" && die "port $p is taken by another process (not this checkout's Kafka): free it or set KAFKA_PORT/KAFKA_CONTROLLER_PORT"
    done
  fi
  cmd_install
  render_config
  format_storage
  step "Starting Kafka $KAFKA_VERSION (KRaft, broker+controller) at $KAFKA_BOOTSTRAP"
  touch "$LOGS/kafka.log"
  # Already started by someone else and still starting: its startup line may be logged already.
  if is_running kafka; then LOG_OFFSET=-1; else LOG_OFFSET="$(stat -c %s "$LOGS/kafka.log")"; fi
  java_opts server
  start_daemon kafka java "${JOPTS[@]}" -cp "$LIB/*" kafka.Kafka "$KCONF" 3>&- 7>&- 8>&-
  wait_for "Kafka at $KAFKA_BOOTSTRAP" "${KAFKA_START_TIMEOUT:-90}" kafka_ready
  info "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP"
}

cmd_down() {
  is_running kafka || { rm -f "$RUN/kafka.pid"; return 0; }
  step "Stopping Kafka"
  stop_daemon kafka 30
}

# Same one-line format as kube.sh status; always exits 0 (make status runs every part).
cmd_status() {
  if ! is_running kafka; then printf '%-24s stopped  %-12s %s\n' kafka "" "$KAFKA_BOOTSTRAP"
  elif port_open "$KAFKA_PORT"; then printf '%-24s running  pid %-8s %s\n' kafka "$(cat "$RUN/kafka.pid")" "$KAFKA_BOOTSTRAP"
  else printf '%-24s starting pid %-8s %s (not accepting connections yet)\n' kafka "$(cat "$RUN/kafka.pid")" "$KAFKA_BOOTSTRAP"; fi
}

cmd_reset() {
  cmd_down
  step "Wiping ${KDIR#"$ROOT"/}"
  rm -rf "$KDIR"
}

need_lib() { installed || die "Kafka is not installed: run e2e/platform/kafka.sh install (or up)"; }

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    install) cmd_install ;;
    up) lock; cmd_up ;;
    down) lock; cmd_down ;;
    status) cmd_status ;;
    reset) lock; cmd_reset ;;
    env) echo "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP" ;;
    topics) need_lib; ktool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" ;;
    console-producer) need_lib; ktool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" ;;
    console-consumer) need_lib; ktool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" ;;
    tool) need_lib; [[ $# -ge 1 ]] || usage; ktool "$@" ;;
    *) usage ;;
  esac
}

main "$@"
