#!/usr/bin/env bash
# A private PostgreSQL 15 cluster on 127.0.0.1:$PG_PORT for development and tests: never the
# system service, never port 5432.
#
#   postgres.sh up       initdb once, start, wait until it accepts connections, print DATABASE_URL
#   postgres.sh down     stop it (fast shutdown)
#   postgres.sh status   one line: running/starting/stopped (exit 0 either way)
#   postgres.sh reset    down, then wipe the cluster
#   postgres.sh env      print DATABASE_URL=...
#   postgres.sh psql ARGS…   psql connected to the millrace database
#
# Role `millrace` (password `millrace`, superuser: #[sqlx::test] creates a database per test)
# owns database `millrace`. Authentication is `trust`, and the server listens on 127.0.0.1 and
# on a unix socket inside its own directory only. fsync is off: a crash may lose the cluster,
# `reset` rebuilds it.
#
# Running as root (CI, and the machines here): initdb and postgres refuse to run as root, so
# the server runs as the unprivileged system user `millrace-pg` (created if missing), started
# with setpriv, which execs postgres directly so the pid we track is the postmaster's.
# That user must be able to reach its data directory: .local/postgres is used when it can
# traverse to .local (e.g. /work/main/.local: every parent is world-searchable). When it can't
# (a clone under a 0700 /root, or a umask 077 checkout) — or when the path is too long for a
# unix socket (107 bytes) — the cluster lives in /var/tmp/millrace-pg-<hash of the checkout
# path> instead: outside the repository, one per checkout, found again by the same hash.
# We never loosen the permissions of the checkout's parents. The log stays in
# .local/logs/postgres.log (opened by root for the daemon).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_OS_USER="${PG_OS_USER:-millrace-pg}"
PG_USER=millrace
PG_PASSWORD=millrace
PG_DB=millrace
DATABASE_URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
FALLBACK_HOME="/var/tmp/millrace-pg-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"

exec 3>&2  # probes run by wait_for have their stderr silenced; fd 3 still reaches the user

# Serialize up/down/reset between concurrent callers (fd 8). Fds 3 and 8 are closed for the
# daemon, or it would hold the lock, and the caller's stderr pipe, forever.
lock() { exec 8>"$RUN/postgres.lock"; flock -w 600 8 || die "another postgres.sh is still busy (lock $RUN/postgres.lock)"; }

[[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL 15 not found in $PG_BIN (run e2e/platform/install-deps.sh)"

is_root() { [[ "$(id -u)" == 0 ]]; }

# as_pg COMMAND… : run COMMAND as the user that owns the cluster (exec'ing, no extra process).
as_pg() {
  if is_root; then (cd / && exec setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$@")
  else "$@"; fi
}

ensure_os_user() {
  is_root || return 0
  id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
  info "creating system user $PG_OS_USER (runs the private PostgreSQL)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "Millrace private PostgreSQL" "$PG_OS_USER"
}

# Where the cluster lives (sets PG_HOME): see the header. As root, decided once the OS user
# exists (cmd_up creates it first); before that no cluster can exist, so any answer will do.
pick_home() {
  local local_home="$LOCAL/postgres"
  # The socket is $PG_HOME/.s.PGSQL.<port>: keep it under the 107-byte sun_path limit.
  if (( ${#local_home} + 20 > 107 )); then PG_HOME="$FALLBACK_HOME"
  elif is_root && id -u "$PG_OS_USER" >/dev/null 2>&1 && ! as_pg test -x "$LOCAL"; then PG_HOME="$FALLBACK_HOME"
  else PG_HOME="$local_home"; fi
}

set_paths() {
  pick_home
  PG_DATA="$PG_HOME/data"
  PG_SOCKET_DIR="$PG_HOME"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres; }

port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Readiness probe for wait_for; a postmaster that died fails the script at once with its log.
postgres_ready() {
  if ! is_running postgres; then
    { echo "error: postgres exited while starting; last lines of ${LOGS#"$ROOT"/}/postgres.log:"
      tail -n 30 "$LOGS/postgres.log"; } >&3
    rm -f "$RUN/postgres.pid"
    exit 1
  fi
  pg_ready
}

psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$@"; }

init_cluster() {
  [[ -f "$PG_DATA/PG_VERSION" ]] && return 0
  step "Creating PostgreSQL cluster in ${PG_DATA#"$ROOT"/}"
  mkdir -p "$PG_HOME"
  rm -rf "$PG_DATA"
  is_root && chown "$PG_OS_USER:$PG_OS_USER" "$PG_HOME"
  chmod 0700 "$PG_HOME"
  # The bootstrap superuser is `millrace` itself; trust auth, C collation, UTF-8.
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --locale=C \
    --no-instructions >"$LOGS/postgres-initdb.log" 2>&1 \
    || { tail -n 20 "$LOGS/postgres-initdb.log" >&2; die "initdb failed (log: ${LOGS#"$ROOT"/}/postgres-initdb.log)"; }
  # Loopback and the private socket only.
  as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Millrace private cluster: trust, loopback and the private unix socket only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
  # Settings for a throwaway test cluster (port, addresses and socket are given on the command line).
  as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null <<'EOF'

# --- Millrace private cluster (e2e/platform/postgres.sh) ---
max_connections = 200          # every #[sqlx::test] opens its own pool
fsync = off                    # test data only: speed over durability
synchronous_commit = off
full_page_writes = off
logging_collector = off        # log to stderr -> .local/logs/postgres.log
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_connections = off
EOF
}

cmd_up() {
  ensure_os_user
  set_paths
  if is_running postgres && pg_ready; then
    info "postgres already running (pid $(cat "$RUN/postgres.pid")) at 127.0.0.1:$PG_PORT"
  else
    if ! is_running postgres && port_open "$PG_PORT"; then
      die "port $PG_PORT is taken by another process (not this checkout's PostgreSQL): free it or set PG_PORT"
    fi
    init_cluster
    step "Starting PostgreSQL 15 at 127.0.0.1:$PG_PORT (data ${PG_DATA#"$ROOT"/})"
    if is_root; then
      start_daemon postgres setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- \
        "$PG_BIN/postgres" -D "$PG_DATA" -c port="$PG_PORT" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories="$PG_SOCKET_DIR" 3>&- 8>&-
    else
      start_daemon postgres "$PG_BIN/postgres" -D "$PG_DATA" -c port="$PG_PORT" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PG_SOCKET_DIR" 3>&- 8>&-
    fi
    wait_for "PostgreSQL at 127.0.0.1:$PG_PORT" "${PG_START_TIMEOUT:-60}" postgres_ready
  fi
  # Idempotent: the role's password and the database.
  psql_admin -d postgres -c "ALTER ROLE $PG_USER WITH SUPERUSER LOGIN PASSWORD '$PG_PASSWORD'"
  if [[ "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
    psql_admin -d postgres -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
  fi
  echo "DATABASE_URL=$DATABASE_URL"
}

cmd_down() {
  is_running postgres || { rm -f "$RUN/postgres.pid"; return 0; }
  step "Stopping PostgreSQL"
  # SIGINT is PostgreSQL's fast shutdown (SIGTERM, what stop_daemon sends, waits for clients).
  local pid; pid="$(cat "$RUN/postgres.pid")"
  kill -INT "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  stop_daemon postgres 10
}

# Same one-line format as kube.sh status; always exits 0 (make status runs every part).
cmd_status() {
  local addr="127.0.0.1:$PG_PORT"
  if ! is_running postgres; then printf '%-24s stopped  %-12s %s\n' postgres "" "$addr"
  elif pg_ready; then printf '%-24s running  pid %-8s %s\n' postgres "$(cat "$RUN/postgres.pid")" "$addr"
  else printf '%-24s starting pid %-8s %s (not accepting connections yet)\n' postgres "$(cat "$RUN/postgres.pid")" "$addr"; fi
}

cmd_reset() {
  cmd_down
  step "Wiping the PostgreSQL cluster"
  # Both possible homes (see the header).
  rm -rf "$LOCAL/postgres" "$FALLBACK_HOME"
}

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    up) lock; cmd_up ;;
    down) lock; cmd_down ;;
    status) cmd_status ;;
    reset) lock; cmd_reset ;;
    env) echo "DATABASE_URL=$DATABASE_URL" ;;
    psql) exec "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" "$@" ;;
    *) usage ;;
  esac
}

main "$@"
