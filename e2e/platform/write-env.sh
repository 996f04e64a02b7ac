#!/usr/bin/env bash
# Writes .local/env: the addresses and credentials of the running local platform, as
# KEY=value lines that `set -a; source .local/env` and tests read.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

{
  echo "# written by make up; the local platform's addresses"
  echo "KUBECONFIG=$LOCAL/kubeconfig"
  echo "KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
  echo "DATABASE_URL=postgres://millrace:millrace@127.0.0.1:$PG_PORT/millrace"
  echo "MILLRACE_PODS_DIR=$LOCAL/pods"
  echo "MILLRACE_BIN_DIR=$CARGO_TARGET_DIR/debug"
  echo "PATH=$BIN:\$PATH"
  # The S3-compatible endpoint (moto) for checkpoint storage tests.
  bash "$ROOT/e2e/platform/s3.sh" env
  # MILLRACE_API_URL and MILLRACE_ADMIN_TOKEN, once e2e/platform/millrace.sh up has run.
  if [[ -f "$LOCAL/api.env" ]]; then cat "$LOCAL/api.env"; fi
} >"$LOCAL/env.tmp"
mv "$LOCAL/env.tmp" "$LOCAL/env"
